"""End-to-end: the CLI, the JSONL logs, full-batch GD, bad configs, the plot command."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import config as config_lib
from si_jax import data as data_lib
from si_jax import logs, plot, train, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  config = config_lib.base_config()
  config.model.width = 4
  config.data.name, config.data.source = "digits", "embedded"
  config.data.train_size, config.data.test_size = 300, 100
  config.optim.lr, config.optim.wd = 0.1, 0.01
  config.train.epochs = 2
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("cli"))
  cmd = [sys.executable, "-m", "si_jax.main", "--config=configs/quickstart.py",
         f"--workdir={workdir}", "--config.train.epochs=3", "--config.data.train_size=256",
         "--config.train.log_every=step", "--config.train.invariance_every=2"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out


def test_cli_writes_config_logs_and_figure(cli_run):
  workdir, out = cli_run
  assert "figure: " in out.stdout and os.path.isfile(os.path.join(workdir, "figure.png"))
  assert os.path.getsize(os.path.join(workdir, "figure.png")) > 10_000
  with open(os.path.join(workdir, "config.json")) as f:
    resolved = json.load(f)
  assert resolved["train"]["epochs"] == 3 and resolved["model"]["width"] == 8
  epochs = logs.read_run(workdir)
  assert [r["epoch"] for r in epochs] == [1, 2, 3]
  for key in ("loss", "accuracy", "weight_norm", "grad_norm", "effective_grad_norm",
              "effective_lr", "adjacent_cosine", "cosine_distance", "train_loss",
              "train_accuracy", "test_loss", "test_error", "conv_0/weight_norm",
              "invariance/value", "invariance/orthogonality", "invariance/grad_scaling"):
    assert key in epochs[-1], key
  assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in epochs)
  assert 0 <= epochs[-1]["test_error"] <= 1
  assert epochs[-1]["invariance/value"] < 1e-3  # the in-step check, eps = 1e-5


def test_per_step_logs_satisfy_eq3(cli_run):
  workdir, _ = cli_run
  steps = logs.read_run(workdir, steps=True)
  assert [r["step"] for r in steps] == list(range(len(steps))) and len(steps) == 3 * 2
  lr, wd = 0.1, 0.03  # the quickstart's
  for now, nxt in zip(steps, steps[1:]):
    predicted = (1 - lr * wd) ** 2 * now["weight_norm"] ** 2 + lr**2 * now["grad_norm"] ** 2
    assert nxt["weight_norm"] ** 2 == pytest.approx(predicted, rel=1e-5)
  # invariance metrics appear exactly on the checked steps
  assert [("invariance/value" in r) for r in steps] == [r["step"] % 2 == 0 for r in steps]


def test_plot_command(cli_run, tmp_path):
  workdir, _ = cli_run
  out = str(tmp_path / "two.png")
  plot.main([workdir, workdir, "--out", out, "--labels", "a", "b", "--theory"])
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(FileNotFoundError, match="si_jax run directory"):
    plot.main([str(tmp_path), "--out", out])


def test_seed_sets_init_and_data_order():
  # Bit-identical runs for the same seed across processes: test_checkpoint.py
  # (the killed and the uninterrupted runs are separate processes).
  dataset = data_lib.load_dataset("digits", "embedded", train_size=300)
  _, a = train.create_task_and_state(_seeded(0), dataset)
  _, b = train.create_task_and_state(_seeded(0), dataset)
  _, c = train.create_task_and_state(_seeded(1), dataset)
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  assert not np.array_equal(a.params["conv_1"]["kernel"], c.params["conv_1"]["kernel"])
  assert not np.array_equal(train.epoch_order(0, 0, 300), train.epoch_order(1, 0, 300))


def _seeded(seed):
  config = tiny_config()
  config.seed = seed
  return config


def test_epoch_order_is_a_function_of_seed_and_epoch():
  a, b = train.epoch_order(0, 3, 100), train.epoch_order(0, 3, 100)
  np.testing.assert_array_equal(a, b)
  assert sorted(a) == list(range(100))
  assert not np.array_equal(a, train.epoch_order(0, 4, 100))
  assert not np.array_equal(a, train.epoch_order(1, 3, 100))
  parts = train.batches(a, 32, drop_last=False)
  assert [len(p) for p in parts] == [32, 32, 32, 4]
  assert [len(p) for p in train.batches(a, 32, drop_last=True)] == [32, 32, 32]


def test_full_batch_gd_micro_batches_equal_one_pass():
  # With layer norm there are no batch statistics, so the micro-batched gradient
  # must equal the one-pass full-batch gradient (up to summation order).
  dataset = data_lib.load_dataset("digits", "embedded", train_size=300)
  config = tiny_config(**{"model.norm": "layer", "train.mode": "gd"})
  task, state = train.create_task_and_state(config, dataset)
  x, y = jnp.asarray(dataset.train_images), jnp.asarray(dataset.train_labels)
  micro = jax.jit(functools.partial(train.micro_batch_grads, task))

  def full_grad(size):
    total = jax.tree.map(jnp.zeros_like, state.params)
    for idx in train.batches(np.arange(300, dtype=np.int32), size, False):
      total, _, _, _ = micro(state.params, state.batch_stats, total, x, y, idx)
    return jax.tree.map(lambda g: g / 300, total)

  one, chunked = full_grad(300), full_grad(64)
  direct = jax.grad(lambda p: train.loss_and_aux(task.model, p, state.batch_stats, x, y)[0])(
      state.params)
  for a, b in ((one, direct), (chunked, direct)):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-7), a, b)


def test_gd_mode_runs_one_step_per_epoch(tmp_path):
  config = tiny_config(**{"train.mode": "gd", "train.micro_batch_size": 100, "train.epochs": 3})
  summary = train.train_and_evaluate(config, str(tmp_path), progress=False)
  records = logs.read_run(str(tmp_path))
  assert [r["step"] for r in records] == [1, 2, 3]
  assert records[-1]["loss"] < records[0]["loss"]
  assert summary["final"]["loss"] == records[-1]["loss"]


def test_fixed_norm_run_keeps_the_norm(tmp_path):
  config = tiny_config(**{"optim.fix_si_norm": True, "train.log_every": "step"})
  train.train_and_evaluate(config, str(tmp_path), progress=False)
  steps = logs.read_run(str(tmp_path), steps=True)
  norms = [r["weight_norm"] for r in steps]
  assert max(norms) / min(norms) - 1 < 1e-5


def test_augmented_momentum_run(tmp_path):
  config = tiny_config(**{"data.augment": True, "optim.momentum": 0.9,
                          "model.train_non_si": True})
  summary = train.train_and_evaluate(config, str(tmp_path), progress=False)
  assert np.isfinite(summary["final"]["test_loss"])


def test_divergence_is_reported_with_step_and_values(tmp_path):
  config = tiny_config(**{"optim.lr": 1e30})
  with pytest.raises(train.TrainingDiverged, match=r"non-finite \['weight_norm'\] at step 1: .*weight_norm=inf; previous step: loss="):
    train.train_and_evaluate(config, str(tmp_path), progress=False)
  assert logs.read_run(str(tmp_path)) == []  # no record of the diverged epoch


BAD = [
    ({"optim.lr": 0.0}, "optim.lr"), ({"optim.lr": -0.1}, "optim.lr"),
    ({"optim.wd": -1e-3}, "optim.wd"), ({"train.batch_size": 0}, "train.batch_size"),
    ({"model.name": "vgg"}, "model.name"), ({"model.norm": "group"}, "model.norm"),
    ({"model.width": 0}, "model.width"), ({"data.name": "mnist"}, "data.name"),
    ({"train.mode": "adam"}, "train.mode"), ({"train.log_every": "hour"}, "train.log_every"),
    ({"optim.fix_si_norm": True, "optim.fixed_effective_lr": True}, "optim.fix_si_norm"),
    ({"train.micro_batch_size": 10}, "train.micro_batch_size"),
]


@pytest.mark.parametrize("overrides,field", BAD)
def test_bad_config_fails_before_compute(overrides, field):
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    validate.validate_config(tiny_config(**overrides))


def test_missing_data_dir_is_named(tmp_path):
  config = tiny_config(**{"data.name": "cifar10", "data.source": "archive",
                          "data.data_dir": str(tmp_path / "absent")})
  with pytest.raises(ValueError, match="data.data_dir"):
    train.train_and_evaluate(config, str(tmp_path / "w"), progress=False)


def test_cli_rejects_bad_override_and_typo(tmp_path):
  base = [sys.executable, "-m", "si_jax.main", "--config=configs/quickstart.py",
          f"--workdir={tmp_path}"]
  out = subprocess.run(base + ["--config.optim.lr=-1"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode != 0 and "optim.lr must be positive" in out.stderr
  out = subprocess.run(base + ["--config.optim.learning_rate=0.1"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "learning_rate" in out.stderr
  assert not os.path.exists(os.path.join(tmp_path, "metrics.jsonl"))


def test_tiny_weight_norm_divergence_is_explained():
  good = {"loss": 0.01, "grad_norm": 1e3, "weight_norm": 1e-4}
  bad = {"loss": float("nan"), "grad_norm": float("inf"), "weight_norm": float("nan")}
  with pytest.raises(train.TrainingDiverged, match=r"rho = 0.0001: .*1/rho\^2 = 1e\+08"):
    train._check_finite([good, bad], 100)
  underflow = {"loss": float("nan"), "grad_norm": float("nan"), "weight_norm": 0.0}
  with pytest.raises(train.TrainingDiverged, match="underflowed to 0"):
    train._check_finite([underflow], 7)
  # a non-finite loss with finite weights is only recorded under the 'record' policy
  train._check_finite([{"loss": float("inf"), "grad_norm": 1.0, "weight_norm": 2.0}], 0,
                      policy="record")


def test_rerunning_a_finished_run_is_a_no_op(tmp_path):
  config = tiny_config(**{"train.epochs": 1, "checkpoint.every_epochs": 1})
  first = train.train_and_evaluate(config, str(tmp_path), progress=False)
  again = train.train_and_evaluate(config, str(tmp_path), progress=False)
  assert again["final"] == first["final"]
  assert len(logs.read_run(str(tmp_path))) == 1
