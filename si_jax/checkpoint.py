"""Checkpoints of the whole training state with orbax, and resuming from them.

A checkpoint is taken at the end of an epoch and labelled with the number of
completed epochs. It holds the train state (params, BN statistics, optimizer state
with its hyperparameters, step, RNG key) and, as JSON, what the host needs to continue
exactly: the epoch, the byte lengths of metrics.jsonl / steps.jsonl at that moment
(so records written after it are dropped on resume, never duplicated), and the wall
time so far. The data order is a function of (seed, epoch), so nothing else is needed.

Saves are synchronous and atomic (orbax writes a temporary directory and renames it),
so a kill during a save leaves the previous checkpoint loadable. Retention keeps the
``keep`` latest checkpoints plus every epoch listed in ``snapshot_epochs``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
  """A checkpoint could not be written or read; the message says what to do."""


def _to_saveable(state) -> dict[str, Any]:
  return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats,
          "opt_state": state.opt_state, "rng": jax.random.key_data(state.rng)}


def _from_saveable(template, tree):
  return template.replace(step=tree["step"], params=tree["params"],
                          batch_stats=tree["batch_stats"], opt_state=tree["opt_state"],
                          rng=jax.random.wrap_key_data(tree["rng"]))


class Checkpointer:
  """Saves and restores a run's TrainState plus host-side metadata."""

  def __init__(self, workdir: str, keep: int = 2, snapshot_epochs=()):
    if not isinstance(keep, int) or keep < 1:
      raise ValueError(f"checkpoint.keep must be a positive integer, got {keep!r}")
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    policy = cm.AnyPreservationPolicy(
        [cm.LatestN(keep), cm.CustomSteps(tuple(int(e) for e in snapshot_epochs))])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=False,
        cleanup_tmp_directories=True, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

  def epochs(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, epoch: int, state, meta: dict[str, Any]) -> str:
    previous = self.epochs()
    try:
      self._manager.save(epoch, args=ocp.args.Composite(
          state=ocp.args.StandardSave(_to_saveable(state)),
          meta=ocp.args.JsonSave(dict(meta, epoch=epoch))), force=True)
      self._manager.wait_until_finished()
    except Exception as e:  # disk full, permissions, ...
      kept = f"the checkpoint of epoch {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
      raise CheckpointError(
          f"saving the checkpoint of epoch {epoch} to {self.directory} failed "
          f"({type(e).__name__}: {e}); {kept}. Free space (or fix the directory) and "
          "rerun the same command: it resumes from the last good checkpoint.") from e
    return os.path.join(self.directory, str(epoch))

  def restore_latest(self, template_state, max_epoch: int | None = None
                     ) -> tuple[Any, dict[str, Any]] | None:
    """The newest readable checkpoint (of at most ``max_epoch`` epochs) as (state, meta);
    None if there is none.

    An unreadable (corrupted, truncated) checkpoint is skipped with a warning, moved
    aside to ``EPOCH.unreadable`` (kept for inspection) and the next older one is used;
    if none is readable, CheckpointError says what to do.
    """
    epochs = [e for e in self.epochs() if max_epoch is None or e <= max_epoch]
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_saveable(template_state))
    errors = []
    for epoch in reversed(epochs):
      try:
        restored = self._manager.restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        state = _from_saveable(template_state, restored["state"])
        meta = dict(restored["meta"])
      except Exception as e:
        msg = f"checkpoint {os.path.join(self.directory, str(epoch))} is unreadable ({type(e).__name__}: {e})"
        logging.warning("%s; trying an older one", msg)
        errors.append(msg)
        continue
      if errors:
        logging.warning("resuming from the checkpoint of epoch %d instead", epoch)
        for bad in (e for e in epochs if e > epoch):
          path = os.path.join(self.directory, str(bad))
          os.replace(path, f"{path}.unreadable-{int(time.time())}")
        self._manager.reload()
      return state, meta
    if epochs:
      raise CheckpointError(
          "no readable checkpoint in " + self.directory + ": " + "; ".join(errors) +
          ". Delete that directory to restart the run from scratch, or use another --workdir.")
    return None

  def discard_after(self, epoch: int) -> None:
    """Deletes the checkpoints of more than ``epoch`` epochs (a run resumed from an
    older one redoes those epochs)."""
    for later in (e for e in self.epochs() if e > epoch):
      self._manager.delete(later)

  def close(self) -> None:
    self._manager.close()


def _existing_manager(workdir: str) -> ocp.CheckpointManager:
  """A read-only view of a run's checkpoints (never creates the directory)."""
  directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
  if not os.path.isdir(directory):
    raise CheckpointError(f"{directory} does not exist: is {workdir!r} a run with checkpoints?")
  return ocp.CheckpointManager(directory, item_names=("state", "meta"))


def saved_epochs(workdir: str) -> list[int]:
  """The epochs of a run's checkpoints, oldest first."""
  with _existing_manager(workdir) as manager:
    return sorted(manager.all_steps())


def load_weights(workdir: str, epoch: int | None = None) -> tuple[dict, dict, int]:
  """(params, batch_stats, epoch) of a run's checkpoint (``None``: the newest), as numpy
  trees, whatever its optimizer; for warm starts (``model.init_checkpoint``) and for
  comparing the minima of different periods (appendix H)."""
  with _existing_manager(workdir) as manager:
    directory = manager.directory
    epochs = sorted(manager.all_steps())
    if not epochs:
      raise CheckpointError(f"no checkpoint in {directory}")
    epoch = epochs[-1] if epoch is None else int(epoch)
    if epoch not in epochs:
      raise CheckpointError(f"no checkpoint of epoch {epoch} in {directory}; it has {epochs}")
    tree = manager.restore(epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  state = jax.device_get(tree["state"])
  return state["params"], state["batch_stats"], epoch
