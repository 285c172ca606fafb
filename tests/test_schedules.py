"""Learning-rate schedules (appendix J) through optax: the multiplier of every kind at
hand-picked steps, and the per-step learning_rate / effective_lr a run logs."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import logs, models, optim, validate
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


# --- optim.schedule_unit='epoch': the released code's once-an-epoch schedules ---------

@pytest.mark.parametrize("kind", ["cosine", "linear", "linear_half", "step"])
def test_epoch_unit_holds_each_epochs_first_update_value(kind):
  """E = 10 epochs x K = 7 updates: every update of epoch e uses s(7 e), the per-update
  schedule at the epoch's first update, which is the definition at e / E."""
  E, K = 10, 7
  t = np.arange(E * K)
  per_update = np.asarray(optim.lr_schedule(kind, 3.0, E * K)(jnp.asarray(t)))
  per_epoch = np.asarray(optim.lr_schedule(kind, 3.0, E * K, K)(jnp.asarray(t)))
  first = t // K * K
  np.testing.assert_array_equal(per_epoch, per_update[first])
  assert (per_epoch.reshape(E, K) == per_epoch.reshape(E, K)[:, :1]).all()  # constant
  np.testing.assert_allclose(per_epoch, exact_multiplier(kind, 3.0, E, t // K), atol=2e-7)
  changes = per_epoch[1:] != per_epoch[:-1]  # only from an epoch's last update to the next
  assert not changes[(t[1:] % K) != 0].any() and changes.any()
  assert (per_update != per_epoch).any()  # inside an epoch the per-update one moves on


def test_epoch_unit_cosine_numbers():
  """cosine over 4 epochs x 3 updates: 1, (1 + cos(pi / 4)) / 2, 0.5, (1 - cos(pi / 4)) / 2,
  each three times (per update the second update would already be (1 + cos(pi / 12)) / 2)."""
  got = [float(optim.lr_schedule("cosine", 10.0, 12, 3)(t)) for t in range(12)]
  c = math.cos(math.pi / 4)
  assert got == pytest.approx(np.repeat([1.0, (1 + c) / 2, 0.5, (1 - c) / 2], 3),
                              rel=1e-6, abs=1e-7)
  assert float(optim.lr_schedule("cosine", 10.0, 12)(1)) == pytest.approx(
      (1 + math.cos(math.pi / 12)) / 2, rel=1e-6)


@pytest.mark.parametrize("kind", ["cosine", "step"])
def test_one_update_an_epoch_is_the_same_in_both_units(kind):
  """Full-batch GD (K = 1): the epoch unit is the per-update schedule, value for value."""
  t = jnp.arange(40)
  np.testing.assert_array_equal(optim.lr_schedule(kind, 3.0, 40, 1)(t),
                                optim.lr_schedule(kind, 3.0, 40)(t))


def test_optimizer_injects_the_epoch_units_multiplier():
  """The optimizer's injected lr_multiplier after each update (step schedule, p = 2, over
  E = 4 epochs x K = 2): 1, 1, 1/2, 1/2, 1/4, 1/4, 1/8, 1/8; per update, 'step' unit."""
  params = {"w": jnp.ones((3,))}
  groups = models.ParamGroups.from_si_groups({"w": (("w",),)}, train_non_si=True)
  grads = {"w": jnp.full((3,), 0.5)}

  def multipliers(**unit):
    tx = optim.make_optimizer(params, groups, lr=0.1, schedule="step", schedule_factor=2.0,
                              total_steps=8, **unit)
    state, got = tx.init(params), []
    for _ in range(8):
      _, state = tx.update(grads, state, params)
      got.append(float(optim.hyperparams(state)["lr_multiplier"]))
    return got

  assert multipliers(schedule_unit="epoch", steps_per_epoch=2) == [
      1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]
  # T / 4 = 2 updates a quarter: the same drops, whichever unit
  assert multipliers(steps_per_epoch=2) == multipliers(schedule_unit="epoch",
                                                       steps_per_epoch=2)
  with pytest.raises(ValueError, match="optim.schedule_unit='epoch' needs"):
    optim.make_optimizer(params, groups, lr=0.1, schedule="cosine", total_steps=8,
                         schedule_unit="epoch")


def test_bad_schedule_unit_is_named():
  with pytest.raises(ValueError, match=r"optim.schedule_unit must be one of \('step', "
                                       r"'epoch'\), got 'update'"):
    optim.check_options(name="sgd", lr=0.1, wd=0.0, momentum=0.0, wd_mode="coupled",
                        fix_si_norm=False, si_norm=None, schedule="cosine",
                        schedule_unit="update")
  config = base_config()
  config.data.name, config.data.source = "digits", "embedded"
  config.optim.schedule_unit = "epochs"
  with pytest.raises(ValueError, match="optim.schedule_unit must be one of"):
    validate.validate_config(config)


def test_a_run_with_the_epoch_unit_logs_one_learning_rate_an_epoch(tmp_path):
  """cosine over 4 epochs x 2 steps, optim.schedule_unit='epoch': steps 2e and 2e + 1 both
  use 0.1 (1 + cos(pi e / 4)) / 2 (the released code's CosineAnnealingLR(T_max=epochs),
  stepped after each epoch), so the epoch's mean learning rate is that value too."""
  config = base_config()
  config.model.width = 4
  config.data.name, config.data.source = "digits", "embedded"
  config.data.train_size, config.data.test_size = 256, 100
  config.optim.lr, config.optim.wd, config.optim.schedule = 0.1, 0.01, "cosine"
  config.optim.schedule_unit = "epoch"
  config.train.epochs, config.train.log_every = 4, "step"
  train.train_and_evaluate(config, str(tmp_path), progress=False)
  steps = logs.read_run(str(tmp_path), steps=True)
  assert [r["step"] for r in steps] == list(range(8))
  for r in steps:
    eta_e = 0.1 * (1 + math.cos(math.pi * (r["step"] // 2) / 4)) / 2
    assert r["learning_rate"] == pytest.approx(eta_e, rel=1e-5, abs=1e-9)
    assert r["effective_lr"] == pytest.approx(eta_e / r["weight_norm"] ** 2, rel=1e-5)
  epochs = logs.read_run(str(tmp_path))
  assert [e["learning_rate"] for e in epochs] == pytest.approx(
      [0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)], rel=1e-5)
