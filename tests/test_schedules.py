"""Learning-rate schedules (appendix J) through optax: the multiplier of every kind at
hand-picked steps, and the per-step learning_rate / effective_lr a run logs."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import logs, models, optim
from si_jax.config import base_config
from si_jax.engine import train


@pytest.mark.parametrize("kind, factor, expected", [
    # T = 100 updates; values written out from each definition
    ("cosine", 10.0, {0: 1.0, 25: (1 + math.cos(math.pi / 4)) / 2, 50: 0.5, 100: 0.0}),
    ("linear", 10.0, {0: 1.0, 25: 1.0, 50: 1 - 0.9 / 3, 100: 0.1}),
    ("linear_half", 10.0, {49: 1.0, 50: 1.0, 70: 1 - 0.99 / 2, 90: 0.01, 99: 0.01}),
    ("step", 3.0, {24: 1.0, 25: 1 / 3, 50: 1 / 9, 75: 1 / 27, 99: 1 / 27}),
])
def test_schedule_multipliers(kind, factor, expected):
  schedule = optim.lr_schedule(kind, factor, 100)
  for t, value in expected.items():
    assert float(schedule(t)) == pytest.approx(value, rel=1e-6, abs=1e-7), (kind, t)


def exact_multiplier(kind, factor, T, t):
  """Each definition of ``optim.lr_schedule`` in float64, at the integer steps ``t``."""
  t = np.asarray(t, np.float64)
  if kind == "cosine":
    return (1 + np.cos(np.pi * t / T)) / 2
  if kind == "linear":
    return 1 - (1 - 1 / factor) * np.clip((t - T / 4) / (0.75 * T), 0, 1)
  if kind == "linear_half":
    return 1 - 0.99 * np.clip((t - T / 2) / (0.4 * T), 0, 1)
  return factor ** -np.minimum(np.floor(4 * t / T), 3)  # step


@pytest.mark.parametrize("kind", ["cosine", "linear", "linear_half", "step"])
@pytest.mark.parametrize("T", [3, 10, 391])
def test_schedule_at_every_step_is_the_float64_definition(kind, T):
  """Every step of runs whose T is not a multiple of 4 (the optax schedules' float32
  values are within 2e-7 of the exact ones; a step one update early is off by far more)."""
  t = np.arange(T)
  got = np.asarray(optim.lr_schedule(kind, 3.0, T)(jnp.asarray(t)))
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, exact_multiplier(kind, 3.0, T, t), rtol=0, atol=2e-7)


def test_constant_schedule_is_one_and_injects_nothing():
  schedule = optim.lr_schedule("constant", 10.0, 100)
  assert [float(schedule(t)) for t in (0, 50, 99)] == [1.0, 1.0, 1.0]
  params = {"w": jnp.ones((3,))}
  groups = models.ParamGroups.from_si_groups({"w": (("w",),)}, train_non_si=True)
  constant = optim.make_optimizer(params, groups, lr=0.1).init(params)
  cosine = optim.make_optimizer(params, groups, lr=0.1, schedule="cosine",
                                total_steps=100).init(params)
  assert "lr_multiplier" not in optim.hyperparams(constant)
  assert float(optim.hyperparams(cosine)["lr_multiplier"]) == 1.0


def test_bad_schedule_is_named():
  with pytest.raises(ValueError, match="optim.schedule must be one of"):
    optim.check_options(name="sgd", lr=0.1, wd=0.0, momentum=0.0, wd_mode="coupled",
                        fix_si_norm=False, si_norm=None, schedule="exp")
  with pytest.raises(ValueError, match="optim.schedule_factor"):
    optim.check_options(name="sgd", lr=0.1, wd=0.0, momentum=0.0, wd_mode="coupled",
                        fix_si_norm=False, si_norm=None, schedule="step", schedule_factor=0.5)


def test_a_run_logs_each_steps_learning_rate_and_effective_lr(tmp_path):
  """cosine over T = 4 epochs x 2 steps: step t uses eta (1 + cos(pi t / 8)) / 2, and the
  logged effective LR is that step's lr over rho_t^2."""
  config = base_config()
  config.model.width = 4
  config.data.name, config.data.source = "digits", "embedded"
  config.data.train_size, config.data.test_size = 256, 100
  config.optim.lr, config.optim.wd, config.optim.schedule = 0.1, 0.01, "cosine"
  config.train.epochs, config.train.log_every = 4, "step"
  train.train_and_evaluate(config, str(tmp_path), progress=False)
  steps = logs.read_run(str(tmp_path), steps=True)
  assert [r["step"] for r in steps] == list(range(8))
  for r in steps:
    eta_t = 0.1 * (1 + math.cos(math.pi * r["step"] / 8)) / 2
    assert r["learning_rate"] == pytest.approx(eta_t, rel=1e-5, abs=1e-9)  # float32
    assert r["effective_lr"] == pytest.approx(eta_t / r["weight_norm"] ** 2, rel=1e-5)
  epochs = logs.read_run(str(tmp_path))
  assert epochs[1]["learning_rate"] == pytest.approx(
      np.mean([steps[2]["learning_rate"], steps[3]["learning_rate"]]), rel=1e-6)
