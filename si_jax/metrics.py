"""Dynamics metrics of one step x_t -> x_{t+1} over the SI parameters, in the jitted step.

Keys (the logs' interface): ``weight_norm`` rho_t, ``grad_norm`` ||grad f(x_t)||,
``effective_grad_norm`` rho_t ||grad f(x_t)|| (property (1b)), ``effective_lr`` eta / rho_t^2
(Eq. (3)), ``adjacent_cosine`` cos(x_t, x_{t+1}) (Eq. (8)) and ``cosine_distance`` 1 - cos,
for the union of the SI groups and per group as ``{group}/{key}``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from si_jax.models import ParamPath, get_path
from si_jax.models.layers import path_str
from si_jax.optim import sq_norm
from si_jax.si_groups import check_groups, check_in_params


def _f32(x):
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _group_dynamics(xs, gs, new_xs, lr) -> dict[str, jax.Array]:
  """The module's metrics for one set of arrays (x_t, grad f(x_t), x_{t+1})."""
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
  """The module's metrics for the SI union and per group (TypeError/ValueError: bad groups)."""
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
  """Appendix B: ``train_{weight_norm,grad_norm,effective_grad_norm,effective_lr}`` of grad L."""
  check_groups(si_groups)
  take = lambda tree, paths: [get_path(tree, p) for p in paths]

  def group(paths):
    rho = jnp.sqrt(sq_norm(take(params, paths)))
    grad_norm = jnp.sqrt(sq_norm(take(mean_grads, paths)))
    return {"train_grad_norm": grad_norm, "train_weight_norm": rho,
            "train_effective_grad_norm": rho * grad_norm,
            "train_effective_lr": lr / jnp.square(rho)}

  out = group(tuple(dict.fromkeys(p for paths in si_groups.values() for p in paths)))
  if len(si_groups) > 1:
    for name, paths in si_groups.items():
      out.update({f"{name}/{k}": v for k, v in group(paths).items()})
  return out


def distance_to_init(params, init_params, paths: tuple[ParamPath, ...]) -> dict[str, jax.Array]:
  """``angle_to_init`` 2 asin(||x/||x|| - x_0/||x_0|| || / 2), ``distance_to_init`` ||x - x_0||."""
  xs = [_f32(get_path(params, p)) for p in paths]
  x0s = [_f32(get_path(init_params, p)) for p in paths]
  rho, rho0 = jnp.sqrt(sq_norm(xs)), jnp.sqrt(sq_norm(x0s))
  chord = jnp.sqrt(sum(jnp.sum(jnp.square(a / rho - b / rho0)) for a, b in zip(xs, x0s)))
  return {"angle_to_init": 2 * jnp.arcsin(jnp.minimum(chord / 2, 1.0)),
          "distance_to_init": jnp.sqrt(sum(jnp.sum(jnp.square(a - b)) for a, b in zip(xs, x0s)))}


def rademacher_probes(key: jax.Array, params, mask, num: int):
  """``num`` stacked probe trees, entries +-1 where ``mask``, 0 elsewhere (Hutchinson 1989)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  probes = [jax.random.rademacher(k, (num, *x.shape), jnp.float32) if m
            else jnp.zeros((num, *x.shape), jnp.float32)
            for k, m, x in zip(keys, jax.tree.leaves(mask), leaves)]
  return jax.tree.unflatten(treedef, probes)


def hessian_quadratic_forms(loss_fn, params, probes) -> jax.Array:
  """v_i^T H v_i for each stacked probe v_i; over Rademacher probes their mean estimates tr H."""
  grad_fn = jax.grad(loss_fn)

  def one(v):
    v = jax.tree.map(lambda a, x: a.astype(x.dtype), v, params)
    hv = jax.jvp(grad_fn, (params,), (v,))[1]
    return sum(jnp.vdot(_f32(a), _f32(b)) for a, b in zip(jax.tree.leaves(v),
                                                          jax.tree.leaves(hv)))

  return jax.lax.map(one, probes)


def injected_hyperparams(opt_state) -> dict[str, Any]:
  """The first ``optax.inject_hyperparams`` state's hyperparameters (depth first), or {}."""
  if hasattr(opt_state, "hyperparams"):
    return dict(opt_state.hyperparams)
  if isinstance(opt_state, (tuple, list)):
    for sub in opt_state:
      found = injected_hyperparams(sub)
      if found:
        return found
  return {}


def equilibrium_angular_update(lr, wd, momentum=0.0):
  """sqrt(2 eta lam / (1 + mu)), the equilibrium angular update (Wan et al. 2021).

  A float for floats (ValueError for lr <= 0 or wd < 0); a jnp scalar for traced values."""
  if not any(isinstance(v, jax.core.Tracer) for v in (lr, wd, momentum)):
    lr, wd, momentum = float(lr), float(wd), float(momentum)
    if not lr > 0 or not wd >= 0:
      raise ValueError(f"need lr > 0 and wd >= 0, got lr={lr!r}, wd={wd!r}")
    return math.sqrt(2 * lr * wd / (1 + momentum))
  return jnp.sqrt(2 * lr * wd / (1 + momentum))


def _angular_update(xs, new_xs) -> tuple[jax.Array, jax.Array]:
  """(rho_t, the angle 2 asin(||x_{t+1}/rho_{t+1} - x_t/rho_t|| / 2) between x_t, x_{t+1})."""
  rho, rho_next = jnp.sqrt(sq_norm(xs)), jnp.sqrt(sq_norm(new_xs))
  chord = jnp.sqrt(sum(jnp.sum(jnp.square(_f32(b) / rho_next - _f32(a) / rho))
                       for a, b in zip(xs, new_xs)))
  return rho, 2 * jnp.arcsin(jnp.minimum(chord / 2, 1.0))


def _channel_stats(xs, new_xs, lr) -> dict[str, jax.Array]:
  """Mean / min / max over output channels (last axis) of rho_c, eta / rho_c^2, angle_c."""
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


def _variables(tree) -> dict[ParamPath, nnx.Variable]:
  keyed = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
  return {path_str(kp): x for kp, x in keyed if isinstance(x, nnx.Variable)}


def _check_snapshot(params, new_params, paths: tuple[ParamPath, ...]) -> None:
  """ValueError if x_t is nnx Variables that x_{t+1} shares (read now, they hold x_{t+1})."""
  old = _variables(params)
  if not old:
    return
  new_leaves = _arrays_by_path(new_params)  # a shared Variable: the same value array
  for p in (tuple(str(k) for k in q) for q in paths):
    if p in old and new_leaves.get(p) is old[p].get_value():
      raise ValueError(
          f"si_metrics: params (x_t) holds nnx Variables that new_params shares at "
          f"{'/'.join(p)} (live references, updated in place: x_t would read as x_{{t+1}}); "
          "pass a snapshot taken before the update, "
          "nnx.to_pure_dict(nnx.state(model, nnx.Param))")


def _arrays_by_path(tree) -> dict[ParamPath, Any]:
  """path -> array of every leaf of linen params, a pure dict or an nnx State."""
  return {path_str(kp): x for kp, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _step_hyperparams(opt_state, lr, wd, momentum):
  """(lr, wd, momentum): those given, else read from ``opt_state`` as ``si_metrics`` says."""
  if opt_state is None:
    hp = {}
  else:  # nnx.Optimizer's opt_state holds its arrays in Variables
    hp = injected_hyperparams(nnx.as_pure(opt_state) if _variables(opt_state) else opt_state)
  if lr is None and "learning_rate" in hp:
    lr = hp["learning_rate"] * hp.get("lr_multiplier", 1.0)
  wd = hp.get("weight_decay") if wd is None else wd
  momentum = hp.get("momentum", 0.0) if momentum is None else momentum
  return lr, wd, momentum


def si_metrics(params, grads, new_params, si_groups: Mapping[str, tuple[ParamPath, ...]],
               lr=None, opt_state=None, *, wd=None, momentum=None,
               per_channel: bool = False) -> dict[str, jax.Array]:
  """Dynamics metrics of one step x_t -> x_{t+1} of any optimizer; jittable.

  ``params`` (x_t: a snapshot, not live nnx Variables), ``grads`` and ``new_params`` are
  pytrees or nnx States. eta, lambda, mu: ``lr``, ``wd``, ``momentum``, else read from the
  ``optax.inject_hyperparams`` state in ``opt_state``. Returns ``weight_norm``, ``grad_norm``,
  ``effective_grad_norm``, ``angular_update``; with eta ``effective_lr`` (Eq. (3)) and ``lr``;
  with lambda too ``equilibrium_angular_update``; per group as ``{group}/{key}``; with
  ``per_channel``, ``{group}/channel_{weight_norm,effective_lr,angular_update}_{mean,min,max}``.
  Raises TypeError (a string path) or ValueError (no group, an empty one, a path not in
  ``params``, or x_t sharing nnx Variables with x_{t+1})."""
  check_in_params(check_groups(si_groups), params)
  _check_snapshot(params, new_params, tuple(p for paths in si_groups.values() for p in paths))
  lr, wd, momentum = _step_hyperparams(opt_state, lr, wd, momentum)
  params, grads, new_params = (_arrays_by_path(t) for t in (params, grads, new_params))
  take = lambda flat, paths: [flat[tuple(str(k) for k in p)] for p in paths]

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
  """Per-example softmax cross-entropy in float32 (not optax's: bitwise as the recorded runs)."""
  logp = jax.nn.log_softmax(_f32(logits))
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def mse(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example squared error ||z - e_y||^2 / K of the logits z (no softmax), float32.

  K: the number of classes, e_y: the one-hot label. The mean over classes of (z_k - e_yk)^2,
  as the released code of Kodryan et al. (2022) computes it (``squared_loss`` in
  github.com/tipt0p/three_regimes_on_the_sphere, train.py: (||z||^2 - 2 z_y + 1) / K)."""
  z = _f32(logits)
  return jnp.mean(jnp.square(z - jax.nn.one_hot(labels, z.shape[-1], dtype=z.dtype)), axis=-1)


LOSSES = {"cross_entropy": cross_entropy, "mse": mse}  # train.loss: per-example losses


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example 0/1 correctness of the arg-max prediction."""
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
