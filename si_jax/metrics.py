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
quantities per SI group (per layer for the ConvNet). A tensor in several groups counts
once in the union.

``si_metrics`` is the entry point for any optax chain and any training loop (a model
of the user's, groups from ``si_jax.find_si_groups``): the same norms, the effective
LR where the learning rate is known (given, or read from an ``optax.inject_hyperparams``
state), and the angular update actually taken, so that momentum and Adam runs get a
measured rotation beside eta / rho^2.
"""

from __future__ import annotations

import math

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from si_jax.models import ParamPath, get_path
from si_jax.optim import sq_norm
from si_jax.si_groups import check_groups, check_in_params

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
  """All dynamics metrics for the SI union and for each SI group (see module doc).
  Raises TypeError / ValueError for no group, an empty group or a path given as a
  string (``si_groups.check_groups``): the union's norm would be 0 and eta / rho^2 inf."""
  check_groups(si_groups)
  take = lambda tree, paths: [get_path(tree, p) for p in paths]
  all_paths = tuple(dict.fromkeys(p for paths in si_groups.values() for p in paths))
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
  ``train_effective_lr`` eta / rho^2, for the SI union and per SI group. Raises as
  ``dynamics_metrics`` for malformed groups."""
  check_groups(si_groups)
  take = lambda tree, paths: [get_path(tree, p) for p in paths]

  def group(paths):
    rho, grad_norm = jnp.sqrt(sq_norm(take(params, paths))), jnp.sqrt(sq_norm(take(mean_grads, paths)))
    return {"train_grad_norm": grad_norm, "train_weight_norm": rho,
            "train_effective_grad_norm": rho * grad_norm, "train_effective_lr": lr / jnp.square(rho)}

  out = group(tuple(dict.fromkeys(p for paths in si_groups.values() for p in paths)))
  if len(si_groups) > 1:
    for name, paths in si_groups.items():
      out.update({f"{name}/{k}": v for k, v in group(paths).items()})
  return out


def injected_hyperparams(opt_state) -> dict[str, Any]:
  """The hyperparameters of the first ``optax.inject_hyperparams`` state found in
  ``opt_state`` (depth first through chains and wrappers), {} if none."""
  if hasattr(opt_state, "hyperparams"):
    return dict(opt_state.hyperparams)
  if isinstance(opt_state, (tuple, list)):
    for sub in opt_state:
      found = injected_hyperparams(sub)
      if found:
        return found
  return {}


def equilibrium_angular_update(lr, wd, momentum=0.0):
  """The angular update per step at equilibrium: sqrt(2 eta lam) for SGD and
  sqrt(2 eta lam / (1 + mu)) with momentum mu (Wan et al. 2021; Kosson et al. 2024).

  Works on Python floats (ValueError for lr <= 0 or wd < 0) and, inside jit, on traced
  hyperparameters read from an optimizer state (returns a jnp scalar then)."""
  if not any(isinstance(v, jax.core.Tracer) for v in (lr, wd, momentum)):
    lr, wd, momentum = float(lr), float(wd), float(momentum)
    if not lr > 0 or not wd >= 0:
      raise ValueError(f"need lr > 0 and wd >= 0, got lr={lr!r}, wd={wd!r}")
    return math.sqrt(2 * lr * wd / (1 + momentum))
  return jnp.sqrt(2 * lr * wd / (1 + momentum))


def _angular_update(xs, new_xs) -> tuple[jax.Array, jax.Array]:
  """(rho_t, angle between x_t and x_{t+1}): 2 asin(||x_{t+1}/rho_{t+1} - x_t/rho_t|| / 2),
  exact for unit vectors and resolved down to float32's 1e-7 rad, unlike arccos."""
  rho, rho_next = jnp.sqrt(sq_norm(xs)), jnp.sqrt(sq_norm(new_xs))
  chord = jnp.sqrt(sum(jnp.sum(jnp.square(_f32(b) / rho_next - _f32(a) / rho))
                       for a, b in zip(xs, new_xs)))
  return rho, 2 * jnp.arcsin(jnp.minimum(chord / 2, 1.0))


def _channel_stats(xs, new_xs, lr) -> dict[str, jax.Array]:
  """Per output channel c (last axis, the members' slices c together): rho_c, eta / rho_c^2
  and the angular update of channel c, each as mean / min / max over the channels."""
  cols = lambda x: jnp.reshape(_f32(x), (-1, x.shape[-1]))
  rho = jnp.sqrt(sum(jnp.sum(jnp.square(cols(x)), 0) for x in xs))
  rho_next = jnp.sqrt(sum(jnp.sum(jnp.square(cols(x)), 0) for x in new_xs))
  chord = jnp.sqrt(sum(jnp.sum(jnp.square(cols(b) / rho_next - cols(a) / rho), 0)
                       for a, b in zip(xs, new_xs)))
  values = {"channel_weight_norm": rho,
            "channel_angular_update": 2 * jnp.arcsin(jnp.minimum(chord / 2, 1.0))}
  if lr is not None:
    values["channel_effective_lr"] = lr / jnp.square(rho)
  return {f"{k}_{stat}": fn(v) for k, v in values.items()
          for stat, fn in (("mean", jnp.mean), ("min", jnp.min), ("max", jnp.max))}


def si_metrics(params, grads, new_params, si_groups: Mapping[str, tuple[ParamPath, ...]],
               lr=None, opt_state=None, *, wd=None, momentum=None,
               per_channel: bool = False) -> dict[str, jax.Array]:
  """Dynamics metrics of one step x_t -> x_{t+1} of any optimizer; jittable.

  For the union of the SI tensors (each once; groups from ``find_si_groups`` may
  overlap, and then the union is not itself SI: read the per-group keys) and, with
  several groups, for each group as ``{group}/{key}``:
  ``weight_norm`` rho_t, ``grad_norm`` ||grad f(x_t)|| (``grads``: the loss gradient),
  ``effective_grad_norm`` rho_t ||grad f(x_t)|| (property (1b)), ``angular_update`` the
  angle between x_t and x_{t+1} actually taken, and, where eta is known,
  ``effective_lr`` eta / rho_t^2 (Eq. (3)'s eta~; for Adam only a reference).

  eta is ``lr``, else read from ``opt_state`` (the state ``tx.update`` returned for
  this step) where ``optax.inject_hyperparams`` holds ``learning_rate`` (times
  si_jax's ``lr_multiplier`` under a schedule); likewise ``wd`` (``weight_decay``) and
  ``momentum`` (si_jax's ``fixed_effective_lr`` injects eta~ itself: pass ``lr``). Where
  eta is known it is logged as ``lr``; where lambda is known too,
  ``equilibrium_angular_update`` sqrt(2 eta lam / (1 + mu)) (the SGD / heavy-ball
  prediction of ``theory.equilibrium_angular_update``) is added.

  ``per_channel``: behind a batch norm each output channel (last axis of a kernel,
  with the same slice of the group's other tensors) is SI on its own; per group,
  ``channel_weight_norm``, ``channel_effective_lr`` and ``channel_angular_update``
  as ``_mean`` / ``_min`` / ``_max`` over channels (groups whose tensors differ in
  their last axis are skipped). Raises TypeError for a path given as a string, ValueError
  for no group, an empty one (rho 0: eta / rho^2 inf) or a path not in ``params``.
  """
  check_in_params(check_groups(si_groups), params)
  hp = injected_hyperparams(opt_state) if opt_state is not None else {}
  if lr is None and "learning_rate" in hp:
    lr = hp["learning_rate"] * hp.get("lr_multiplier", 1.0)
  wd = hp.get("weight_decay") if wd is None else wd
  momentum = hp.get("momentum", 0.0) if momentum is None else momentum
  take = lambda tree, paths: [get_path(tree, p) for p in paths]

  def group(paths):
    xs, new_xs = take(params, paths), take(new_params, paths)
    rho, angle = _angular_update(xs, new_xs)
    grad_norm = jnp.sqrt(sq_norm(take(grads, paths)))
    out = {"weight_norm": rho, "grad_norm": grad_norm, "effective_grad_norm": rho * grad_norm,
           "angular_update": angle}
    if lr is not None:
      out["effective_lr"] = lr / jnp.square(rho)
    return out

  out = group(tuple(dict.fromkeys(p for paths in si_groups.values() for p in paths)))
  if lr is not None:
    out["lr"] = jnp.asarray(lr, jnp.float32)
  if lr is not None and wd is not None:
    out["equilibrium_angular_update"] = jnp.asarray(equilibrium_angular_update(lr, wd, momentum))
  for name, paths in si_groups.items():
    if len(si_groups) > 1:
      out.update({f"{name}/{k}": v for k, v in group(paths).items()})
    xs = take(params, paths)
    if per_channel and all(x.ndim and x.shape[-1] == xs[0].shape[-1] for x in xs):
      stats = _channel_stats(xs, take(new_params, paths), lr)
      out.update({f"{name}/{k}": v for k, v in stats.items()})
  return out


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy with integer labels."""
  logp = jax.nn.log_softmax(_f32(logits))
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example 0/1 correctness of the arg-max prediction."""
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
