"""TensorBoard event files next to a run's metrics.jsonl, written with tensorboardX.

``logs.MetricWriter`` drives them: each field of an epoch record is a scalar tagged
``epoch/<field>``, each field of a step record (with ``train.tensorboard='step'``) one
tagged ``step/<field>``, both at the record's optimizer step; the flattened config goes to
the HParams plugin. A resumed session's file starts with tensorboardX's ``purge_step``
(a SessionLog START at the checkpoint's step), so TensorBoard drops the points the resume
rewrites. Details (the step axis, resume, sizes): docs/design_notes.md.
"""

from __future__ import annotations

import json
import os
import sys
import time

try:
  from tensorboardX import SummaryWriter
  from tensorboardX.summary import hparams as hparams_summaries
  from tensorboardX.summary import scalar
except ImportError:  # an optional dependency: the logs are complete without it
  SummaryWriter = None

EVENT_FILE_PREFIX = "events.out.tfevents."
EPOCH_PREFIX, STEP_PREFIX = "epoch/", "step/"
# The metrics the HParams plugin's table shows next to the hyperparameters.
HPARAMS_METRICS = ("test_error", "test_loss", "train_loss", "train_accuracy", "loss",
                   "weight_norm", "effective_lr")
# tensorboardX's writer thread fsyncs what it has written at most this often.
FLUSH_SECS = 5
_warned = False


def hparam_values(config: dict) -> dict:
  """The flattened config as HParams values: bool, number or string (others as JSON text).

  tensorboardX's ``hparams`` drops None and gives a list no value; as JSON text both keep
  their field (``checkpoint.snapshot_epochs`` is a list).
  """
  return {name: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
          for name, value in config.items()}


class EventLog:
  """One session's event file in ``log_dir`` (the run's own directory, not a sub-run).

  Args:
    log_dir: the run's directory (created if missing).
    hparams: the flattened config, for the HParams plugin.
    resumed_record: the last epoch record a resume kept (written again), or None.
  """

  def __init__(self, log_dir: str, hparams: dict, resumed_record: dict | None):
    os.makedirs(log_dir, exist_ok=True)
    session = sum(name.startswith(EVENT_FILE_PREFIX) for name in os.listdir(log_dir))
    # purge_step: TensorBoard drops the earlier files' points at steps >= the resume's.
    # The names hold the time in seconds: two sessions in one second sort by the suffix.
    self._writer = SummaryWriter(
        log_dir, purge_step=resumed_record["step"] if resumed_record else 0,
        flush_secs=FLUSH_SECS, filename_suffix=f".{session:06d}")
    # add_hparams would write them to a new sub-run (log_dir/<time>) whose table shows
    # only its own metric values; here they go into this run's file, next to its scalars.
    experiment, start, _ = hparams_summaries(
        hparam_values(hparams), dict.fromkeys(EPOCH_PREFIX + m for m in HPARAMS_METRICS))
    self._writer.file_writer.add_summary(experiment, global_step=0)
    self._writer.file_writer.add_summary(start, global_step=0)
    if resumed_record:
      self.write_epoch(resumed_record)
    self._writer.flush()

  def _add_scalars(self, prefix: str, record: dict) -> None:
    """A record's numeric fields (``step`` aside: it is their step) at its step.

    What ``add_scalar`` writes for each field, merged into one event per record (for a
    34-field step record: half the bytes and a quarter of the CPU of an event per field).
    """
    summaries = [scalar(prefix + k, v) for k, v in record.items()
                 if k != "step" and isinstance(v, (int, float))]
    for other in summaries[1:]:
      summaries[0].MergeFrom(other)  # appends its value
    if summaries:
      self._writer.file_writer.add_summary(summaries[0], record["step"], time.time())

  def write_epoch(self, record: dict) -> None:
    """Writes one epoch record's fields at its step, and flushes the file.

    tensorboardX's writer thread writes the events; its flush fsyncs what that thread has
    written, and the thread itself fsyncs within ``FLUSH_SECS`` (``close`` writes all).
    """
    self._add_scalars(EPOCH_PREFIX, record)
    self._writer.flush()

  def write_steps(self, records: list[dict]) -> None:
    """The epoch's steps (flushed with its epoch record)."""
    for r in records:
      self._add_scalars(STEP_PREFIX, r)

  def close(self) -> None:
    """Writes what is queued and closes the file (idempotent: a family's runs close twice)."""
    self._writer.close()


def open_event_log(log_dir: str, hparams: dict, resumed_record: dict | None) -> EventLog | None:
  """An ``EventLog``, or None (with a warning once) where tensorboardX is not installed."""
  global _warned
  if SummaryWriter is None:
    if not _warned:
      print("warning: tensorboardX is not installed: no TensorBoard event files (the logs "
            "are complete without them; pip install tensorboardX)", file=sys.stderr)
      _warned = True
    return None
  return EventLog(log_dir, hparams, resumed_record)
