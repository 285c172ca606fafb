"""Numerical checks of scale invariance and of Proposition 4 (appendix A.1).

For an SI group x_g: f(c x_g) = f(x_g) (property (1a)), <grad_g f(x), x_g> = 0 and
grad_g f(c x_g) = grad_g f(x) / c (property (1b)); Proposition 4: (c x_0, c^2 eta,
lambda / c^2) gives x'_t = c x_t. Expected residual sizes: docs/design_notes.md."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from si_jax import optim
from si_jax.models import ParamPath, get_path, set_path
from si_jax.si_groups import check_groups, check_paths

TINY = 1e-30


def check_scale(c: float) -> None:
  """Raises ValueError unless the rescaling factor ``c`` is positive."""
  if not c > 0:
    raise ValueError(f"the rescaling factor c must be positive, got {c!r}")


def scale_paths(params, paths: tuple[ParamPath, ...], c) -> dict:
  """``params`` with the leaves at ``paths`` multiplied by c (paths checked by ``check_paths``)."""
  check_paths(paths, "paths")
  for p in paths:
    params = set_path(params, p, get_path(params, p) * c)
  return params


def tree_norm(arrays) -> jax.Array:
  """The Euclidean norm of a list (or pytree) of arrays."""
  return jnp.sqrt(optim.sq_norm(arrays))


def group_residuals(
    loss_fn: Callable[[dict], jax.Array],
    params,
    paths: tuple[ParamPath, ...],
    c,
    base: tuple[jax.Array, dict] | None = None,
) -> dict[str, jax.Array]:
  """Relative residuals of the three identities for one jointly SI group.

  ``base`` is (f(x), grad f(x)) when already computed; ``c`` may be traced.

  Returns {'value': |f(c x) - f(x)| / |f(x)|, 'orthogonality': |<grad f(x), x>| /
  (||grad f(x)|| ||x||), 'grad_scaling': ||grad f(c x) - grad f(x) / c|| / ||grad f(x) / c||}."""
  check_paths(paths, "paths")
  value, grads = jax.value_and_grad(loss_fn)(params) if base is None else base
  scaled_value, scaled_grads = jax.value_and_grad(loss_fn)(scale_paths(params, paths, c))
  xs = [get_path(params, p) for p in paths]
  gs = [get_path(grads, p) for p in paths]
  sgs = [get_path(scaled_grads, p) for p in paths]
  inner = sum(jnp.vdot(g, x) for g, x in zip(gs, xs))
  return {
      "value": jnp.abs(scaled_value - value) / jnp.maximum(jnp.abs(value), TINY),
      "orthogonality": jnp.abs(inner) / jnp.maximum(tree_norm(gs) * tree_norm(xs), TINY),
      "grad_scaling": tree_norm([s - g / c for s, g in zip(sgs, gs)])
      / jnp.maximum(tree_norm(gs) / c, TINY),
  }


def invariance_residuals(
    loss_fn: Callable[[dict], jax.Array],
    params,
    si_groups: Mapping[str, tuple[ParamPath, ...]],
    c=2.0,
    per_group: bool = False,
) -> dict[str, jax.Array]:
  """``group_residuals`` of the union as ``invariance/{key}``; per group with ``per_group``."""
  check_groups(si_groups)
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
  diff = tree_norm([x - y for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))])
  return diff / jnp.maximum(tree_norm(jax.tree.leaves(b)), TINY)


def rescaled_hyperparams(lr: float, wd: float, c: float) -> tuple[float, float]:
  """Proposition 4: (eta, lambda) -> (c^2 eta, lambda / c^2) for x_0 -> c x_0."""
  check_scale(c)
  return c * c * lr, wd / (c * c)
