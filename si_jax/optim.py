"""Optimizers as optax chains, with weight decay as its own transform.

SGD, Eq. (2): x_{t+1} = x_t - eta (grad f(x_t) + lambda x_t). With momentum, ``coupled``:
m_{t+1} = mu m_t + grad f(x_t) + lambda x_t, x_{t+1} = x_t - eta m_{t+1} (torch.optim.SGD);
``decoupled``: m_{t+1} = mu m_t + grad f(x_t), x_{t+1} = (1 - eta lambda) x_t - eta m_{t+1};
for Adam, torch.optim.Adam and AdamW. Frozen parameters get no update and no decay.
Ablations: ``fix_si_norm`` (Figs. 5, 12), ``fixed_effective_lr`` and ``sphere`` (Kodryan et
al. 2022: the SI step at eta~ rho_0^2, projected back onto ||x|| = rho_0 with ``total``, or
each output channel (last axis) onto its initial norm with ``per_filter``)."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from si_jax.models.layers import path_str
from si_jax.si_groups import check_groups, check_in_params

OPTIMIZERS = ("sgd", "adam")
WD_MODES = ("coupled", "decoupled")
SCHEDULES = ("constant", "cosine", "linear", "linear_half", "step")
SCHEDULE_UNITS = ("step", "epoch")
SPHERES = ("off", "total", "per_filter")


def lr_schedule(kind: str, factor: float, total_steps: int,
                steps_per_epoch: int | None = None) -> optax.Schedule:
  """The multiplier s(t) of eta_t = eta s(t) at update t of T (appendix J); p = ``factor``.

  ``constant`` 1; ``cosine`` (1 + cos(pi t / T)) / 2; ``linear`` 1, from T / 4 linear to 1 / p
  at T; ``linear_half`` 1, from T / 2 linear to 0.01 at 0.9 T; ``step`` / p each quarter.

  With ``steps_per_epoch`` K (``optim.schedule_unit='epoch'``) the multiplier changes once
  an epoch, as the released code's schedules do: every update of epoch e = floor(t / K) uses
  s(e K), the value at the epoch's first update, which is s(e / E) of the same definition
  over E = T / K epochs (the released code's schedule(epoch / epochs)). One difference
  stays: at an exact quarter e = i E / 4 ``step`` has already dropped here, while the
  released d_schedule (``t <= 0.25``: no drop yet) drops one epoch later."""
  if steps_per_epoch is not None and steps_per_epoch > 1:
    per_update = lr_schedule(kind, factor, total_steps)
    return lambda t: per_update(t // steps_per_epoch * steps_per_epoch)
  T = float(total_steps)
  if kind == "constant":
    return optax.constant_schedule(1.0)
  if kind == "cosine":
    return optax.cosine_decay_schedule(1.0, T)
  if kind == "linear":
    return optax.linear_schedule(1.0, 1.0 / factor, 0.75 * T, transition_begin=0.25 * T)
  if kind == "linear_half":
    return optax.linear_schedule(1.0, 0.01, 0.4 * T, transition_begin=0.5 * T)
  if kind == "step":  # boundaries i T / 4, not rounded: distinct even for T < 4
    return optax.piecewise_constant_schedule(1.0, {i * T / 4: 1.0 / factor for i in (1, 2, 3)})
  raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {kind!r}")


def sq_norm(tree) -> jax.Array:
  """Sum of squares over all leaves, in float32 or better."""
  return sum(jnp.sum(jnp.square(x.astype(jnp.promote_types(x.dtype, jnp.float32))))
             for x in jax.tree.leaves(tree))


def select(mask, tree):
  """Leaves of ``tree`` where ``mask`` is True, zeros elsewhere."""
  return jax.tree.map(lambda m, x: x if m else jnp.zeros_like(x), mask, tree)


def scale_si_by_norm_squared(si_mask) -> optax.GradientTransformation:
  """Multiplies the SI updates by rho_t^2 = ||x_t||^2 (optax has no group-norm scaling)."""

  def update_fn(updates, state, params):
    rho_sq = sq_norm(select(si_mask, params))
    return jax.tree.map(lambda m, u: u * rho_sq if m else u, si_mask, updates), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


class FixedNormState(NamedTuple):
  """The SI norm rho_0 that ``project_si_to_norm`` keeps."""

  target_norm: jax.Array


def project_si_to_norm(si_mask, target_norm: float | None) -> optax.GradientTransformation:
  """x_{t+1} = rho_0 (x_t + u) / ||x_t + u|| on SI (None: ||x_0||); optax has no projection."""

  def init_fn(params):
    if target_norm is None:
      return FixedNormState(jnp.sqrt(sq_norm(select(si_mask, params))))
    return FixedNormState(jnp.array(target_norm, jnp.float32))  # a copy: the state is donated

  def update_fn(updates, state, params):
    new = jax.tree.map(lambda x, u: x + u, params, updates)
    scale = state.target_norm / jnp.sqrt(sq_norm(select(si_mask, new)))
    projected = jax.tree.map(lambda m, x, y: y * scale - x if m else y - x, si_mask, params, new)
    return projected, state

  return optax.GradientTransformation(init_fn, update_fn)


def filter_sq_norms(x: jax.Array) -> jax.Array:
  """||x_c||^2 of each output channel c (last axis): the sum over all other axes."""
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return jnp.sum(jnp.square(jnp.reshape(x, (-1, x.shape[-1]))), axis=0)


def onto_filter_sphere(params, si_mask):
  """SI tensors with every output channel at norm ||x|| / sqrt(F), F channels in all."""
  si = [x for m, x in zip(jax.tree.leaves(si_mask), jax.tree.leaves(params)) if m]
  r = jnp.sqrt(sq_norm(si) / sum(x.shape[-1] for x in si))
  return jax.tree.map(
      lambda m, x: (x * (r / jnp.sqrt(filter_sq_norms(x)))).astype(x.dtype) if m else x,
      si_mask, params)


class FilterNormState(NamedTuple):
  """The per-output-channel norms ``project_si_filters`` keeps (0 for non-SI leaves)."""

  target_norms: Any


def project_si_filters(si_mask) -> optax.GradientTransformation:
  """x_{t+1,c} = r_c (x_{t,c} + u_c) / ||x_{t,c} + u_c||, r_c = ||x_{0,c}||, c the last axis.

  optax has no per-channel projection."""

  def init_fn(params):
    return FilterNormState(jax.tree.map(
        lambda m, x: jnp.sqrt(filter_sq_norms(x)) if m else jnp.zeros((), jnp.float32),
        si_mask, params))

  def update_fn(updates, state, params):
    def one(m, x, u, r):
      if not m:
        return u
      y = x + u
      return (y * (r / jnp.sqrt(filter_sq_norms(y)))).astype(x.dtype) - x
    return jax.tree.map(one, si_mask, params, updates, state.target_norms), state

  return optax.GradientTransformation(init_fn, update_fn)


class InitialParamsState(NamedTuple):
  """A copy of the SI parameters x_0 at ``init`` (0 elsewhere: no empty arrays to save)."""

  params: Any


def keep_initial_params(si_mask) -> optax.GradientTransformation:
  """Identity on the updates; its state holds x_0 (optax has no params snapshot)."""

  def update_fn(updates, state, params=None):
    del params
    return updates, state

  def init_fn(params):  # a copy: the state must not share (donated) buffers with params
    return InitialParamsState(jax.tree.map(
        lambda m, x: jnp.array(x, copy=True) if m else jnp.zeros((), x.dtype),
        si_mask, params))

  return optax.GradientTransformation(init_fn, update_fn)


def initial_si_params(opt_state):
  """x_0 as ``keep_initial_params`` holds it inside ``opt_state``, or None without it."""
  if isinstance(opt_state, InitialParamsState):
    return opt_state.params
  if hasattr(opt_state, "inner_state"):
    return initial_si_params(opt_state.inner_state)
  if isinstance(opt_state, (tuple, list)) and not hasattr(opt_state, "_fields"):
    for sub in opt_state:
      found = initial_si_params(sub)
      if found is not None:
        return found
  return None


def _chain(
    learning_rate,
    weight_decay,
    momentum,
    lr_multiplier=1.0,
    *,
    name: str,
    wd_mode: str,
    trainable_mask,
    si_mask,
    non_si_lr: float = -1.0,
    fix_si_norm: bool,
    si_norm: float | None,
    fixed_effective_lr: bool,
    sphere: str = "off",
    keep_initial: bool = False,
    adam_b1: float,
    adam_b2: float,
    adam_eps: float,
) -> optax.GradientTransformation:
  decay = optax.add_decayed_weights(weight_decay, mask=trainable_mask)
  if name == "sgd":
    precondition = optax.trace(decay=momentum)
  else:
    precondition = optax.scale_by_adam(b1=adam_b1, b2=adam_b2, eps=adam_eps)
  if wd_mode == "coupled":
    parts = [decay, precondition]
  else:
    parts = [precondition, decay]
  if fixed_effective_lr or sphere != "off":  # on the sphere rho_t^2 = rho_0^2
    parts.append(scale_si_by_norm_squared(si_mask))
  frozen_mask = jax.tree.map(lambda trainable: not trainable, trainable_mask)
  parts += [optax.scale(-learning_rate * lr_multiplier),
            optax.masked(optax.set_to_zero(), frozen_mask)]
  if non_si_lr > 0:  # the trainable non-SI parameters step with their own lr
    non_si_mask = jax.tree.map(lambda si: not si, si_mask)
    parts.append(optax.masked(optax.scale(non_si_lr / learning_rate), non_si_mask))
  if fix_si_norm or sphere == "total":
    parts.append(project_si_to_norm(si_mask, si_norm))
  if sphere == "per_filter":
    parts.append(project_si_filters(si_mask))
  if keep_initial:
    parts.append(keep_initial_params(si_mask))
  return optax.chain(*parts)


def check_options(*, name: str, lr: float, wd: float, momentum: float, wd_mode: str,
                  fix_si_norm: bool, si_norm: float | None, schedule: str = "constant",
                  schedule_factor: float = 10.0, schedule_unit: str = "step",
                  non_si_lr: float = -1.0, train_non_si: bool | None = None, sphere: str = "off",
                  fixed_effective_lr: bool = False, **unused) -> None:
  """Raises ValueError naming the config field (``optim.*``) of the first bad value."""
  del unused
  _check_sphere(sphere, wd=wd, fix_si_norm=fix_si_norm, si_norm=si_norm,
                fixed_effective_lr=fixed_effective_lr)
  if not (non_si_lr == -1 or non_si_lr >= 0):
    raise ValueError(f"optim.non_si_lr must be -1 (the SI parameters' lr), 0 (frozen) or "
                     f"positive, got {non_si_lr!r}")
  if non_si_lr != -1 and train_non_si is False:
    raise ValueError("optim.non_si_lr is set but model.train_non_si is False (the non-SI "
                     "parameters are frozen)")
  if schedule not in SCHEDULES:
    raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {schedule!r}")
  if schedule_unit not in SCHEDULE_UNITS:
    raise ValueError(f"optim.schedule_unit must be one of {SCHEDULE_UNITS}, got "
                     f"{schedule_unit!r}")
  if not schedule_factor >= 1:
    raise ValueError(f"optim.schedule_factor must be >= 1, got {schedule_factor!r}")
  if name not in OPTIMIZERS:
    raise ValueError(f"optim.name must be one of {OPTIMIZERS}, got {name!r}")
  if wd_mode not in WD_MODES:
    raise ValueError(f"optim.wd_mode must be one of {WD_MODES}, got {wd_mode!r}")
  if not lr > 0:
    raise ValueError(f"optim.lr must be positive, got {lr!r}")
  if not wd >= 0:
    raise ValueError(f"optim.wd must be non-negative, got {wd!r}")
  if not 0 <= momentum < 1:
    raise ValueError(f"optim.momentum must be in [0, 1), got {momentum!r}")
  if name == "adam" and momentum:
    raise ValueError("optim.momentum is for sgd; adam uses optim.adam_b1")
  if si_norm is not None and not si_norm > 0:
    raise ValueError(f"optim.si_norm must be positive or None, got {si_norm!r}")
  if si_norm is not None and not fix_si_norm:
    raise ValueError("optim.si_norm is set but optim.fix_si_norm is False")


def _check_sphere(sphere: str, *, wd: float, fix_si_norm: bool, si_norm: float | None,
                  fixed_effective_lr: bool) -> None:
  """``optim.sphere`` with the options it replaces or excludes (ValueError)."""
  if sphere not in SPHERES:
    raise ValueError(f"optim.sphere must be one of {SPHERES}, got {sphere!r}")
  if sphere == "off":
    return
  if fix_si_norm or fixed_effective_lr or si_norm is not None:
    raise ValueError("optim.sphere already fixes the norm and the effective LR: leave "
                     "optim.fix_si_norm, optim.fixed_effective_lr and optim.si_norm unset")
  if wd != 0:
    raise ValueError(f"optim.wd must be 0 with optim.sphere={sphere!r}, got {wd!r}")


def _check_joint_rescaling(groups, rescales_jointly: bool) -> None:
  """Refuses overlapping groups where the union is rescaled jointly (it is not SI)."""
  if rescales_jointly and not getattr(groups, "disjoint", True):
    raise ValueError("optim.fix_si_norm / optim.fixed_effective_lr rescale the SI "
                     "parameters jointly, but these SI groups overlap (their union is not "
                     "scale-invariant): pass disjoint groups")


def check_groups_match(params, groups, rescales_jointly: bool = False) -> None:
  """Checks the SI groups of a models.ParamGroups against ``params``.

  Raises:
    TypeError: a group or path is a string or not a sequence.
    ValueError: an empty group; no group where one is needed (frozen non-SI parameters, or
      ``rescales_jointly``: fix_si_norm / fixed_effective_lr); a path not in ``params``."""
  allow_none = bool(groups.train_non_si) and not rescales_jointly
  check_groups(groups.si_groups, "groups.si_groups", allow_none=allow_none)
  check_in_params(groups.si_groups, params, "groups.si_groups")


def _scheduled(schedule: str, factor: float, unit: str, total_steps: int | None,
               steps_per_epoch: int | None) -> dict[str, optax.Schedule]:
  """The schedule to inject as ``lr_multiplier`` (none for ``constant``).

  Raises:
    ValueError: no ``total_steps``, or no ``steps_per_epoch`` with ``unit`` 'epoch'."""
  if schedule == "constant":
    return {}
  if not total_steps:
    raise ValueError("optim.schedule needs the run's number of steps (total_steps)")
  if unit == "epoch" and not steps_per_epoch:
    raise ValueError("optim.schedule_unit='epoch' needs the run's steps per epoch")
  return {"lr_multiplier": lr_schedule(schedule, factor, total_steps,
                                       steps_per_epoch if unit == "epoch" else None)}


def make_optimizer(
    params,
    groups,
    *,
    name: str = "sgd",
    lr: float = 0.01,
    wd: float = 0.0,
    momentum: float = 0.0,
    wd_mode: str = "coupled",
    fix_si_norm: bool = False,
    si_norm: float | None = None,
    fixed_effective_lr: bool = False,
    sphere: str = "off",
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    schedule: str = "constant",
    schedule_factor: float = 10.0,
    schedule_unit: str = "step",
    total_steps: int | None = None,
    steps_per_epoch: int | None = None,
    non_si_lr: float = -1.0,
    keep_initial: bool = False,
) -> optax.GradientTransformation:
  """The optimizer for ``params`` given a models.ParamGroups (module docstring).

  The keyword arguments are the config's ``optim.*`` fields; a non-constant ``schedule``
  needs ``total_steps`` (and ``steps_per_epoch`` with ``schedule_unit='epoch'``) and injects
  ``lr_multiplier``. With ``sphere``, ``lr`` is eta~ and ``params`` are on the sphere.
  ``params`` may be an nnx ``State`` (``on_plain_trees``).

  Raises:
    ValueError: naming the config field of a bad value, or a group path not in ``params``."""
  check_options(name=name, lr=lr, wd=wd, momentum=momentum, wd_mode=wd_mode,
                fix_si_norm=fix_si_norm, si_norm=si_norm, schedule=schedule,
                schedule_factor=schedule_factor, schedule_unit=schedule_unit,
                non_si_lr=non_si_lr, train_non_si=groups.train_non_si, sphere=sphere,
                fixed_effective_lr=fixed_effective_lr)
  rescales = fix_si_norm or fixed_effective_lr or sphere != "off"
  _check_joint_rescaling(groups, rescales)
  check_groups_match(params, groups, rescales)
  params = as_plain(params)
  si_mask = groups.si_mask(params)
  # non_si_lr 0 freezes the non-SI parameters (no update, no decay)
  trainable_mask = si_mask if non_si_lr == 0 else groups.trainable_mask(params)
  factory = functools.partial(
      _chain, name=name, wd_mode=wd_mode, trainable_mask=trainable_mask, si_mask=si_mask,
      non_si_lr=non_si_lr, fix_si_norm=fix_si_norm, si_norm=si_norm,
      fixed_effective_lr=fixed_effective_lr, sphere=sphere, keep_initial=keep_initial,
      adam_b1=adam_b1, adam_b2=adam_b2, adam_eps=adam_eps)
  scheduled = _scheduled(schedule, schedule_factor, schedule_unit, total_steps,
                         steps_per_epoch)
  # without a schedule the multiplier stays a static 1.0, not a hyperparameter
  static = ("non_si_lr",) + (() if scheduled else ("lr_multiplier",))
  return on_plain_trees(optax.inject_hyperparams(factory, static_args=static)(
      learning_rate=lr, weight_decay=wd, momentum=momentum, **scheduled))


def _is_nnx(tree) -> bool:
  return isinstance(tree, nnx.State) or any(
      isinstance(x, nnx.Variable)
      for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def as_plain(tree):
  """An nnx ``State`` (of Variables or arrays) as its pure nested dict; others as given."""
  return nnx.to_pure_dict(tree) if _is_nnx(tree) else tree


def _like(tree, plain):
  """``plain``'s leaves, matched by path, in the structure of the nnx ``tree``."""
  by_path = {path_str(kp): x for kp, x in jax.tree_util.tree_flatten_with_path(plain)[0]}
  keyed, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return treedef.unflatten([by_path[path_str(kp)] for kp, _ in keyed])


def on_plain_trees(tx) -> optax.GradientTransformationExtraArgs:
  """``tx`` on ``as_plain`` trees (nnx States become dicts), updates in the structure given."""

  def update_fn(updates, state, params=None, **extra_args):
    plain = as_plain(updates)
    new, state = tx.update(plain, state, None if params is None else as_plain(params),
                           **extra_args)
    return (_like(updates, new) if plain is not updates else new), state

  return optax.GradientTransformationExtraArgs(lambda params: tx.init(as_plain(params)),
                                               update_fn)


def with_hyperparams(opt_state, **values):
  """The optimizer state with some injected hyperparameters replaced (e.g. on resume)."""
  hp = dict(opt_state.hyperparams)
  for k, v in values.items():
    hp[k] = jnp.asarray(v, hp[k].dtype)
  return opt_state._replace(hyperparams=hp)


def hyperparams(opt_state) -> dict[str, Any]:
  """The injected hyperparameters (and ``lr_multiplier`` under a schedule)."""
  return opt_state.hyperparams


def step_lr(opt_state) -> jax.Array:
  """The learning rate of the step that produced ``opt_state``: eta s(t)."""
  hp = opt_state.hyperparams
  return hp["learning_rate"] * hp["lr_multiplier"] if "lr_multiplier" in hp else hp["learning_rate"]
