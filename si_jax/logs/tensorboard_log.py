"""TensorBoard event files next to a run's metrics.jsonl, written with tensorboardX.

``logs.MetricWriter`` drives them: each epoch record is one event tagged
``epoch/<field>``, each step record (with ``train.tensorboard='step'``) one tagged
``step/<field>``, both at the record's optimizer step; the flattened config goes to the
HParams plugin. A resumed session starts with a SessionLog START at the checkpoint's
step, so TensorBoard drops the points the resume rewrites. Details (the step axis,
resume, sizes): docs/design_notes.md.
"""

from __future__ import annotations

import json
import os
import sys
import time

try:
  from tensorboardX.event_file_writer import EventsWriter
  from tensorboardX.proto import api_pb2, plugin_hparams_pb2, types_pb2
  from tensorboardX.proto.event_pb2 import Event, SessionLog
  from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
  from tensorboardX.proto.tensor_pb2 import TensorProto
  from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto
except ImportError:  # an optional dependency: the logs are complete without it
  EventsWriter = None

EVENT_FILE_PREFIX = "events.out.tfevents."
EPOCH_PREFIX, STEP_PREFIX = "epoch/", "step/"
# The metrics the HParams plugin's table shows next to the hyperparameters.
HPARAMS_METRICS = ("test_error", "test_loss", "train_loss", "train_accuracy", "loss",
                   "weight_norm", "effective_lr")
_warned = False


def scalars(prefix: str, record: dict):
  """A record's numeric fields (``step`` aside: it is the event's step) as a Summary."""
  return Summary(value=[Summary.Value(tag=prefix + k, simple_value=float(v))
                        for k, v in record.items()
                        if k != "step" and isinstance(v, (int, float))])


def _plugin_value(tag: str, data):
  """One HParams plugin value, with the empty tensor TensorBoard's own writer adds."""
  empty = TensorProto(dtype=types_pb2.DT_FLOAT,
                      tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=0)]))
  plugin = SummaryMetadata.PluginData(plugin_name="hparams", content=data.SerializeToString())
  return Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin), tensor=empty)


def hparams_summary(hparams: dict):
  """The HParams plugin's experiment (the names) and session start info (the values)."""
  start = plugin_hparams_pb2.SessionStartInfo(start_time_secs=time.time())
  infos = []
  for name, value in hparams.items():
    if isinstance(value, bool):
      start.hparams[name].bool_value, kind = value, "DATA_TYPE_BOOL"
    elif isinstance(value, (int, float)):
      start.hparams[name].number_value, kind = value, "DATA_TYPE_FLOAT64"
    else:
      text = value if isinstance(value, str) else json.dumps(value)
      start.hparams[name].string_value, kind = text, "DATA_TYPE_STRING"
    infos.append(api_pb2.HParamInfo(name=name, type=api_pb2.DataType.Value(kind)))
  metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=EPOCH_PREFIX + m))
             for m in HPARAMS_METRICS]
  experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)
  data = plugin_hparams_pb2.HParamsPluginData
  return Summary(value=[
      _plugin_value("_hparams_/experiment", data(experiment=experiment, version=0)),
      _plugin_value("_hparams_/session_start_info", data(session_start_info=start, version=0))])


class EventLog:
  """One session's event file in ``log_dir``.

  Args:
    log_dir: the run's directory (created if missing).
    hparams: the flattened config, for the HParams plugin.
    resumed_record: the last epoch record a resume kept (written again), or None.
  """

  def __init__(self, log_dir: str, hparams: dict, resumed_record: dict | None):
    os.makedirs(log_dir, exist_ok=True)
    session = sum(name.startswith(EVENT_FILE_PREFIX) for name in os.listdir(log_dir))
    # the names hold the time in seconds: two sessions in one second sort by this suffix
    self._writer = EventsWriter(os.path.join(log_dir, "events"), f".{session:06d}")
    resume_step = resumed_record["step"] if resumed_record else 0
    self._write(Event(step=resume_step, session_log=SessionLog(status=SessionLog.START)))
    self._write(Event(step=0, summary=hparams_summary(hparams)))
    if resumed_record:
      self.write_epoch(resumed_record)
    self._writer.flush()

  def _write(self, event) -> None:
    event.wall_time = time.time()
    self._writer.write_event(event)

  def write_epoch(self, record: dict) -> None:
    """Writes one epoch record as an event at its step, and flushes the file (fsync)."""
    self._write(Event(step=record["step"], summary=scalars(EPOCH_PREFIX, record)))
    self._writer.flush()

  def write_steps(self, records: list[dict]) -> None:
    """The epoch's steps (on disk with its epoch record: a flush fsyncs)."""
    for r in records:
      self._write(Event(step=r["step"], summary=scalars(STEP_PREFIX, r)))

  def close(self) -> None:
    """Closes the file (idempotent)."""
    if self._writer is not None:  # a run may be closed twice (a family's runs are)
      self._writer.close()
      self._writer = None


def open_event_log(log_dir: str, hparams: dict, resumed_record: dict | None) -> EventLog | None:
  """An ``EventLog``, or None (with a warning once) where tensorboardX is not installed."""
  global _warned
  if EventsWriter is None:
    if not _warned:
      print("warning: tensorboardX is not installed: no TensorBoard event files (the logs "
            "are complete without them; pip install tensorboardX)", file=sys.stderr)
      _warned = True
    return None
  return EventLog(log_dir, hparams, resumed_record)
