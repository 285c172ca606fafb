"""Checkpoints of the whole training state with orbax, and resuming from them.

Each checkpoint carries a list of its files' sizes and digests (``FILES``), checked before
orbax reads it: a damaged checkpoint is refused without an orbax read, whose failure would
leave orbax's own threads failing after it. A save first checks that the disk and the
process's file-size limit leave room for the state. What a checkpoint holds, atomic saves
and retention: docs/design_notes.md."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import resource
import shutil
import time
import types
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

from si_jax.engine import distributed

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
FILES = "si_jax_files.json"  # {path in the checkpoint: [bytes, blake2b digest]}
OCDBT_FILE_BYTES = 2**31  # tensorstore's OCDBT splits a checkpoint's data into files of this


class CheckpointError(RuntimeError):
  """A checkpoint could not be written or read; the message says what to do."""


def state_shapes(state) -> dict[str, list[int]]:
  """{tree path: shape} of a TrainState as saved (a checkpoint records it)."""
  leaves = jax.tree_util.tree_leaves_with_path(_to_saveable(state))
  return {jax.tree_util.keystr(p): list(x.shape) for p, x in leaves}


def _to_saveable(state) -> dict[str, Any]:
  return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats,
          "opt_state": state.opt_state, "rng": jax.random.key_data(state.rng)}


def _committed_as(template, tree):
  """``tree``'s arrays, uncommitted where ``template``'s are (a fresh state's are).

  orbax restores committed arrays; jit keys its programs on that, so a resumed run would
  compile its step again after the first one and miss every persistent-cache entry of a
  fresh run. The values are the same either way."""
  return jax.tree.map(
      lambda t, x: x if getattr(t, "committed", True) else jax.device_put(np.asarray(x)),
      template, tree)


def _from_saveable(template, tree):
  return template.replace(step=tree["step"], params=tree["params"],
                          batch_stats=tree["batch_stats"], opt_state=tree["opt_state"],
                          rng=jax.random.wrap_key_data(tree["rng"]))


class Checkpointer:
  """Saves and restores a run's TrainState plus host-side metadata.

  Args:
    workdir: the run's directory (checkpoints go to WORKDIR/checkpoints).
    keep: how many of the latest checkpoints are kept.
    snapshot_epochs: epochs whose checkpoints are kept forever.
    every_epochs, final_epoch: with ``snapshot_epochs``, the epochs ``due`` names.
  """

  def __init__(self, workdir: str, keep: int = 2, snapshot_epochs=(), every_epochs: int = 0,
               final_epoch: int | None = None):
    if not isinstance(keep, int) or keep < 1:
      raise ValueError(f"checkpoint.keep must be a positive integer, got {keep!r}")
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    snapshots = tuple(int(e) for e in snapshot_epochs)
    self._save_policy = cm.AnySavePolicy(
        ([cm.FixedIntervalPolicy(every_epochs)] if every_epochs else [])
        + [cm.SpecificStepsPolicy(snapshots + (() if final_epoch is None else (final_epoch,)))])
    policy = cm.AnyPreservationPolicy([cm.LatestN(keep), cm.CustomSteps(snapshots)])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=False,
        cleanup_tmp_directories=True, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

  def due(self, epoch: int) -> bool:
    """Whether orbax's save-decision policy (interval, snapshots, last epoch) saves ``epoch``."""
    info = types.SimpleNamespace(step=epoch, time=None, metrics=None)
    return self._save_policy.should_save(info, (), context=None)  # these ignore context

  def epochs(self) -> list[int]:
    """The epochs of the checkpoints, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, epoch: int, state, meta: dict[str, Any]) -> str:
    """Saves ``state`` and ``meta`` as epoch ``epoch``; its path. CheckpointError if it fails."""
    previous = self.epochs()
    path = os.path.join(self.directory, str(epoch))
    try:
      _on_process_0(_check_room, self.directory, _to_saveable(state))
      self._manager.save(epoch, args=ocp.args.Composite(
          state=ocp.args.StandardSave(_to_saveable(state)),
          meta=ocp.args.JsonSave(dict(meta, epoch=epoch, shapes=state_shapes(state)))),
          force=True)
      self._manager.wait_until_finished()
    except Exception as e:  # disk full, permissions, ...
      kept = (f"the checkpoint of epoch {previous[-1]} is intact" if previous
              else "no earlier checkpoint exists")
      raise CheckpointError(
          f"saving the checkpoint of epoch {epoch} to {self.directory} failed "
          f"({_first_line(e)}); {kept}. Free space (or fix the directory) and "
          "rerun the same command: it resumes from the last good checkpoint.") from e
    try:
      _on_process_0(_write_files_list, path)
    except OSError as e:  # the checkpoint is good: only its check before a read is lost
      log.warning("checkpoint %s is saved without its list of files (%s): a damage to it "
                  "will be found by orbax's read", path, _first_line(e))
    return path

  def read_meta(self, epoch: int) -> dict[str, Any]:
    """The JSON metadata of one checkpoint (epoch, log lengths, config, shapes)."""
    restored = self._manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def restore_latest(self, template_state, max_epoch: int | None = None,
                     check_meta=None) -> tuple[Any, dict[str, Any]] | None:
    """The newest readable checkpoint of at most ``max_epoch`` epochs, (state, meta), or None.

    ``check_meta(meta)`` may refuse one by raising; an unreadable one is moved aside (a warning).

    Raises:
      CheckpointError: other shapes than ``template_state``'s, or none readable."""
    epochs = [e for e in self.epochs() if max_epoch is None or e <= max_epoch]
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_saveable(template_state))
    errors = []
    for epoch in reversed(epochs):
      path = os.path.join(self.directory, str(epoch))
      try:
        _on_process_0(_check_files, path)
        meta = self.read_meta(epoch)
      except Exception as e:
        errors.append(f"checkpoint {path} is unreadable ({_first_line(e)})")
        log.warning("%s; trying an older one", errors[-1])
        continue
      if check_meta:
        check_meta(meta)
      _check_shapes(meta, template_state, path)
      try:
        restored = self._manager.restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
        state = _from_saveable(template_state, restored["state"])
      except Exception as e:
        errors.append(f"checkpoint {path} is unreadable ({_first_line(e)})")
        log.warning("%s; trying an older one", errors[-1])
        state = None
      if state is None:
        continue
      if errors:
        self._set_aside(epochs, epoch)
      state = _from_saveable(template_state, _committed_as(_to_saveable(template_state),
                                                           _to_saveable(state)))
      return state, meta
    if epochs:
      raise CheckpointError(
          f"no readable checkpoint in {self.directory}: epochs {sorted(epochs)} are unreadable "
          f"(newest: {errors[0].split(' is unreadable ')[-1]}). Delete that directory to "
          "restart the run from scratch, or use another --workdir.")
    return None

  def _set_aside(self, epochs: list[int], good: int) -> None:
    log.warning("resuming from the checkpoint of epoch %d instead", good)
    for bad in (e for e in epochs if e > good):
      path = os.path.join(self.directory, str(bad))
      os.replace(path, f"{path}.unreadable-{int(time.time())}")
    self._manager.reload()

  def discard_after(self, epoch: int) -> None:
    """Deletes the checkpoints of more than ``epoch`` epochs (a resume redoes them)."""
    for later in (e for e in self.epochs() if e > epoch):
      self._manager.delete(later)

  def close(self) -> None:
    """Closes the checkpoint manager."""
    self._manager.close()


def _first_line(e: Exception) -> str:
  """An exception in one line: orbax's can quote a whole TensorStore spec."""
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:120] if text else ''}"


def _check_shapes(meta: dict[str, Any], template_state, path: str) -> None:
  """CheckpointError naming the first tensor whose shape differs from the template's."""
  saved = meta.get("shapes")
  if saved is None:  # written before checkpoints recorded their shapes
    return
  want = state_shapes(template_state)
  for key in sorted(set(saved) | set(want)):
    if saved.get(key) != want.get(key):
      raise CheckpointError(
          f"checkpoint {path} holds a state of other shapes than this config's model "
          f"({key}: {saved.get(key, 'absent')} in the checkpoint, {want.get(key, 'absent')} "
          "now): the config change does not fit this run. The checkpoint is intact; use "
          "another --workdir for the new config.")


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
  """(params, batch_stats, epoch) of a run's checkpoint (None: the newest) as numpy trees.

  For warm starts and appendix H's minima; CheckpointError when there is no such checkpoint."""
  with _existing_manager(workdir) as manager:
    directory = manager.directory
    epochs = sorted(manager.all_steps())
    if not epochs:
      raise CheckpointError(f"no checkpoint in {directory}")
    epoch = epochs[-1] if epoch is None else int(epoch)
    if epoch not in epochs:
      raise CheckpointError(f"no checkpoint of epoch {epoch} in {directory}; it has {epochs}")
    path = os.path.join(directory, str(epoch))
    try:
      _check_files(path)
    except OSError as e:
      raise CheckpointError(f"checkpoint {path} is damaged ({e.strerror or e}); choose "
                            f"another of {epochs}") from None
    tree = manager.restore(epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  state = jax.device_get(tree["state"])
  return state["params"], state["batch_stats"], epoch


def _digests(step_dir: str) -> dict[str, list]:
  """{path relative to ``step_dir``: [bytes, blake2b hex digest]} of its files but FILES."""
  found = {}
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      relative = os.path.relpath(path, step_dir)
      if relative.startswith(FILES):  # the list and its temporary
        continue
      digest = hashlib.blake2b(digest_size=16)
      with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
          digest.update(chunk)
      found[relative] = [os.path.getsize(path), digest.hexdigest()]
  return found


def _write_files_list(step_dir: str) -> None:
  """Writes FILES into a finished checkpoint, atomically."""
  digests, temporary = _digests(step_dir), os.path.join(step_dir, FILES + ".tmp")
  with open(temporary, "w") as f:
    json.dump(digests, f, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temporary, os.path.join(step_dir, FILES))


def _check_files(step_dir: str) -> None:
  """OSError naming the first file of a checkpoint that differs from its FILES entry.

  A checkpoint without FILES (saved before it existed, or killed between orbax's commit
  and FILES) is left to orbax to read."""
  try:
    with open(os.path.join(step_dir, FILES)) as f:
      saved = json.load(f)
  except FileNotFoundError:
    return
  except (OSError, ValueError) as e:
    raise OSError(errno.EIO, f"its list of files is damaged ({type(e).__name__})") from None
  now = _digests(step_dir)
  for relative in sorted(saved):
    if relative not in now:
      raise OSError(errno.ENOENT, f"{relative} is missing")
    if now[relative] != saved[relative]:
      size = (f"{now[relative][0]} bytes, {saved[relative][0]} when saved"
              if now[relative][0] != saved[relative][0] else "other bytes than saved")
      raise OSError(errno.EIO, f"{relative} changed: {size}")


def _on_process_0(check, *args) -> None:
  """``check(*args)`` on process 0 only; every process raises OSError if it raised one.

  The processes of a run share its workdir, and all must take orbax's barriers together."""
  error = None
  if jax.process_index() == 0:
    try:
      check(*args)
    except OSError as e:
      error = e
  if distributed.agree(error is not None):
    raise error or OSError(errno.EIO, "process 0 refused it (its log says why)")


def _check_room(directory: str, tree) -> None:
  """OSError when the free disk or the process's file-size limit is below ``tree``'s bytes.

  Checked before orbax writes: a write that fails in orbax's own threads would leave them
  printing tracebacks after the error. The bytes are uncompressed (orbax's zstd shrinks
  trained float weights little), so the check errs towards refusing; a disk that fills
  during the save still fails it."""
  need = sum(int(np.size(x)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))
  limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
  if limit != resource.RLIM_INFINITY and limit < min(need, OCDBT_FILE_BYTES):
    raise OSError(errno.EFBIG, f"the state needs {need} bytes, over this process's "
                  f"file-size limit of {limit}")
  free = shutil.disk_usage(directory).free
  if free < need:
    raise OSError(errno.ENOSPC, f"the state needs {need} bytes, {free} are free")
