"""Optimizer updates against the rules written out by hand (numpy, float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import models, optim

from conftest import make
from helpers import run_optimizer as run


def setup(train_non_si=False, seed=0):
  _, v, g = make("convnet_si", width=4, train_non_si=train_non_si, norm="batch")
  params = v["params"]
  keys = jax.random.split(jax.random.key(seed), 8)
  grads_seq = [jax.tree.map(lambda x, k=k: jax.random.normal(k, x.shape), params) for k in keys[:4]]
  return params, g, grads_seq


def flat(tree):
  return {p: np.asarray(x, np.float64) for p, x in models.flatten_with_paths(tree)}


def hand(params, grads_seq, rule, trainable):
  """Iterates ``rule(x, g, state) -> (x, state)`` on every trainable leaf."""
  xs, states, out = flat(params), {}, []
  for grads in grads_seq:
    gs = flat(grads)
    for p in xs:
      if trainable[p]:
        xs[p], states[p] = rule(xs[p], gs[p], states.get(p))
    out.append(dict(xs))
  return out


def assert_close(got_seq, want_seq, rtol=2e-6, atol=1e-7):
  for got, want in zip(got_seq, want_seq):
    got = flat(got)
    for p in want:
      np.testing.assert_allclose(got[p], want[p], rtol=rtol, atol=atol, err_msg=str(p))


LR, WD, MU = 0.1, 0.01, 0.9


def test_sgd_is_eq2_and_modes_coincide_without_momentum():
  params, g, grads = setup()
  trainable = dict(models.flatten_with_paths(g.trainable_mask(params)))
  want = hand(params, grads, lambda x, gr, s: (x - LR * (gr + WD * x), None), trainable)
  for mode in ("coupled", "decoupled"):
    got = run(optim.make_optimizer(params, g, lr=LR, wd=WD, wd_mode=mode), params, grads)
    assert_close(got, want)
  coupled = run(optim.make_optimizer(params, g, lr=LR, wd=WD, wd_mode="coupled"), params, grads)
  decoupled = run(optim.make_optimizer(params, g, lr=LR, wd=WD, wd_mode="decoupled"), params, grads)
  for a, b in zip(coupled, decoupled):
    jax.tree.map(np.testing.assert_array_equal, a, b)
  # frozen (non-SI) parameters are neither updated nor decayed
  for p in ("classifier",):
    np.testing.assert_array_equal(got[-1][p]["kernel"], params[p]["kernel"])
    np.testing.assert_array_equal(got[-1][p]["bias"], params[p]["bias"])


def test_momentum_coupled_is_torch_sgd():
  params, g, grads = setup()
  trainable = dict(models.flatten_with_paths(g.trainable_mask(params)))

  def rule(x, gr, m):
    d = gr + WD * x
    m = d if m is None else MU * m + d  # torch: buf = d at the first step, dampening 0
    return x - LR * m, m

  got = run(optim.make_optimizer(params, g, lr=LR, wd=WD, momentum=MU), params, grads)
  assert_close(got, hand(params, grads, rule, trainable))


def test_momentum_decoupled_is_sgdw():
  params, g, grads = setup()
  trainable = dict(models.flatten_with_paths(g.trainable_mask(params)))

  def rule(x, gr, m):
    m = gr if m is None else MU * m + gr
    return (1 - LR * WD) * x - LR * m, m

  got = run(optim.make_optimizer(params, g, lr=LR, wd=WD, momentum=MU, wd_mode="decoupled"),
            params, grads)
  assert_close(got, hand(params, grads, rule, trainable))
  coupled = run(optim.make_optimizer(params, g, lr=LR, wd=WD, momentum=MU), params, grads)
  diff = np.abs(flat(coupled[-1])[("conv_1", "kernel")] - flat(got[-1])[("conv_1", "kernel")])
  assert diff.max() > 1e-5  # with momentum the two modes really differ


@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_adam(mode):
  params, g, grads = setup(train_non_si=True)
  trainable = dict(models.flatten_with_paths(g.trainable_mask(params)))
  b1, b2, eps, lr, wd = 0.9, 0.999, 1e-8, 1e-3, 0.1

  def rule(x, gr, s):
    m, v, t = s or (0.0, 0.0, 0)
    d = gr + wd * x if mode == "coupled" else gr
    t += 1
    m, v = b1 * m + (1 - b1) * d, b2 * v + (1 - b2) * d * d
    step = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    if mode == "decoupled":
      step = step + wd * x
    return x - lr * step, (m, v, t)

  got = run(optim.make_optimizer(params, g, name="adam", lr=lr, wd=wd, wd_mode=mode), params, grads)
  assert_close(got, hand(params, grads, rule, trainable), rtol=1e-5, atol=1e-6)


def test_train_non_si_updates_and_decays_everything():
  params, g, grads = setup(train_non_si=True)
  trainable = dict(models.flatten_with_paths(g.trainable_mask(params)))
  assert all(trainable.values())
  want = hand(params, grads, lambda x, gr, s: (x - LR * (gr + WD * x), None), trainable)
  assert_close(run(optim.make_optimizer(params, g, lr=LR, wd=WD), params, grads), want)


def si_norm(params, g):
  return float(np.sqrt(sum(np.sum(np.square(models.get_path(params, p))) for p in g.si_paths)))


@pytest.mark.parametrize("target", [None, 3.0])
def test_fixed_norm_projection(target):
  params, g, grads = setup()
  rho0 = si_norm(params, g) if target is None else target
  tx = optim.make_optimizer(params, g, lr=LR, wd=WD, fix_si_norm=True, si_norm=target)
  got = run(tx, params, grads)
  trainable = dict(models.flatten_with_paths(g.trainable_mask(params)))
  xs = flat(params)
  for step, grads_t in enumerate(grads):
    gs = flat(grads_t)
    for p in xs:
      if trainable[p]:
        xs[p] = xs[p] - LR * (gs[p] + WD * xs[p])
    scale = rho0 / np.sqrt(sum(np.sum(xs[p] ** 2) for p in g.si_paths))
    for p in g.si_paths:
      xs[p] = xs[p] * scale
    assert si_norm(got[step], g) == pytest.approx(rho0, rel=1e-6)
    assert_close([got[step]], [xs], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("momentum", [0.0, MU])
def test_fixed_effective_lr_several_steps(momentum):
  """eta_t = eta~ rho_t^2 with rho_t the SI norm *at step t*, for 4 steps (the norm
  changes by ~10% a step here); the trainable non-SI parameters step with eta~ itself."""
  params, g, grads = setup(train_non_si=True)
  elr = 0.002
  tx = optim.make_optimizer(params, g, lr=elr, wd=WD, momentum=momentum, fixed_effective_lr=True)
  got = run(tx, params, grads)
  si = set(g.si_paths)
  xs, ms, want, rho_sq_seq = flat(params), {}, [], []
  for grads_t in grads:
    gs = flat(grads_t)
    rho_sq = sum(np.sum(xs[p] ** 2) for p in si)  # rho_t^2, float64
    rho_sq_seq.append(rho_sq)
    for p in xs:
      d = gs[p] + WD * xs[p]
      ms[p] = d if p not in ms else momentum * ms[p] + d
      xs[p] = xs[p] - elr * (rho_sq if p in si else 1.0) * ms[p]
    want.append(dict(xs))
  assert_close(got, want, rtol=1e-5, atol=1e-6)
  assert max(rho_sq_seq) / min(rho_sq_seq) > 1.2  # rho_0^2 would be far off


def test_injected_hyperparameters_drive_the_update():
  """Values written into the state (a sweep member's, or on resume) are the ones used."""
  params, g, grads = setup()
  tx = optim.make_optimizer(params, g, lr=0.3, wd=0.02, momentum=0.5)
  state = tx.init(params)
  hp = optim.hyperparams(state)
  assert (float(hp["learning_rate"]), float(hp["weight_decay"]), float(hp["momentum"])) == \
      pytest.approx((0.3, 0.02, 0.5))
  state = optim.with_hyperparams(state, learning_rate=LR, weight_decay=WD, momentum=MU)
  update = jax.jit(tx.update)
  got, p = [], params
  for grads_t in grads:
    updates, state = update(grads_t, state, p)
    p = jax.tree.map(jnp.add, p, updates)
    got.append(p)
  trainable = dict(models.flatten_with_paths(g.trainable_mask(params)))

  def rule(x, gr, m):
    d = gr + WD * x
    m = d if m is None else MU * m + d
    return x - LR * m, m

  assert_close(got, hand(params, grads, rule, trainable))


@pytest.mark.parametrize("kwargs,field", [
    (dict(lr=0.0), "optim.lr"), (dict(lr=-1.0), "optim.lr"), (dict(wd=-0.1), "optim.wd"),
    (dict(momentum=1.0), "optim.momentum"), (dict(name="rmsprop"), "optim.name"),
    (dict(wd_mode="l2"), "optim.wd_mode"), (dict(si_norm=-2.0, fix_si_norm=True), "optim.si_norm"),
])
def test_bad_optimizer_config(kwargs, field):
  # An error path: the message naming the config field is the behaviour under test.
  params, g, _ = setup()
  with pytest.raises(ValueError, match=field):
    optim.make_optimizer(params, g, **kwargs)


def test_a_fixed_norm_at_a_given_value_trains(tmp_path):
  """optim.si_norm set: the optimizer state holds its own copy of the target (the state is
  donated to the step; a shared buffer was donated twice), and the norm is held at it."""
  from si_jax import logs
  from si_jax.engine import train

  from helpers import tiny_config
  config = tiny_config(**{"optim.fix_si_norm": True, "optim.si_norm": 15.0, "train.epochs": 2})
  train.train_and_evaluate(config, str(tmp_path), progress=False)
  norms = [r["weight_norm"] for r in logs.read_run(str(tmp_path))]
  # in-step norms are the pre-update ones: epoch 1's first step still has the init's norm
  assert norms[0] < 15.0 and norms[1] == pytest.approx(15.0, rel=1e-5)
