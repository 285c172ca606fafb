"""A run's life outside the step: workdir guard, lock, resume, checkpoint policy, preemption.

A ``Run`` is one workdir (docs/design_notes.md); ``si_jax.engine.loop`` drives R >= 1 of them."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import jax
import ml_collections

from si_jax import config as config_lib
from si_jax import logs, optim
from si_jax.analysis import forecast, phases
from si_jax.engine import distributed
from si_jax.engine.checkpoint import CHECKPOINT_DIR, Checkpointer
from si_jax.engine.workdir_lock import WorkdirLock

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"


class ConfigMismatch(ValueError):
  """The workdir holds a run with another config."""


# Fields that may change when a run is resumed: extend it, change its checkpointing.
RESUMABLE_CHANGES = ("train.epochs", "checkpoint.")


def config_differences(saved: dict, current: dict) -> list[str]:
  """'field: saved -> current' per differing field (resumable ones excepted; absent = default)."""
  defaults = config_lib.flatten(json.loads(config_lib.base_config().to_json_best_effort()))
  a, b = {**defaults, **config_lib.flatten(saved)}, config_lib.flatten(current)
  unset = [flat.get("data.order_seed") is None for flat in (a, b)]
  if unset[0] != unset[1]:  # the data order's seed unset on one side: it is the run's seed
    flat = a if unset[0] else b
    flat["data.order_seed"] = flat.get("seed")
  diffs = []
  for key in sorted(set(a) | set(b)):
    if key.startswith(RESUMABLE_CHANGES) or key in RESUMABLE_CHANGES:
      continue
    if a.get(key, "<absent>") != b.get(key, "<absent>"):
      diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
  return diffs


def check_workdir_config(config, workdir: str, allow_config_change: bool) -> None:
  """Raises ConfigMismatch if ``workdir`` holds a run of another config."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return
  try:
    with open(path) as f:
      saved = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}): restore it, or delete it (the "
                     "checkpoints hold the run's config)") from None
  diffs = config_differences(saved, json.loads(config.to_json_best_effort()))
  if diffs and not allow_config_change:
    raise ConfigMismatch(
        f"{workdir} holds a run with a different config ({'; '.join(diffs)}). Use another "
        "--workdir, or pass --allow_config_change to resume it with the new values.")


def diverged_message(workdir: str) -> str | None:
  """Why an earlier attempt marked ``workdir`` diverged (its ``diverged.json``), or None."""
  path = os.path.join(workdir, logs.DIVERGED_FILE)
  try:
    with open(path) as f:
      message = json.load(f)["message"]
  except FileNotFoundError:
    return None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path} is not the record this program writes ({type(e).__name__}: "
                     f"{e}): restore or delete it") from None
  return str(message)


@dataclasses.dataclass
class Run:
  """One run's files and where it stands: the loop's unit of logging and checkpointing."""

  config: ml_collections.ConfigDict
  workdir: str
  ckpt: Checkpointer | None = None
  allow_config_change: bool = False
  writer: logs.MetricWriter | None = None
  start_epoch: int = 0
  offsets: tuple[int, int] = (0, 0)
  wall_before: float = 0.0
  started: float = 0.0
  complete: bool = False
  diverged: str | None = None
  record: dict[str, Any] = dataclasses.field(default_factory=dict)
  lock: WorkdirLock | None = None
  discard_after: int | None = None  # checkpoints newer than this go once the logs open
  live: forecast.Live | None = None  # the live detector and forecast (train.live_phases)
  broken_groups: set[str] = dataclasses.field(default_factory=set)  # warned of (check_groups)

  @property
  def active(self) -> bool:
    """Whether the run still trains (it has not diverged)."""
    return self.diverged is None

  @property
  def log_dir(self) -> str:
    """The folder this host writes its logs to: the workdir (host 0), else ``process_N/``."""
    if jax.process_index() == 0:
      return self.workdir
    return os.path.join(self.workdir, f"process_{jax.process_index()}")

  def open_logs(self) -> None:
    """Writes config.json (atomically), opens the logs cut to the checkpoint, starts the clock."""
    log_dir = self.log_dir
    os.makedirs(log_dir, exist_ok=True)
    hparams = config_lib.flatten(json.loads(self.config.to_json_best_effort()))
    board = self.config.train.get("tensorboard", "epoch")
    self.writer = logs.MetricWriter(
        log_dir, per_step=(self.config.train.log_every == "step"), offsets=self.offsets,
        tensorboard=hparams if jax.process_index() == 0 and board != "off" else None,
        tensorboard_steps=board == "step")
    if jax.process_index() == 0:
      write_atomically(os.path.join(self.workdir, CONFIG_FILE),
                       self.config.to_json_best_effort(indent=2))
    if self.ckpt and self.discard_after is not None:  # their epochs are redone
      self.ckpt.discard_after(self.discard_after)
      self.discard_after = None
    self.started = time.time() - self.wall_before
    self.live = self._live_analysis()

  def _live_analysis(self) -> forecast.Live | None:
    """The live detector and forecast, fed the epochs already logged, or None."""
    if not self.config.train.get("live_phases", False):
      return None
    options = dict(phases.detector_options(self.config), x_key="epoch")
    live = forecast.live_for_config(self.config, options)
    if self.start_epoch and os.path.exists(os.path.join(self.log_dir, logs.METRICS_FILE)):
      for record in logs.read_run(self.log_dir):
        if record.get("epoch", 0) <= self.start_epoch:
          live.update(record)
    return live

  def save(self, epoch: int, state) -> str:
    """Checkpoints ``state`` after ``epoch`` epochs with the logs' lengths; its path."""
    metrics_bytes, steps_bytes = self.writer.offsets()
    return self.ckpt.save(epoch, state, {
        "metrics_bytes": metrics_bytes, "steps_bytes": steps_bytes,
        "wall_time": time.time() - self.started, "step": int(state.step),
        "config": json.loads(self.config.to_json_best_effort())})

  def checkpoint_due(self, done: int, preempted: bool) -> bool:
    """Whether a checkpoint is due after ``done`` epochs (or a stop)."""
    return bool(self.ckpt) and self.active and (preempted or self.ckpt.due(done))

  def mark_diverged(self, message: str) -> None:
    """Freezes a family member whose loss or weights became non-finite (why: ``diverged.json``)."""
    self.diverged = message
    with open(os.path.join(self.workdir, logs.DIVERGED_FILE), "w") as f:
      json.dump({"message": message}, f)
    log.warning("%s: diverged, frozen (%s)", self.workdir, message)

  def previously_diverged(self) -> bool:
    """Whether an earlier attempt marked this run diverged (a family skips it)."""
    return os.path.exists(os.path.join(self.workdir, logs.DIVERGED_FILE))

  def final_record(self) -> dict[str, Any]:
    """The last epoch record ({'diverged': message} for a diverged run)."""
    if self.diverged is None:
      self.diverged = diverged_message(self.workdir)
    if self.diverged is not None:
      return {"diverged": self.diverged}
    if not self.record and os.path.exists(os.path.join(self.workdir, logs.METRICS_FILE)):
      self.record = logs.read_run(self.workdir)[-1]
    return self.record

  def close(self) -> None:
    """Closes the logs and checkpoints and releases the workdir (idempotent)."""
    writer, ckpt, lock = self.writer, self.ckpt, self.lock
    self.writer, self.ckpt, self.lock = None, None, None
    try:
      if writer:
        writer.close()
      if ckpt:
        ckpt.close()
    finally:
      if lock:
        lock.release()


def write_atomically(path: str, text: str) -> None:
  """Writes ``path`` through a temporary file and a rename (not at all if it holds ``text``)."""
  try:
    with open(path) as f:
      if f.read() == text:
        return
  except (OSError, UnicodeDecodeError):
    pass
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


FAMILY_FILE = logs.FAMILY_FILE


def _check_file(path: str, what: str) -> None:
  """ValueError unless ``path`` is absent or a writable regular file."""
  if not os.path.lexists(path):
    return
  if os.path.islink(path):  # writing through it would change another run's file
    raise ValueError(f"{path} is a symbolic link: the {what} must be a file of this run "
                     "(copy the run with its files, not links)")
  if not os.path.isfile(path):
    raise ValueError(f"{path} is not a file (the {what}): move it aside, or use another "
                     "--workdir")
  if not os.access(path, os.W_OK):
    raise ValueError(f"{path} is not writable (the {what})")


def _check_dir(path: str, what: str) -> None:
  """ValueError unless ``path`` is absent or a writable directory."""
  if not os.path.lexists(path):
    return
  try:
    os.stat(path)
  except OSError as e:  # a symbolic link loop, a dangling link
    raise ValueError(f"{path} cannot be used as the {what} ({e.strerror})") from None
  if not os.path.isdir(path):
    raise ValueError(f"{path} is not a directory (the {what}): move it aside, or use "
                     "another --workdir")
  if not os.access(path, os.W_OK | os.X_OK):
    raise ValueError(f"{path} is not writable (the {what})")


def check_run_paths(workdir: str, log_dir: str) -> None:
  """Checks that every file and folder a run writes is absent, or writable and of its kind.

  Raises:
    ValueError: naming the wrong path, or the family this folder holds."""
  for marker in (FAMILY_FILE, "summary.json"):
    if os.path.exists(os.path.join(workdir, marker)):
      raise ValueError(f"{workdir} holds a family ({marker}), not a run: train a single "
                       "run in another --workdir, or the family with its own program")
  _check_dir(os.path.join(workdir, CHECKPOINT_DIR), "checkpoint folder")
  _check_file(os.path.join(workdir, CONFIG_FILE), "run's config")
  _check_file(os.path.join(workdir, logs.DIVERGED_FILE), "divergence record")
  if log_dir != workdir:
    _check_dir(log_dir, "process's log folder")
  _check_file(os.path.join(log_dir, logs.METRICS_FILE), "per-epoch log")
  _check_file(os.path.join(log_dir, logs.STEPS_FILE), "per-step log")
  _check_file(os.path.join(log_dir, logs.STEPS_JSONL_FILE), "per-step log")


def make_workdir(workdir: str) -> None:
  """Creates ``workdir`` (and parents); ValueError if it cannot be a writable directory."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir} is a file, not a directory")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ValueError(f"cannot create --workdir={workdir}: {e.strerror}") from None
  if not os.access(workdir, os.W_OK):
    raise ValueError(f"--workdir={workdir} is not writable")


def open_run(config, workdir: str, allow_config_change: bool = False) -> Run:
  """Re-opens (or creates) ``workdir`` for ``config``: lock, path and config checks, no writes.

  The caller releases the lock with ``Run.close`` (also on failure).

  Raises:
    WorkdirBusy: another process writes to ``workdir``.
    ValueError: a wrong path, a family's folder, or another run's config."""
  cc = config.checkpoint
  lock, error = None, None
  try:  # each process checks its side; all of them then fail together, or go on
    make_workdir(workdir)
    lock = WorkdirLock(workdir, "run", jax.process_index()).acquire()
    run = Run(config, workdir, None, allow_config_change, lock=lock)
    check_run_paths(workdir, run.log_dir)
    check_workdir_config(config, workdir, allow_config_change)
  except ValueError as e:
    error = e
  if distributed.agree(error is not None):  # (no other process would reach its barriers)
    if lock:
      lock.release()
    raise error or ValueError(f"{workdir}: another process of this job could not start "
                              "the run (its own error line says why)")
  try:
    if cc.every_epochs:
      run.ckpt = Checkpointer(workdir, cc.keep, cc.snapshot_epochs, cc.every_epochs,
                              run.config.train.epochs)
  except BaseException:
    lock.release()
    raise
  return run


class LogMismatch(ValueError):
  """A log is shorter than the checkpoint says: it was cut after the checkpoint."""


def _log_sizes(run: Run) -> tuple[int, int]:
  paths = (os.path.join(run.log_dir, logs.METRICS_FILE), logs.steps_path(run.log_dir))
  return tuple(os.path.getsize(p) if os.path.exists(p) else 0 for p in paths)


def _check_meta(run: Run, meta: dict[str, Any]) -> None:
  """Refuses a checkpoint written by a run of another config (unless allowed)."""
  if "config" not in meta or run.allow_config_change:
    return
  diffs = config_differences(meta["config"], json.loads(run.config.to_json_best_effort()))
  if diffs:
    raise ConfigMismatch(
        f"{run.workdir} holds checkpoints of a run with a different config "
        f"({'; '.join(diffs)}). Use another --workdir, or pass --allow_config_change to "
        "resume it with the new values.")


def _restore_checked(run: Run, template, max_epoch: int | None):
  """The newest checkpoint whose log lengths the logs on disk still hold (later epochs redone)."""
  sizes, cut = _log_sizes(run), None
  while True:
    restored = run.ckpt.restore_latest(template, max_epoch, lambda m: _check_meta(run, m))
    if not restored:
      break
    meta = restored[1]
    if meta["metrics_bytes"] <= sizes[0] and meta["steps_bytes"] <= sizes[1]:
      break
    cut = cut or meta["epoch"]
    max_epoch = meta["epoch"] - 1
  if cut and restored:
    log.warning("%s's logs are shorter than its checkpoint of epoch %d recorded; resuming "
                "from the checkpoint of epoch %d, whose logs are intact", run.workdir, cut,
                restored[1]["epoch"])
  elif cut:
    raise LogMismatch(
        f"{_short_log(run, meta, sizes)} is shorter than every checkpoint of "
        f"{run.workdir} recorded (cut by a crash or a partial copy): restore the full logs, "
        "or use another --workdir")
  return restored


def _short_log(run: Run, meta: dict[str, Any], sizes: tuple[int, int]) -> str:
  """The log that is shorter than a checkpoint recorded (metrics.jsonl first)."""
  if meta["metrics_bytes"] > sizes[0]:
    return os.path.join(run.log_dir, logs.METRICS_FILE)
  return logs.steps_path(run.log_dir)


def _fresh_start(run: Run) -> None:
  """A run without a checkpoint: logs already there are never overwritten silently."""
  path = os.path.join(run.log_dir, logs.METRICS_FILE)
  if not os.path.exists(path) or not os.path.getsize(path):
    return
  if not os.path.exists(os.path.join(run.workdir, CONFIG_FILE)):
    raise ValueError(
        f"{run.workdir} holds logs but neither a checkpoint nor config.json (they may be "
        f"another run's): use another --workdir, or delete {path} to start over")
  records = logs.read_run(run.log_dir)
  if records and records[-1].get("epoch", 0) >= run.config.train.epochs:
    run.complete, run.start_epoch = True, records[-1]["epoch"]
    return
  log.warning("%s has no checkpoint to resume from (checkpoint.every_epochs=%s): restarting "
              "at epoch 0; the %d epochs logged are recomputed and rewritten", run.workdir,
              run.config.checkpoint.every_epochs, len(records))


def restore(run: Run, template, max_epoch: int | None = None):
  """The state to start ``run`` from: its newest checkpoint <= ``max_epoch``, or ``template``.

  Sets the run's start epoch, log offsets and wall time; the config's hyperparameters win."""
  restored = _restore_checked(run, template, max_epoch) if run.ckpt else None
  if run.ckpt:  # checkpoints past the one chosen are redone (their logs were cut): they
    # are discarded once the run's logs are open (``open_logs``), not before it can go on
    run.discard_after = restored[1]["epoch"] if restored else 0
  if not restored:
    run.start_epoch, run.offsets, run.wall_before = 0, (0, 0), 0.0
    _fresh_start(run)
    return template
  state, meta = restored
  oc = run.config.optim
  # the config's hyperparameters win (they differ only with allow_config_change)
  state = state.replace(opt_state=optim.with_hyperparams(
      state.opt_state, learning_rate=oc.lr, weight_decay=oc.wd, momentum=oc.momentum))
  run.start_epoch, run.wall_before = meta["epoch"], meta["wall_time"]
  run.offsets = (meta["metrics_bytes"], meta["steps_bytes"])
  run.complete = run.start_epoch >= run.config.train.epochs
  return state


def restore_together(runs: list[Run], templates: list, states: list) -> list:
  """Brings ``restore``d runs back to the newest epoch all of them checkpointed."""
  states = list(states)
  while len({r.start_epoch for r in runs}) > 1:
    target = min(r.start_epoch for r in runs)
    for i, r in enumerate(runs):
      if r.start_epoch > target:
        states[i] = restore(r, templates[i], max_epoch=target)
  return states


class Preemption:
  """SIGTERM/SIGINT: checkpoint and stop after this epoch; a second signal stops at once."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def _outer(self) -> "Preemption | None":
    """The Preemption this one is nested in (a family around its members' loops)."""
    owner = getattr(self._previous.get(signal.SIGTERM), "__self__", None)
    return owner if isinstance(owner, Preemption) else None

  def _handle(self, signum, frame):
    if self.requested:
      raise KeyboardInterrupt
    self.requested = True
    outer = self._outer()
    while outer is not None:  # the family stops too: no further member
      outer.requested, outer = True, outer._outer()
    # a print: it must end the progress line a terminal shows, from a signal handler
    print(f"\nsignal {signal.Signals(signum).name}: finishing this epoch, then saving a "
          "checkpoint (send it again to stop at once)", file=sys.stderr, flush=True)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
      outer = self._outer()
      self.requested = bool(outer and outer.requested)  # a signal before this loop began
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class Progress:
  """One line per epoch with loss and effective LR; rewritten in place on a terminal."""

  def __init__(self, total: int, stream=sys.stderr, enabled: bool = True, prefix: str = ""):
    self.total, self.stream, self.enabled, self.prefix = total, stream, enabled, prefix
    self.tty = hasattr(stream, "isatty") and stream.isatty()
    self.start = time.time()

  def update(self, epoch: int, record: dict) -> None:
    """Shows ``epoch``'s line (from its record)."""
    if not self.enabled:
      return
    elapsed = time.time() - self.start
    eta = elapsed / epoch * (self.total - epoch) if epoch else 0.0
    width = 20
    done = int(width * epoch / self.total)
    line = (f"{self.prefix}[{'#' * done}{'.' * (width - done)}] epoch {epoch}/{self.total} "
            f"loss {record.get('loss', float('nan')):.4g} "
            f"eff_lr {record.get('effective_lr', float('nan')):.3g} "
            f"rho {record.get('weight_norm', float('nan')):.3g} "
            f"{_phase_text(record)}{_forecast_text(record)}{elapsed:.0f}s<{eta:.0f}s")
    if "onset_confirmed" in record:  # an event: a line of its own, kept on a terminal too
      self.stream.write(f"{chr(13) if self.tty else ''}{self.prefix}destabilization "
                        f"{record['destabilizations']}: onset at epoch "
                        f"{record['onset_confirmed']:g} (confirmed at epoch {epoch})\n")
    if self.tty:
      self.stream.write("\r" + line + ("\n" if epoch == self.total else ""))
    elif epoch == self.total or epoch % max(1, self.total // 20) == 0 or epoch == 1:
      self.stream.write(line + "\n")
    self.stream.flush()


def _phase_text(record: dict) -> str:
  """'phase B, 3 destabilizations ' from the live detector's fields ('' without them)."""
  if "destabilizations" not in record:
    return ""
  return f"phase {record.get('phase') or '-'}, {record['destabilizations']} destabilizations "


def _forecast_text(record: dict) -> str:
  """'next destabilization ~ epoch N [a, b] ' from the forecast's fields ('' without them)."""
  if record.get("forecast_onset") is None:
    return ""
  high = record.get("forecast_high")
  return (f"next destabilization ~ epoch {record['forecast_onset']:.0f} "
          f"[{record['forecast_low']:.0f}, {'inf' if high is None else f'{high:.0f}'}] ")
