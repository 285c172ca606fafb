"""TensorBoard event files read back with TensorBoard's own reader (EventAccumulator)
equal the run's logs: every scalar of every epoch record of metrics.jsonl (read here as
plain JSON) and of every step record, once each, also after resumes; the config as the
HParams plugin's hyperparameters."""

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
plugin_data_pb2 = pytest.importorskip("tensorboard.plugins.hparams.plugin_data_pb2")

from si_jax import config as config_lib  # noqa: E402
from si_jax import logs  # noqa: E402
from si_jax.engine import train  # noqa: E402

from helpers import tiny_config  # noqa: E402

# The reader stores values as float32: 2^-24 relative rounding, here with room to spare.
FLOAT32_RTOL = 1e-7


def config(epochs):
  return tiny_config(**{"train.epochs": epochs, "checkpoint.every_epochs": 1,
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
