"""Dynamics metrics computed inside the jitted train step.

The returned keys are the public interface of the logs (plots, phase analysis and
theory overlays read them by name):

* ``weight_norm``          rho_t = ||x_t|| over the SI parameters, before the step.
* ``grad_norm``            ||grad f(x_t)|| over the SI parameters (loss gradient only,
                           without the weight-decay term).
* ``effective_grad_norm``  g~_t = rho_t ||grad f(x_t)||  (property (1b)).
* ``effective_lr``         eta~_t = eta / rho_t^2.
* ``adjacent_cosine``      cos(x_t, x_{t+1}) = <x_t, x_{t+1}> / (rho_t rho_{t+1}),
                           plain float32 formula; it saturates near 1 - 6e-8.
* ``cosine_distance``      1 - cos(x_t, x_{t+1}), computed stably as
                           ||x_{t+1}/rho_{t+1} - x_t/rho_t||^2 / 2 (exact identity for
                           unit vectors), so the phase-B values of 1e-7 and below
                           (Fig. 13) are resolved instead of rounded to 0.

The keys above are for the union of all SI groups; ``{group}/{key}`` gives the same
quantities per SI group (per layer for the ConvNet).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from si_jax.models import ParamPath, get_path
from si_jax.optim import sq_norm

DYNAMICS_KEYS = (
    "weight_norm",
    "grad_norm",
    "effective_grad_norm",
    "effective_lr",
    "adjacent_cosine",
    "cosine_distance",
)


def _f32(x):
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _group_dynamics(xs, gs, new_xs, lr) -> dict[str, jax.Array]:
  """Metrics for one set of arrays (x_t, grad f(x_t), x_{t+1})."""
  rho = jnp.sqrt(sq_norm(xs))
  rho_next = jnp.sqrt(sq_norm(new_xs))
  grad_norm = jnp.sqrt(sq_norm(gs))
  inner = sum(jnp.vdot(_f32(a), _f32(b)) for a, b in zip(xs, new_xs))
  unit_diff_sq = sum(
      jnp.sum(jnp.square(_f32(b) / rho_next - _f32(a) / rho)) for a, b in zip(xs, new_xs)
  )
  return {
      "weight_norm": rho,
      "grad_norm": grad_norm,
      "effective_grad_norm": rho * grad_norm,
      "effective_lr": lr / jnp.square(rho),
      "adjacent_cosine": inner / (rho * rho_next),
      "cosine_distance": unit_diff_sq / 2,
  }


def dynamics_metrics(
    params,
    grads,
    new_params,
    lr: jax.Array,
    si_groups: Mapping[str, tuple[ParamPath, ...]],
) -> dict[str, jax.Array]:
  """All dynamics metrics for the SI union and for each SI group (see module doc)."""
  take = lambda tree, paths: [get_path(tree, p) for p in paths]
  all_paths = tuple(p for paths in si_groups.values() for p in paths)
  out = _group_dynamics(take(params, all_paths), take(grads, all_paths),
                        take(new_params, all_paths), lr)
  if len(si_groups) > 1:
    for name, paths in si_groups.items():
      group = _group_dynamics(take(params, paths), take(grads, paths), take(new_params, paths), lr)
      out.update({f"{name}/{k}": v for k, v in group.items()})
  return out


def full_pass_metrics(params, mean_grads, lr: jax.Array,
                      si_groups: Mapping[str, tuple[ParamPath, ...]]) -> dict[str, jax.Array]:
  """Appendix B's extra pass, from the gradient of the mean train loss over the whole
  training set at the epoch's weights: ``train_grad_norm`` ||grad L||,
  ``train_weight_norm`` rho, ``train_effective_grad_norm`` rho ||grad L|| and
  ``train_effective_lr`` eta / rho^2, for the SI union and per SI group."""
  take = lambda tree, paths: [get_path(tree, p) for p in paths]

  def group(paths):
    rho, grad_norm = jnp.sqrt(sq_norm(take(params, paths))), jnp.sqrt(sq_norm(take(mean_grads, paths)))
    return {"train_grad_norm": grad_norm, "train_weight_norm": rho,
            "train_effective_grad_norm": rho * grad_norm, "train_effective_lr": lr / jnp.square(rho)}

  out = group(tuple(p for paths in si_groups.values() for p in paths))
  if len(si_groups) > 1:
    for name, paths in si_groups.items():
      out.update({f"{name}/{k}": v for k, v in group(paths).items()})
  return out


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy with integer labels."""
  logp = jax.nn.log_softmax(_f32(logits))
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example 0/1 correctness of the arg-max prediction."""
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
