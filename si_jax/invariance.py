"""Numerical checks of scale invariance and of Proposition 4.

For a scale-invariant group x_g of a loss f (train-mode normalization, one batch):

* value:          f(c x_g) = f(x_g)                         (property (1a) of the paper)
* orthogonality:  <grad_g f(x), x_g> = 0                    (consequence of (1a))
* grad scaling:   grad_g f(c x_g) = grad_g f(x) / c         (property (1b))

and Proposition 4 (appendix A.1): (x_0, eta, lambda) and (c x_0, c^2 eta, lambda/c^2)
give iterates with x'_t = c x_t, hence the same function at every step.

All residuals are relative, so float32 round-off gives about 1e-7..1e-5. BN's epsilon
(1e-5, added to the variance of the pre-norm activations) breaks exactness: the
activation variance scales with rho_g^2, so the residual grows like
eps / var(activations) and reaches 1e-3 and more when a layer's norm shrinks by a
factor ~100 from a typical PyTorch init (see tests/test_invariance.py, which measures
this as a function of c).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from si_jax import optim
from si_jax.models import ParamPath, get_path, set_path

TINY = 1e-30


def check_scale(c: float) -> None:
  if not c > 0:
    raise ValueError(f"the rescaling factor c must be positive, got {c!r}")


def scale_paths(params, paths: tuple[ParamPath, ...], c) -> dict:
  """params with the leaves at ``paths`` multiplied by c."""
  for p in paths:
    params = set_path(params, p, get_path(params, p) * c)
  return params


def _norm(arrays) -> jax.Array:
  return jnp.sqrt(optim.sq_norm(arrays))


def group_residuals(
    loss_fn: Callable[[dict], jax.Array],
    params,
    paths: tuple[ParamPath, ...],
    c,
    base: tuple[jax.Array, dict] | None = None,
) -> dict[str, jax.Array]:
  """Relative residuals of the three identities for one jointly SI group.

  Returns {'value', 'orthogonality', 'grad_scaling'}:
    value         = |f(c x) - f(x)| / |f(x)|
    orthogonality = |<grad f(x), x>| / (||grad f(x)|| ||x||)   (a cosine)
    grad_scaling  = ||grad f(c x) - grad f(x) / c|| / ||grad f(x) / c||
  ``base`` is (f(x), grad f(x)) when already computed. ``c`` may be traced (check it
  with ``check_scale`` outside jit).
  """
  value, grads = jax.value_and_grad(loss_fn)(params) if base is None else base
  scaled_value, scaled_grads = jax.value_and_grad(loss_fn)(scale_paths(params, paths, c))
  xs = [get_path(params, p) for p in paths]
  gs = [get_path(grads, p) for p in paths]
  sgs = [get_path(scaled_grads, p) for p in paths]
  inner = sum(jnp.vdot(g, x) for g, x in zip(gs, xs))
  return {
      "value": jnp.abs(scaled_value - value) / jnp.maximum(jnp.abs(value), TINY),
      "orthogonality": jnp.abs(inner) / jnp.maximum(_norm(gs) * _norm(xs), TINY),
      "grad_scaling": _norm([s - g / c for s, g in zip(sgs, gs)])
      / jnp.maximum(_norm(gs) / c, TINY),
  }


def invariance_residuals(
    loss_fn: Callable[[dict], jax.Array],
    params,
    si_groups: Mapping[str, tuple[ParamPath, ...]],
    c=2.0,
    per_group: bool = False,
) -> dict[str, jax.Array]:
  """Residuals for the union of all SI groups (``invariance/value`` etc.), and per group.

  Scaling every SI group by the same c is itself a joint rescaling, so the union must
  satisfy the identities too; per-group checks cost one extra gradient per group.
  """
  if not isinstance(c, jax.core.Tracer):
    check_scale(c)
  base = jax.value_and_grad(loss_fn)(params)
  all_paths = tuple(p for paths in si_groups.values() for p in paths)
  res = group_residuals(loss_fn, params, all_paths, c, base)
  out = {f"invariance/{k}": v for k, v in res.items()}
  if per_group:
    for name, paths in si_groups.items():
      res = group_residuals(loss_fn, params, paths, c, base)
      out.update({f"invariance/{name}/{k}": v for k, v in res.items()})
  return out


def relative_distance(a, b) -> jax.Array:
  """||a - b|| / ||b|| over two pytrees of the same structure."""
  diff = _norm([x - y for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))])
  return diff / jnp.maximum(_norm(jax.tree.leaves(b)), TINY)


def rescaled_hyperparams(lr: float, wd: float, c: float) -> tuple[float, float]:
  """Proposition 4: (eta, lambda) -> (c^2 eta, lambda / c^2) for x_0 -> c x_0."""
  check_scale(c)
  return c * c * lr, wd / (c * c)


def proposition4_trajectory(config, c: float, num_steps: int, dataset=None,
                            probe_size: int = 256,
                            hyperparams: tuple[float, float] | None = None,
                            ) -> dict[str, "np.ndarray"]:
  """Trains (x_0, eta, lambda) and (c x_0, c^2 eta, lambda / c^2) side by side.

  Both runs see the same batches. Returns per-step arrays:
    ``loss_rel_diff``   |f_b - f_a| / f_a on the step's batch,
    ``param_rel_diff``  ||x_b / c - x_a|| / ||x_a|| over the SI parameters,
    ``logit_max_diff``  max |logits_b - logits_a| on a fixed probe batch (train-mode BN),
  which Proposition 4 says are 0 up to float round-off and BN's epsilon.
  ``hyperparams`` overrides (lr, wd) of the rescaled run (a negative control).
  """
  import numpy as np

  from si_jax import train

  check_scale(c)
  if dataset is None:
    dataset = train.load_dataset(config)
  task_a, state_a = train.create_task_and_state(config, dataset)
  config_b = config.copy_and_resolve_references()
  config_b.optim.lr, config_b.optim.wd = hyperparams or rescaled_hyperparams(
      config.optim.lr, config.optim.wd, c)
  task_b, state_b = train.create_task_and_state(config_b, dataset)
  si_paths = task_a.groups.si_paths
  state_b = state_b.replace(params=scale_paths(state_a.params, si_paths, c))
  step_a = jax.jit(functools.partial(train.train_step, task_a))
  step_b = jax.jit(functools.partial(train.train_step, task_b))
  x, y = jax.device_put(dataset.train_images), jax.device_put(dataset.train_labels)
  probe = x[:probe_size]

  @jax.jit
  def compare(sa, sb):
    la = train.loss_and_aux(task_a.model, sa.params, sa.batch_stats, probe, y[:probe_size])[1][0]
    lb = train.loss_and_aux(task_b.model, sb.params, sb.batch_stats, probe, y[:probe_size])[1][0]
    xa = [get_path(sa.params, p) for p in si_paths]
    xb = [get_path(sb.params, p) / c for p in si_paths]
    return jnp.max(jnp.abs(la - lb)), _norm([b - a for a, b in zip(xa, xb)]) / _norm(xa)

  out = {"loss_rel_diff": [], "param_rel_diff": [], "logit_max_diff": []}
  n, epoch, order = len(dataset.train_labels), 0, []
  for _ in range(num_steps):
    if not order:
      order = train.batches(train.epoch_order(train.order_seed(config), epoch, n),
                            config.train.batch_size,
                            config.train.drop_last)
      epoch += 1
    idx = order.pop(0)
    state_a, ma = step_a(state_a, x, y, idx)
    state_b, mb = step_b(state_b, x, y, idx)
    logit_diff, param_diff = compare(state_a, state_b)
    out["loss_rel_diff"].append(abs(float(mb["loss"]) - float(ma["loss"])) / float(ma["loss"]))
    out["param_rel_diff"].append(float(param_diff))
    out["logit_max_diff"].append(float(logit_diff))
  return {k: np.asarray(v) for k, v in out.items()}
