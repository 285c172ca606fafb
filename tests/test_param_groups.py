"""Parameter groups from find_si_groups' output (no last layer, overlapping groups), the
optimizer built on them, and si_metrics from any optax chain, all against hand
computations in float64."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from si_jax import metrics, optim
from si_jax.models import ParamGroups, get_path

from conftest import rng_images
from helpers import LayerNormMLP, paths  # the net find_si_groups is checked on

# find_si_groups' output for this net (derived by hand and checked in test_si_groups):
# dense_1/bias sits in two minimal groups.
FOUND = {
    "dense_0": paths("dense_0/bias", "dense_0/kernel"),
    "dense_1": paths("dense_1/bias", "dense_1/kernel"),
    "dense_1/bias+ln_0": paths("dense_1/bias", "ln_0/bias", "ln_0/scale"),
}
SI = {"dense_0", "dense_1", "ln_0"}  # top-level modules whose tensors are all SI


@pytest.fixture(scope="module")
def net():
  x = rng_images(32, (12,))
  y = np.arange(32) % 10
  module = LayerNormMLP()
  params = module.init(jax.random.key(0), x)["params"]
  loss = lambda p: metrics.cross_entropy(module.apply({"params": p}, x), y).mean()
  return module, params, x, jax.grad(loss)(params)


def leaves(tree):
  return {"/".join(str(k.key) for k in kp): np.asarray(v, np.float64)
          for kp, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_from_si_groups_allows_overlap_and_no_last_layer(net):
  _, params, _, _ = net
  groups = ParamGroups.from_si_groups(FOUND, train_non_si=False)
  groups.check(params)  # no last layer needed; the overlap is allowed
  assert groups.last_layer is None and not groups.disjoint
  assert len(groups.si_paths) == 6 and len(set(groups.si_paths)) == 6  # dense_1/bias once
  with pytest.raises(ValueError, match="overlap"):
    ParamGroups(FOUND).check(params)  # declared groups must stay disjoint
  ParamGroups({k: FOUND[k] for k in ("dense_0", "dense_1")}).check(params)  # last_layer None
  with pytest.raises(ValueError, match="not in the model"):
    ParamGroups.from_si_groups({"x": paths("dense_9/kernel")}).check(params)
  mask = leaves(groups.si_mask(params))
  assert {k for k, v in mask.items() if v} == {"/".join(p) for p in groups.si_paths}


@pytest.mark.parametrize("train_non_si", [False, True])
def test_optimizer_on_found_groups_is_eq2_by_hand(net, train_non_si):
  _, params, _, grads = net
  lr, wd = 0.3, 0.05
  groups = ParamGroups.from_si_groups(FOUND, train_non_si=train_non_si)
  tx = optim.make_optimizer(params, groups, name="sgd", lr=lr, wd=wd)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = leaves(optax.apply_updates(params, updates))
  x, g = leaves(params), leaves(grads)
  for k in x:
    if k.split("/")[0] in SI or train_non_si:  # Eq. (2): x - eta (grad + lambda x)
      np.testing.assert_allclose(new[k], x[k] - lr * (g[k] + wd * x[k]), rtol=1e-5, atol=1e-7)
    else:  # frozen: no step, no decay
      np.testing.assert_array_equal(new[k], x[k])


def _flat(tree, group):
  return np.concatenate([np.asarray(get_path(tree, p), np.float64).ravel() for p in group])


def _angle(a, b):
  return np.arccos(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("kind", ["momentum", "adamw"])
def test_si_metrics_from_an_optax_state(net, kind):
  _, params, _, grads = net
  lr, wd = 0.05, 1e-3
  if kind == "momentum":
    tx = optax.chain(optax.add_decayed_weights(wd),
                     optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=0.9))
  else:
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=lr, weight_decay=wd)
  state = tx.init(params)
  p = params
  for _ in range(3):  # a few steps, so momentum and Adam's moments matter
    updates, state = tx.update(grads, state, p)
    p, prev = optax.apply_updates(p, updates), p
  m = jax.jit(lambda a, g, b, s: metrics.si_metrics(
      a, g, b, FOUND, opt_state=s, wd=wd if kind == "momentum" else None))(prev, grads, p, state)
  mu = 0.9 if kind == "momentum" else 0.0  # adamw's state has no 'momentum'
  np.testing.assert_allclose(m["equilibrium_angular_update"], np.sqrt(2 * lr * wd / (1 + mu)),
                             rtol=1e-6)
  union = tuple(dict.fromkeys(q for g in FOUND.values() for q in g))
  for prefix, group in [("", union)] + [(f"{k}/", v) for k, v in FOUND.items()]:
    x, x_next = _flat(prev, group), _flat(p, group)
    rho = np.linalg.norm(x)
    np.testing.assert_allclose(m[prefix + "weight_norm"], rho, rtol=1e-6)
    np.testing.assert_allclose(m[prefix + "effective_lr"], lr / rho**2, rtol=1e-6)
    np.testing.assert_allclose(m[prefix + "effective_grad_norm"],
                               rho * np.linalg.norm(_flat(grads, group)), rtol=1e-5)
    np.testing.assert_allclose(m[prefix + "angular_update"], _angle(x, x_next), rtol=2e-4)


def test_si_metrics_lr_given_or_from_si_jax_schedule(net):
  _, params, _, grads = net
  groups = ParamGroups.from_si_groups(FOUND)
  m = metrics.si_metrics(params, grads, params, FOUND)
  assert "effective_lr" not in m and "lr" not in m and "equilibrium_angular_update" not in m
  assert float(m["angular_update"]) == 0.0
  m = metrics.si_metrics(params, grads, params, FOUND, lr=0.2, wd=0.01, momentum=0.5)
  np.testing.assert_allclose(m["equilibrium_angular_update"], np.sqrt(2 * 0.2 * 0.01 / 1.5))
  # 'step' schedule, T = 4: eta / 10 from update 1 on; the state after update t holds t's
  tx = optim.make_optimizer(params, groups, lr=0.4, wd=0.01, schedule="step",
                            schedule_factor=10.0, total_steps=4)
  state = tx.init(params)
  for expected in (0.4, 0.04):
    updates, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    m = metrics.si_metrics(params, grads, new, FOUND, opt_state=state)
    np.testing.assert_allclose(m["lr"], expected, rtol=1e-6)
    rho = np.linalg.norm(_flat(params, tuple(dict.fromkeys(q for g in FOUND.values() for q in g))))
    np.testing.assert_allclose(m["effective_lr"], expected / rho**2, rtol=1e-6)


class DenseBN(nn.Module):
  """Dense -> BatchNorm (batch statistics) -> relu -> Dense: each channel of dense's
  kernel is SI on its own."""

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(8, name="dense")(x)
    h = nn.relu(nn.BatchNorm(use_running_average=False, epsilon=0.0, name="bn")(h))
    return nn.Dense(3, name="head")(h)


def test_per_channel_metrics_by_hand():
  x = rng_images(16, (5,))
  module = DenseBN()
  variables = module.init(jax.random.key(1), x)
  params = variables["params"]
  f = lambda p: module.apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                             mutable=["batch_stats"])[0]
  kernel = np.asarray(params["dense"]["kernel"], np.float64)
  # each channel alone is SI: scaling kernel[:, 2] by 3 leaves f unchanged
  scaled = jax.tree.map(lambda a: a, params)
  scaled["dense"] = {**params["dense"], "kernel": params["dense"]["kernel"].at[:, 2].multiply(3.0)}
  np.testing.assert_allclose(f(scaled), f(params), rtol=1e-4, atol=1e-5)
  grads = jax.grad(lambda p: jnp.sum(f(p) ** 2))(params)
  lr = 0.1
  new = jax.tree.map(lambda a, g: a - lr * g, params, grads)
  group = {"dense": (("dense", "kernel"),)}
  m = metrics.si_metrics(params, grads, new, group, lr=lr, per_channel=True)
  new_kernel = np.asarray(new["dense"]["kernel"], np.float64)
  rho_c = np.linalg.norm(kernel, axis=0)
  angle_c = np.array([_angle(kernel[:, c], new_kernel[:, c]) for c in range(8)])
  for name, values in (("weight_norm", rho_c), ("effective_lr", lr / rho_c**2),
                       ("angular_update", angle_c)):
    for stat, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
      np.testing.assert_allclose(m[f"dense/channel_{name}_{stat}"], fn(values), rtol=2e-4)
  assert angle_c.max() > 3 * angle_c.min()  # the channels really rotate differently


def test_dynamics_metrics_count_a_shared_tensor_once(net):
  _, params, _, grads = net
  union = tuple(dict.fromkeys(q for g in FOUND.values() for q in g))
  m = metrics.dynamics_metrics(params, grads, params, 0.1, FOUND)
  rho = np.linalg.norm(_flat(params, union))  # dense_1/bias once: 6 tensors, not 7
  np.testing.assert_allclose(m["weight_norm"], rho, rtol=1e-6)
  np.testing.assert_allclose(m["effective_lr"], 0.1 / rho**2, rtol=1e-6)


@pytest.mark.parametrize("ablation", ["fix_si_norm", "fixed_effective_lr"])
def test_joint_rescaling_ablations_refuse_overlapping_groups(net, ablation):
  # the union of overlapping groups is not SI: projecting it onto a norm would rescale
  # dense_1/bias's branch twice, so the optimizer refuses; disjoint groups are accepted
  _, params, _, grads = net
  with pytest.raises(ValueError, match="overlap"):
    optim.make_optimizer(params, ParamGroups.from_si_groups(FOUND), lr=0.1, **{ablation: True})
  disjoint = ParamGroups.from_si_groups({k: FOUND[k] for k in ("dense_0", "dense_1")})
  tx = optim.make_optimizer(params, disjoint, lr=0.1, **{ablation: True})
  updates, _ = tx.update(grads, tx.init(params), params)
  assert np.isfinite(sum(float(jnp.sum(u)) for u in jax.tree.leaves(updates)))
