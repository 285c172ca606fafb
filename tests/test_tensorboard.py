"""TensorBoard event files read back with TensorBoard's own reader (EventAccumulator)
equal the run's logs: every scalar of every epoch record of metrics.jsonl (read here as
plain JSON) and of every step record, once each, also after resumes; the config as the
HParams plugin's hyperparameters, in the run's own directory; no files without
tensorboardX."""

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
event_file_loader = pytest.importorskip("tensorboard.backend.event_processing.event_file_loader")
plugin_data_pb2 = pytest.importorskip("tensorboard.plugins.hparams.plugin_data_pb2")

from si_jax import config as config_lib  # noqa: E402
from si_jax import logs  # noqa: E402
from si_jax.engine import train  # noqa: E402
from si_jax.logs import tensorboard_log  # noqa: E402

from helpers import tiny_config  # noqa: E402

# The reader stores values as float32: 2^-24 relative rounding, here with room to spare.
FLOAT32_RTOL = 1e-7


def config(epochs):
  return tiny_config(**{"train.epochs": epochs, "checkpoint.every_epochs": 1,
                        "data.train_size": 300,
                        "train.log_every": "step", "train.invariance_every": 2,
                        "train.tensorboard": "step"})


def read_events(workdir):
  """Every scalar tag's (step, value) points, in the order TensorBoard keeps them."""
  acc = event_accumulator.EventAccumulator(
      workdir, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0})
  acc.Reload()
  scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
  return scalars, acc


def expected_points(records, prefix):
  """What each record should have become: a point per field at the record's step."""
  points = {}
  for r in records:
    for key, value in r.items():
      if key != "step" and isinstance(value, (int, float)):  # text (the live phase) is not
        points.setdefault(prefix + key, []).append((r["step"], value))
  return points


def assert_events_equal_logs(workdir, epochs):
  scalars, acc = read_events(workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    epoch_records = [json.loads(line) for line in f]
  assert [r["epoch"] for r in epoch_records] == list(range(1, epochs + 1))
  want = {**expected_points(epoch_records, "epoch/"),
          **expected_points(logs.read_run(workdir, steps=True), "step/")}
  assert set(scalars) == set(want)
  for tag, points in want.items():
    got = scalars[tag]
    assert [s for s, _ in got] == [s for s, _ in points], tag  # each step once, in order
    np.testing.assert_allclose([v for _, v in got], [v for _, v in points],
                               rtol=FLOAT32_RTOL, err_msg=tag)
  return scalars, acc


def test_event_files_equal_the_logs_before_and_after_a_resume(tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(config(2), workdir, progress=False)
  scalars, acc = assert_events_equal_logs(workdir, 2)
  # the hyperparameters: the resolved config's flattened fields, as config.json has them
  with open(os.path.join(workdir, "config.json")) as f:
    fields = config_lib.flatten(json.load(f))
  content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
  hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
  assert set(hparams) == set(fields)
  assert hparams["optim.lr"].number_value == 0.1 and hparams["train.epochs"].number_value == 2
  assert hparams["model.name"].string_value == "convnet_si"
  assert hparams["data.augment"].bool_value is False
  assert json.loads(hparams["checkpoint.snapshot_epochs"].string_value) == \
      fields["checkpoint.snapshot_epochs"]
  # 300 examples in batches of 128: 3 steps an epoch; invariance residuals on even steps
  assert [s for s, _ in scalars["epoch/test_error"]] == [3, 6]
  assert [s for s, _ in scalars["step/loss"]] == list(range(6))
  assert [s for s, _ in scalars["step/invariance/value"]] == [0, 2, 4]
  # raise the epochs: the run resumes from its checkpoint of epoch 2 (step 6)
  train.train_and_evaluate(config(4), workdir, progress=False)
  scalars, _ = assert_events_equal_logs(workdir, 4)
  assert [s for s, _ in scalars["epoch/epoch"]] == [3, 6, 9, 12]
  assert [v for _, v in scalars["epoch/epoch"]] == [1, 2, 3, 4]
  assert [s for s, _ in scalars["step/loss"]] == list(range(12))
  assert len([n for n in os.listdir(workdir) if n.startswith("events.out.tfevents.")]) == 2


def test_resume_from_an_older_checkpoint_hides_the_orphaned_events(tmp_path):
  """Epoch 3 logged, its checkpoint lost (a crash while it was written): the resume from
  epoch 2 cuts the logs back and redoes epoch 3; the events of the first epoch 3 and its
  steps are orphans that TensorBoard must no longer show."""
  workdir = str(tmp_path)
  train.train_and_evaluate(config(3), workdir, progress=False)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "3"))
  scalars, _ = read_events(workdir)
  assert [s for s, _ in scalars["step/loss"]] == list(range(9))  # steps 6-8 to be orphaned
  train.train_and_evaluate(config(3), workdir, progress=False)
  scalars, _ = assert_events_equal_logs(workdir, 3)
  assert [s for s, _ in scalars["step/loss"]] == list(range(9))
  assert [s for s, _ in scalars["epoch/loss"]] == [3, 6, 9]


def test_default_writes_epoch_events_only(tmp_path):
  """train.tensorboard='epoch' (the default): per-step events would cost ~1.1 KB a step."""
  cfg = tiny_config(**{"train.epochs": 2, "train.log_every": "step"})
  train.train_and_evaluate(cfg, str(tmp_path), progress=False)
  scalars, _ = read_events(str(tmp_path))
  assert scalars and all(tag.startswith("epoch/") for tag in scalars)
  assert [s for s, _ in scalars["epoch/loss"]] == [r["step"] for r in logs.read_run(str(tmp_path))]


def event_files(workdir):
  return sorted(n for n in os.listdir(workdir) if n.startswith(tensorboard_log.EVENT_FILE_PREFIX))


def hparams_plugin_data(acc, tag):
  return plugin_data_pb2.HParamsPluginData.FromString(acc.PluginTagToContent("hparams")[tag])


def test_event_log_writes_records_and_hparams_into_the_run_directory(tmp_path):
  config = {"optim.lr": 0.1, "model.name": "convnet_si", "data.augment": False,
            "train.epochs": 3, "checkpoint.snapshot_epochs": [1, 2], "data.root": None}
  log = tensorboard_log.EventLog(str(tmp_path), config, None)
  log.write_steps([{"step": 0, "loss": 2.5, "weight_norm": 7.0, "phase": "text"},
                   {"step": 1, "loss": 2.25, "weight_norm": 7.125}])
  log.write_epoch({"step": 2, "epoch": 1, "test_error": 0.75, "loss": 2.0})
  log.close()
  log.close()  # a family's runs are closed twice
  # one file in the run's own directory (add_hparams would have made a sub-run)
  assert os.listdir(tmp_path) == event_files(tmp_path)
  assert len(event_files(tmp_path)) == 1 and event_files(tmp_path)[0].endswith(".000000")
  scalars, acc = read_events(str(tmp_path))
  assert scalars == {"step/loss": [(0, 2.5), (1, 2.25)],
                     "step/weight_norm": [(0, 7.0), (1, 7.125)],
                     "epoch/epoch": [(2, 1.0)], "epoch/test_error": [(2, 0.75)],
                     "epoch/loss": [(2, 2.0)]}
  start = hparams_plugin_data(acc, "_hparams_/session_start_info").session_start_info.hparams
  assert set(start) == set(config)
  assert start["optim.lr"].number_value == 0.1 and start["train.epochs"].number_value == 3
  assert start["model.name"].string_value == "convnet_si"
  assert start["data.augment"].HasField("bool_value") and not start["data.augment"].bool_value
  assert start["checkpoint.snapshot_epochs"].string_value == "[1, 2]"
  assert start["data.root"].string_value == "null"
  experiment = hparams_plugin_data(acc, "_hparams_/experiment").experiment
  assert {(i.name, api_type_name(i.type)) for i in experiment.hparam_infos} == {
      ("optim.lr", "DATA_TYPE_FLOAT64"), ("train.epochs", "DATA_TYPE_FLOAT64"),
      ("model.name", "DATA_TYPE_STRING"), ("data.augment", "DATA_TYPE_BOOL"),
      ("checkpoint.snapshot_epochs", "DATA_TYPE_STRING"), ("data.root", "DATA_TYPE_STRING")}
  assert [m.name.tag for m in experiment.metric_infos] == [
      "epoch/" + m for m in tensorboard_log.HPARAMS_METRICS]


def api_type_name(value):
  from tensorboard.plugins.hparams import api_pb2
  return api_pb2.DataType.Name(value)


def test_a_resumed_session_purges_from_the_checkpoint_step(tmp_path):
  """Session 1 logs epochs at steps 3, 6, 9 and steps 0-8; session 2 resumes from the
  checkpoint at step 6: its file starts with a SessionLog START at step 6, and the reader
  keeps session 1's points below step 6 and session 2's from step 6 on, also of a tag
  that session 2 does not write (only the START cuts that one)."""
  workdir = str(tmp_path)
  log = tensorboard_log.EventLog(workdir, {"optim.lr": 0.1}, None)
  for epoch in (1, 2, 3):
    log.write_steps([{"step": s, "loss": 1.0 + s, "gone": -s}
                     for s in range(3 * epoch - 3, 3 * epoch)])
    log.write_epoch({"step": 3 * epoch, "epoch": epoch, "loss": 10.0 * epoch})
  log.close()
  log = tensorboard_log.EventLog(workdir, {"optim.lr": 0.1}, {"step": 6, "epoch": 2,
                                                              "loss": 20.0})
  log.write_steps([{"step": s, "loss": 100.0 + s} for s in range(6, 9)])
  log.write_epoch({"step": 9, "epoch": 3, "loss": 35.0})
  log.close()
  first, second = event_files(workdir)
  assert second.endswith(".000001")
  starts = [e.step for e in event_file_loader.LegacyEventFileLoader(
      os.path.join(workdir, second)).Load() if e.HasField("session_log")]
  assert starts == [6]
  scalars, _ = read_events(workdir)
  assert scalars["epoch/loss"] == [(3, 10.0), (6, 20.0), (9, 35.0)]
  assert scalars["epoch/epoch"] == [(3, 1.0), (6, 2.0), (9, 3.0)]
  assert scalars["step/loss"] == [(s, 1.0 + s) for s in range(6)] + [
      (s, 100.0 + s) for s in range(6, 9)]
  assert scalars["step/gone"] == [(s, -s) for s in range(6)]


def test_without_tensorboardx_the_logs_are_complete_and_no_event_file(tmp_path, monkeypatch,
                                                                      capsys):
  monkeypatch.setattr(tensorboard_log, "SummaryWriter", None)
  monkeypatch.setattr(tensorboard_log, "_warned", False)
  for run in ("a", "b"):
    writer = logs.MetricWriter(str(tmp_path / run), per_step=False,
                               tensorboard={"optim.lr": 0.1})
    writer.write_epoch({"step": 3, "epoch": 1, "loss": 0.5})
    writer.close()
    assert os.listdir(tmp_path / run) == ["metrics.jsonl"]
    assert logs.read_run(str(tmp_path / run)) == [{"step": 3, "epoch": 1, "loss": 0.5}]
  assert capsys.readouterr().err.count("tensorboardX is not installed") == 1  # warned once
