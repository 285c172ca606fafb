"""TensorBoard event files next to a run's metrics.jsonl, written with tensorboardX (no
TensorFlow); ``logs.MetricWriter`` drives them.

What they hold:
* every epoch record of metrics.jsonl as one event whose scalars are its fields, tagged
  ``epoch/<field>``; with per-step logs every step record (as ``logs.read_run(...,
  steps=True)`` returns it) as one event tagged ``step/<field>``;
* the resolved config's flattened fields as the HParams plugin's session start info, with
  an experiment that names them and the epoch metrics of appendix B (a value that is not
  a bool, number or string as JSON text, e.g. ``checkpoint.snapshot_epochs``). Every
  session writes them, but TensorBoard keeps a tag's first metadata: a resume that
  raised ``train.epochs`` still shows the first session's value there.

The step axis: a record's ``step`` is its event's step, so TensorBoard counts optimizer
steps for both kinds: an epoch record sits at the steps done when the epoch ended (the
weights its evaluation saw), a step record at its index t (the metrics of the weights w_t
on step t's batch). ``epoch/epoch`` gives the epoch of each epoch record's step.

Resume: a run resumed from a checkpoint taken after S steps opens a new event file that
begins with a SessionLog START at step S (what tensorboardX's ``purge_step`` writes) and
then writes again the last record of metrics.jsonl that the checkpoint kept (that epoch's
record sat at step S). TensorBoard then shows every epoch and step once: its Python
reader (EventAccumulator, "purge orphaned data") drops every point at a step >= S read
before the START; its Rust data server ignores the START but drops, tag by tag, the points
at steps >= the step of a new point (the rewritten epoch record for the epoch tags, the
resumed run's first step record, at S, for the step tags); both checked with
TensorBoard 2.21's server.
Chosen over rebuilding the event files from the logs at each resume, which costs the
whole run's records (10^5 steps for a per-step ResNet-18 run). Events are written
synchronously (tensorboardX's ``EventsWriter``, without the queue and thread of its
``FileWriter``) and flushed (fsync) with each epoch record, so what a checkpoint covers
is on disk when the checkpoint is taken.

Size: each scalar carries its tag, so a step event is ~1.1 kB for the quickstart
ConvNet's 34 fields (steps.bin: 154 bytes). tensorboardX computes the records' CRC32C in
Python (~0.7 ms a step event) unless the ``crc32c`` package is installed.
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
  """One HParams plugin value; the empty tensor (as TensorBoard's own writer adds) keeps
  readers that store only values with data from dropping it."""
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
  """One session's event file in ``log_dir`` (what it holds: the module docstring)."""

  def __init__(self, log_dir: str, hparams: dict, resumed_record: dict | None):
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
    self._write(Event(step=record["step"], summary=scalars(EPOCH_PREFIX, record)))
    self._writer.flush()

  def write_steps(self, records: list[dict]) -> None:
    """The epoch's steps (on disk with its epoch record: a flush fsyncs)."""
    for r in records:
      self._write(Event(step=r["step"], summary=scalars(STEP_PREFIX, r)))

  def close(self) -> None:
    if self._writer is not None:  # a run may be closed twice (a family's runs are)
      self._writer.close()
      self._writer = None


def open_event_log(log_dir: str, hparams: dict, resumed_record: dict | None) -> EventLog | None:
  """The event file of a run's session in ``log_dir`` (``resumed_record``: the last epoch
  record a resume kept), or None, with a warning, where tensorboardX is not installed."""
  global _warned
  if EventsWriter is None:
    if not _warned:
      print("warning: tensorboardX is not installed: no TensorBoard event files (the logs "
            "are complete without them; pip install tensorboardX)", file=sys.stderr)
      _warned = True
    return None
  return EventLog(log_dir, hparams, resumed_record)
