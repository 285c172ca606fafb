"""Eq. (3) and Eq. (8) on the values the jitted train step itself reports.

Measured (width-8 ConvNet on digits, lr 0.1, wd 0.01, 60 steps, float32):
  Eq. (3) relative residual of rho_{t+1}^2          <= ~1e-6
  Eq. (8) relative residual of 1 - cos(x_t, x_t+1)   <= ~1e-3
  (the BN epsilon and float32 <grad f, x> ~ 1e-5 cosines set these floors).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import config as config_lib
from si_jax import data as data_lib
from si_jax import metrics
from si_jax.engine import batching
from si_jax.engine import state as state_lib
from si_jax.engine import step as step_lib


def run_steps(num_steps, **optim_fields):
  """Per-step metrics of a width-8 ConvNet on digits, as the jitted train step reports."""
  config = config_lib.base_config()
  config.model.width = 8
  config.data.name, config.data.source = "digits", "embedded"
  for k, v in optim_fields.items():
    setattr(config.optim, k, v)
  dataset = data_lib.load_dataset("digits", "embedded")
  task, state = state_lib.create_state(config, dataset)
  step = jax.jit(functools.partial(step_lib.train_step, task))
  x, y = dataset.train_images, dataset.train_labels
  records = []
  order = batching.batches(batching.epoch_order(0, 0, len(y)), 128, True) * 6
  for idx in order[:num_steps]:
    state, m = step(state, x, y, idx)
    records.append({k: float(v) for k, v in m.items()})
  return records


@pytest.fixture(scope="module")
def step_records():
  lr, wd = 0.1, 0.01
  return run_steps(60, lr=lr, wd=wd), lr, wd


def test_eq3_norm_dynamics(step_records):
  records, lr, wd = step_records
  worst = 0.0
  for now, nxt in zip(records, records[1:]):
    for prefix in ("", "conv_0/", "conv_3/"):
      rho, g = now[prefix + "weight_norm"], now[prefix + "grad_norm"]
      predicted = (1 - lr * wd) ** 2 * rho**2 + lr**2 * g**2
      worst = max(worst, abs(nxt[prefix + "weight_norm"] ** 2 / predicted - 1))
  assert worst < 1e-5
  # and the step does move the norm: without the gradient term it would be off
  rho, g = records[0]["weight_norm"], records[0]["grad_norm"]
  assert abs(records[1]["weight_norm"] ** 2 / ((1 - lr * wd) ** 2 * rho**2) - 1) > 1e-4


def test_eq8_adjacent_cosine(step_records):
  records, lr, wd = step_records
  worst = 0.0
  for r in records:
    for prefix in ("", "conv_1/", "conv_2/"):
      rho, g_eff = r[prefix + "weight_norm"], r[prefix + "effective_grad_norm"]
      ratio = lr**2 * g_eff**2 / ((1 - lr * wd) ** 2 * rho**4)
      predicted = 1 - (1 + ratio) ** -0.5  # Eq. (8), float64
      worst = max(worst, abs(r[prefix + "cosine_distance"] / predicted - 1))
      assert r[prefix + "effective_lr"] == pytest.approx(lr / rho**2, rel=1e-6)
      assert g_eff == pytest.approx(rho * r[prefix + "grad_norm"], rel=1e-6)
  assert worst < 2e-3


def test_cosine_distance_resolves_phase_b_steps():
  """At 1 - cos ~ 1e-9 the plain float32 cosine is pure round-off; ours is not."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal(100_000)
  direction = rng.standard_normal(x.shape)
  direction -= direction @ x / (x @ x) * x  # orthogonal step, like an SI gradient
  for target in (1e-6, 1e-8, 1e-10):
    step = np.sqrt(2 * target) * np.linalg.norm(x) / np.linalg.norm(direction)
    x_next = x + step * direction
    exact = 1 - x @ x_next / (np.linalg.norm(x) * np.linalg.norm(x_next))  # float64
    params = {"w": {"kernel": jnp.asarray(x, jnp.float32)}}
    new = {"w": {"kernel": jnp.asarray(x_next, jnp.float32)}}
    grads = {"w": {"kernel": jnp.zeros_like(params["w"]["kernel"])}}
    m = metrics.dynamics_metrics(params, grads, new, 0.1, {"w": (("w", "kernel"),)})
    # float32 storage of x_next itself perturbs 1 - cos by ~1e-14 absolute
    assert float(m["cosine_distance"]) == pytest.approx(exact, rel=2e-2, abs=1e-13)
    if target <= 1e-8:
      naive = 1 - float(m["adjacent_cosine"])
      assert abs(naive - exact) > 0.3 * exact  # the plain cosine is noise here


def test_fixed_effective_lr_run_logs_and_follows_eq3():
  """With optim.fixed_effective_lr the step is eta_t = eta~ rho_t^2: the logged effective
  LR eta_t / rho_t^2 is eta~ at every step, and Eq. (3) holds with that eta_t."""
  elr, wd = 0.0025, 0.01
  records = run_steps(20, lr=elr, wd=wd, fixed_effective_lr=True)
  worst = 0.0
  for now, nxt in zip(records, records[1:]):
    rho_sq = now["weight_norm"] ** 2
    eta = elr * rho_sq
    assert now["effective_lr"] == pytest.approx(elr, rel=1e-5)
    for prefix in ("", "conv_1/", "conv_3/"):
      rho_g, g = now[prefix + "weight_norm"], now[prefix + "grad_norm"]
      # per group: the same step eta_t over the group's own norm
      assert now[prefix + "effective_lr"] == pytest.approx(eta / rho_g**2, rel=1e-5)
      predicted = (1 - eta * wd) ** 2 * rho_g**2 + eta**2 * g**2
      worst = max(worst, abs(nxt[prefix + "weight_norm"] ** 2 / predicted - 1))
  assert worst < 1e-5
  # the norm moves, so a step computed with rho_0 would differ from rho_t's
  norms = [r["weight_norm"] for r in records]
  assert max(norms) / min(norms) > 1.01
