"""End-to-end: the CLI, the JSONL logs against values recomputed from the weights, the
SGD and full-batch GD steps against hand-computed ones, bad configs, the plot command."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from si_jax import logs, validate
from si_jax.analysis import forecast
from si_jax.engine import checkpoint, records, train
from si_jax.programs import plot

import independent
from helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def si_kernels(params) -> dict[str, np.ndarray]:
  """The SI parameters of the ConvNet: every conv is bias-free and followed by BN, so its
  kernel is scale-invariant (appendix B); the rest (the classifier) is not."""
  return {k: np.asarray(v["kernel"]) for k, v in params.items() if k.startswith("conv_")}


def norm(arrays) -> float:
  return float(np.sqrt(sum(np.sum(np.square(a, dtype=np.float64)) for a in arrays)))


def in_step_keys(record):
  """The epoch record's means of in-step metrics (not the evaluation, the gradient pass, or
  the live detector's and forecast's fields)."""
  live = ("phase", "destabilizations", "onset_confirmed", *forecast.FIELDS)
  return [k for k in record if k not in ("epoch", "step", "wall_time", *live)
          and not k.split("/")[-1].startswith(("test_", "train_"))
          and not k.startswith("invariance/")]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("cli"))
  cmd = [sys.executable, "-m", "si_jax.main", "--config=configs/quickstart.py",
         f"--workdir={workdir}", "--config.train.epochs=3", "--config.data.train_size=256",
         "--config.train.log_every=step", "--config.train.invariance_every=2"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out


def test_cli_logs_the_evaluation_of_its_final_weights(cli_run):
  """test_loss/test_error (running BN statistics) and train_loss/train_accuracy (train-mode
  BN over batches of 128) recomputed here from the final checkpoint, with the resolved
  config the run wrote; the printed summary is the last record."""
  workdir, out = cli_run
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  assert (config.train.epochs, config.data.train_size, config.model.width) == (3, 256, 8)
  params, batch_stats, epoch = checkpoint.load_weights(workdir)
  final = logs.read_run(workdir)[-1]
  assert epoch == final["epoch"] == 3 and final["step"] == 3 * 2
  expected = independent.all_evaluations(config, params, batch_stats)
  assert "train_grad_norm" in final  # the gradient pass runs at the last epoch
  independent.assert_evaluation_matches(final, expected, rel=1e-5)
  assert (f"epoch 3, train loss {final['train_loss']:.4g}, "
          f"test error {final['test_error']:.4f}") in out.stdout


def test_cli_epoch_records_summarise_the_step_records(cli_run):
  """Each epoch record holds the means of its steps' in-step metrics; the per-step
  metrics obey their definitions: rho^2 = sum of the layers' rho_l^2, eta~ = eta / rho^2,
  g~ = rho g (metrics.py, property (1b))."""
  workdir, _ = cli_run
  epochs, steps = logs.read_run(workdir), logs.read_run(workdir, steps=True)
  assert [r["epoch"] for r in epochs] == [1, 2, 3]
  for record in epochs:
    mine = [s for s in steps if s["epoch"] == record["epoch"] - 1]
    assert len(mine) == 2 and len(in_step_keys(record)) >= 30
    for k in in_step_keys(record):
      assert record[k] == pytest.approx(np.mean([s[k] for s in mine]), rel=1e-6), k
  for s in steps:
    layers = [s[f"conv_{i}/weight_norm"] for i in range(4)]
    assert s["weight_norm"] == pytest.approx(norm(layers), rel=1e-5)
    assert s["effective_lr"] == pytest.approx(0.1 / s["weight_norm"] ** 2, rel=1e-5)
    assert s["effective_grad_norm"] == pytest.approx(s["weight_norm"] * s["grad_norm"], rel=1e-5)
  # the in-step invariance check (eps = 1e-5 breaks exact invariance): a bound, enough
  # here, the identities themselves are tested in test_invariance.py
  assert max(s["invariance/value"] for s in steps if "invariance/value" in s) < 1e-3


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


def test_plot_command(cli_run, tmp_path, capsys):
  # A smoke test, enough for a command that only draws logged numbers: a PNG comes out
  # (the figure's content is matplotlib's), and a wrong directory gets a clear error.
  workdir, out = cli_run
  assert "figure: " in out.stdout and os.path.getsize(os.path.join(workdir, "figure.png")) > 10_000
  png = str(tmp_path / "two.png")
  plot.main([workdir, workdir, "--out", png, "--labels", "a", "b", "--theory"])
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with pytest.raises((FileNotFoundError, SystemExit)) as error:  # raised, or a CLI exit
    plot.main([str(tmp_path), "--out", png])
  assert "si_jax run directory" in str(error.value) + capsys.readouterr().err


def test_sgd_step_on_its_batch_of_the_epoch_order(tmp_path):
  """The first step of epoch 2 starts from the checkpoint of epoch 1 and takes the first
  128 examples of epoch 1's order, np.random.default_rng([seed, 1]).permutation(300)
  (the order is a function of seed and epoch alone; data.order_seed unset: the run's
  seed). Its logged loss, accuracy, weight norm and SI gradient norm are recomputed here
  (train-mode BN on that batch)."""
  seed = 5
  config = tiny_config(**{"train.log_every": "step", "checkpoint.every_epochs": 1,
                          "data.train_size": 300})
  config.seed = seed
  train.train_and_evaluate(config, str(tmp_path), progress=False)
  steps = logs.read_run(str(tmp_path), steps=True)
  assert [s["step"] for s in steps] == list(range(6)) and steps[3]["epoch"] == 1
  params, batch_stats, _ = checkpoint.load_weights(str(tmp_path), 1)
  data, net = independent.dataset(config), independent.model(config)

  def first_batch(seed, epoch):
    idx = np.random.default_rng([seed, epoch]).permutation(300)[:128]
    x, y = data.train_images[idx], data.train_labels[idx]
    loss, grad, _ = independent.mean_loss_grad(net, params, batch_stats, x, y)
    logits = net.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                       mutable=["batch_stats"])[0]
    return loss, grad, float(np.mean(independent.loss_and_correct(logits, y)[1]))

  loss, grad, accuracy = first_batch(seed, 1)
  step = steps[3]
  assert step["loss"] == pytest.approx(loss, rel=1e-5)
  assert step["accuracy"] == pytest.approx(accuracy, abs=1e-6)
  assert step["weight_norm"] == pytest.approx(norm(si_kernels(params).values()), rel=1e-6)
  assert step["grad_norm"] == pytest.approx(norm(si_kernels(grad).values()), rel=1e-4)
  # the check discriminates: another epoch's or seed's batch has another loss
  for other in ((seed, 0), (seed, 2), (seed + 1, 1)):
    assert first_batch(*other)[0] != pytest.approx(loss, rel=1e-3), other


@pytest.mark.parametrize("micro_batch_size", [None, 128], ids=["one_pass", "ghost_128"])
def test_full_batch_gd_takes_the_hand_computed_step(tmp_path, micro_batch_size):
  """One GD step per epoch. Epoch 2's step from the checkpoint of epoch 1, by hand:
  g = sum_c n_c grad L_c / N over the micro-batches c (each with its own BN statistics;
  one pass: c = the whole set), then Eq. (2) for the SI weights, w <- w - lr (g + wd w);
  the classifier is frozen. The running statistics are updated by each micro-batch in
  turn. The logged loss is the mean over the set, rho and ||g|| those before the step."""
  lr, wd = 0.1, 0.01
  config = tiny_config(**{"data.train_size": 300, "train.mode": "gd",
                          "train.micro_batch_size": micro_batch_size,
                          "checkpoint.every_epochs": 1})
  summary = train.train_and_evaluate(config, str(tmp_path), progress=False)
  record = logs.read_run(str(tmp_path))[-1]
  assert [r["step"] for r in logs.read_run(str(tmp_path))] == [1, 2]
  w1, stats, _ = checkpoint.load_weights(str(tmp_path), 1)
  data, net = independent.dataset(config), independent.model(config)
  size = micro_batch_size or 300
  grad, loss = jax.tree.map(np.zeros_like, w1), 0.0
  for start in range(0, 300, size):
    x, y = data.train_images[start:start + size], data.train_labels[start:start + size]
    l, g, stats = independent.mean_loss_grad(net, w1, stats, x, y)
    grad = jax.tree.map(lambda a, b: a + len(y) * np.asarray(b, np.float64) / 300, grad, g)
    loss += len(y) * l / 300
  w2 = summary["state"].params
  for name, w in si_kernels(w1).items():
    expected = w - lr * (si_kernels(grad)[name] + wd * w)
    np.testing.assert_allclose(w2[name]["kernel"], expected, rtol=1e-5, atol=1e-6 * np.abs(w).max())
    # the update itself, to 1e-3 of its size
    np.testing.assert_allclose(w - w2[name]["kernel"], w - expected, rtol=1e-3,
                               atol=1e-3 * np.abs(w - expected).max())
  jax.tree.map(np.testing.assert_array_equal, w2["classifier"], w1["classifier"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               summary["state"].batch_stats, stats)
  assert record["loss"] == pytest.approx(loss, rel=1e-5)
  assert record["weight_norm"] == pytest.approx(norm(si_kernels(w1).values()), rel=1e-6)
  assert record["grad_norm"] == pytest.approx(norm(si_kernels(grad).values()), rel=1e-4)
  independent.assert_evaluation_matches(
      record, independent.all_evaluations(config, summary["state"].params,
                                          summary["state"].batch_stats), rel=1e-5)


def test_fixed_norm_run_keeps_the_norm(tmp_path):
  # rho before every step equals rho_0 (step 0 logs the initial norm): the projection
  # of the fixed-norm ablation, to float32 round-off
  config = tiny_config(**{"optim.fix_si_norm": True, "train.log_every": "step",
                          "data.train_size": 300})
  train.train_and_evaluate(config, str(tmp_path), progress=False)
  steps = logs.read_run(str(tmp_path), steps=True)
  norms = [r["weight_norm"] for r in steps]
  assert len(norms) == 6 and max(norms) / min(norms) - 1 < 1e-5
  for s in steps:  # and so the effective LR stays lr / rho_0^2
    assert s["effective_lr"] == pytest.approx(0.1 / norms[0] ** 2, rel=1e-5)


def test_practical_run_with_momentum_and_augmentation(tmp_path):
  """Momentum, augmentation, trainable BN affine and last layer (Fig. 21's setting): the
  logged evaluation equals the one recomputed from the returned weights, and the non-SI
  parameters were trained (BN's scale starts at exactly 1, the classifier's norm at 10)."""
  # without the gradient pass: the train-mode evaluation's other path
  config = tiny_config(**{"data.augment": True, "optim.momentum": 0.9,
                          "model.train_non_si": True, "train.grad_pass_every": 0,
                          "data.train_size": 300})  # a partial last batch too
  summary = train.train_and_evaluate(config, str(tmp_path), progress=False)
  params = summary["state"].params
  independent.assert_evaluation_matches(
      logs.read_run(str(tmp_path))[-1],
      independent.evaluation(config, params, summary["state"].batch_stats), rel=1e-5)
  assert "train_grad_norm" not in logs.read_run(str(tmp_path))[-1]
  scales = [np.asarray(v["scale"]) for k, v in params.items() if k.startswith("norm_")]
  assert len(scales) == 4 and all(np.abs(s - 1).max() > 1e-4 for s in scales)
  assert abs(np.linalg.norm(params["classifier"]["kernel"]) - 10.0) > 1e-3


def test_divergence_is_reported_with_step_and_values(tmp_path):
  config = tiny_config(**{"optim.lr": 1e30})
  with pytest.raises(FloatingPointError, match=r"non-finite \['weight_norm'\] at step 1: "
                     r".*weight_norm=inf; previous step: loss="):
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
  with pytest.raises(FloatingPointError, match=r"rho = 0.0001: .*1/rho\^2 = 1e\+08"):
    records.check_finite([good, bad], 100)
  underflow = {"loss": float("nan"), "grad_norm": float("nan"), "weight_norm": 0.0}
  with pytest.raises(FloatingPointError, match="underflowed to 0"):
    records.check_finite([underflow], 7)
  # a non-finite loss with finite weights is only recorded under the 'record' policy
  records.check_finite([{"loss": float("inf"), "grad_norm": 1.0, "weight_norm": 2.0}], 0,
                       policy="record")


def test_rerunning_a_finished_run_is_a_no_op(tmp_path, capsys):
  config = tiny_config(**{"train.epochs": 1, "checkpoint.every_epochs": 1})
  first = train.train_and_evaluate(config, str(tmp_path), progress=False)
  again = train.train_and_evaluate(config, str(tmp_path), progress=False)
  assert "is already complete (1 epochs)" in capsys.readouterr().err
  assert again["final"] == first["final"]
  assert len(logs.read_run(str(tmp_path))) == 1
  jax.tree.map(np.testing.assert_array_equal, again["state"].params, first["state"].params)
