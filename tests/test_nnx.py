"""flax.nnx models with si_jax: a conv net with BatchNorm trains with ``nnx.Optimizer``
and the library optimizer (the update checked against Eq. (2) by hand), its
``si_metrics`` on nnx States equal a numpy computation, and the live-reference trap
(``nnx.state(model)`` taken before the update) raises instead of reporting x_{t+1}."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import si_jax
from si_jax import metrics, optim
from si_jax.models import ParamGroups

LR, WD, STEPS = 0.5, 0.01, 6
SI_GROUPS = {"conv": (("conv", "kernel"),)}


class BNConvNet(nnx.Module):
  """conv -> BatchNorm (no affine) -> relu -> mean-pool -> linear: the conv kernel is SI."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv = nnx.Conv(1, 8, (3, 3), use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(8, use_scale=False, use_bias=False, rngs=rngs)
    self.head = nnx.Linear(8, 10, rngs=rngs)

  def __call__(self, x_NHWC):
    h = jax.nn.relu(self.bn(self.conv(x_NHWC)))
    return self.head(jnp.mean(h, axis=(1, 2)))


def _batch():
  kx, ky = jax.random.split(jax.random.key(1))
  return jax.random.normal(kx, (32, 8, 8, 1)), jax.random.randint(ky, (32,), 0, 10)


def _model_and_optimizer():
  model = BNConvNet(nnx.Rngs(0))
  groups = ParamGroups.from_si_groups(SI_GROUPS, train_non_si=True)
  tx = optim.make_optimizer(nnx.state(model, nnx.Param), groups, lr=LR, wd=WD)
  return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def _loss(model, x, y):
  return metrics.cross_entropy(model(x), y).mean()


@nnx.jit
def _train_step(model, optimizer, x, y):
  loss, grads = nnx.value_and_grad(_loss)(model, x, y)  # BatchNorm updates its stats
  old = nnx.to_pure_dict(nnx.state(model, nnx.Param))  # x_t, a snapshot
  optimizer.update(model, grads)
  m = metrics.si_metrics(old, grads, nnx.state(model, nnx.Param), SI_GROUPS,
                         opt_state=optimizer.opt_state)
  return loss, old, nnx.to_pure_dict(nnx.state(grads)), m


@pytest.fixture(scope="module")
def run():
  model, optimizer = _model_and_optimizer()
  x, y = _batch()
  out = [_train_step(model, optimizer, x, y) for _ in range(STEPS)]
  return model, out


def _f64(tree, *path):
  for k in path:
    tree = tree[k]
  return np.asarray(tree, np.float64)


def test_trains_with_nnx_optimizer_and_batch_stats(run):
  model, out = run
  losses = [float(o[0]) for o in out]
  assert losses[-1] < losses[0] - 0.1, losses
  assert float(jnp.max(jnp.abs(model.bn.mean[...]))) > 0  # running stats moved from 0
  assert not np.allclose(np.asarray(model.bn.var[...]), 1.0)


def test_update_is_eq2_with_decay_on_the_si_kernel(run):
  _, out = run
  (_, old, grads, _), (_, new, _, _) = out[-2], out[-1]
  for path in (("conv", "kernel"), ("head", "kernel"), ("head", "bias")):
    x, g = _f64(old, *path), _f64(grads, *path)
    np.testing.assert_allclose(_f64(new, *path), x - LR * (g + WD * x), rtol=1e-5, atol=1e-7)


def test_optimizer_built_from_a_pure_dict_serves_nnx_optimizer():
  model = BNConvNet(nnx.Rngs(0))
  groups = ParamGroups.from_si_groups(SI_GROUPS, train_non_si=False)  # head frozen
  old = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  optimizer = nnx.Optimizer(model, optim.make_optimizer(old, groups, lr=LR, wd=WD),
                            wrt=nnx.Param)
  grads = nnx.grad(_loss)(model, *_batch())
  optimizer.update(model, grads)
  x, g = _f64(old, "conv", "kernel"), np.asarray(grads["conv"]["kernel"][...], np.float64)
  np.testing.assert_allclose(np.asarray(model.conv.kernel[...]), x - LR * (g + WD * x),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(model.head.kernel[...], old["head"]["kernel"])


def _hand_metrics(old_kernel, new_kernel):
  x, z = np.ravel(old_kernel).astype(np.float64), np.ravel(new_kernel).astype(np.float64)
  rho = np.linalg.norm(x)
  cos = x @ z / (rho * np.linalg.norm(z))
  return {"weight_norm": rho, "effective_lr": LR / rho**2,
          "angular_update": np.arccos(np.clip(cos, -1, 1))}


def test_si_metrics_on_nnx_state_equal_numpy(run):
  _, out = run
  (_, old, _, m), (_, new, _, _) = out[-2], out[-1]
  hand = _hand_metrics(_f64(old, "conv", "kernel"), _f64(new, "conv", "kernel"))
  assert hand["angular_update"] > 1e-4  # a real step, not the trap's zero
  for k, v in hand.items():
    np.testing.assert_allclose(float(m[k]), v, rtol=1e-5, atol=1e-5, err_msg=k)
  np.testing.assert_allclose(float(m["lr"]), LR, rtol=1e-6)


def test_si_metrics_take_nnx_states_of_variables():
  model, optimizer = _model_and_optimizer()
  x, y = _batch()
  grads = nnx.grad(_loss)(model, x, y)
  old = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))  # new Variables: a snapshot
  optimizer.update(model, grads)
  new = nnx.state(model, nnx.Param)
  m = metrics.si_metrics(old, grads, new, SI_GROUPS, opt_state=optimizer.opt_state)
  hand = _hand_metrics(old["conv"]["kernel"][...], new["conv"]["kernel"][...])
  for k, v in hand.items():
    np.testing.assert_allclose(float(m[k]), v, rtol=1e-5, atol=1e-5, err_msg=k)


def test_param_groups_check_reads_an_nnx_state():
  state = nnx.state(BNConvNet(nnx.Rngs(0)), nnx.Param)
  ParamGroups.from_si_groups(SI_GROUPS).check(state)  # ('conv', 'kernel') is there
  with pytest.raises(ValueError, match=r"not in the model: \[\('conv', 'weight'\)\]"):
    ParamGroups.from_si_groups({"conv": (("conv", "weight"),)}).check(state)


def test_find_si_groups_with_a_merged_copy():
  """The README's pattern: the function merges a copy, so BatchNorm writes no outer state."""
  model = BNConvNet(nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  apply = lambda p, x: nnx.merge(graphdef, p, rest, copy=True)(x)
  assert si_jax.find_si_groups(apply, params, _batch()[0][:16]) == SI_GROUPS
  assert float(jnp.max(jnp.abs(model.bn.mean[...]))) == 0  # the model's stats untouched


@pytest.mark.parametrize("new_as", ["state", "pure_dict"])
def test_live_reference_raises(new_as):
  model, optimizer = _model_and_optimizer()
  x, y = _batch()
  grads = nnx.grad(_loss)(model, x, y)
  live = nnx.state(model, nnx.Param)  # references, updated in place below
  optimizer.update(model, grads)
  new = nnx.state(model, nnx.Param)
  new = nnx.to_pure_dict(new) if new_as == "pure_dict" else new
  hint = r"live references.*nnx.to_pure_dict\(nnx.state\(model, nnx.Param\)\)"
  with pytest.raises(ValueError, match=hint):
    metrics.si_metrics(live, grads, new, SI_GROUPS, lr=LR)


def test_live_reference_raises_inside_nnx_jit():
  model, optimizer = _model_and_optimizer()

  @nnx.jit
  def step(model, optimizer, x, y):
    grads = nnx.grad(_loss)(model, x, y)
    live = nnx.state(model, nnx.Param)
    optimizer.update(model, grads)
    return metrics.si_metrics(live, grads, nnx.state(model, nnx.Param), SI_GROUPS, lr=LR)

  with pytest.raises(ValueError, match="live references"):
    step(model, optimizer, *_batch())
