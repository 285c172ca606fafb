"""The pure, jittable step functions: (context, state, data) -> (state, metrics).

Each runs as is for one run, ``jax.vmap``-ed over a family, and ``train_step`` under
``jax.pmap`` (docs/design_notes.md)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from si_jax import data as data_lib
from si_jax import invariance, metrics, optim
from si_jax.engine.sharding import shard_batch
from si_jax.engine.state import StepContext, TrainState
from si_jax.models import layers

HESSIAN_PROBE_SEED = 0  # the Hutchinson probes' key: fixed, the same every epoch and run


def loss_and_aux(model, params, batch_stats, x, y, train: bool = True,
                 axis_name: str | None = None, loss_name: str = "cross_entropy"):
  """(mean loss, (logits, new BN statistics)); ``axis_name``: BN over that pmap axis.

  ``loss_name``: the per-example loss, a key of ``metrics.LOSSES`` (``train.loss``)."""
  variables = {"params": params, "batch_stats": batch_stats}
  if train:
    with layers.batch_axis(axis_name):
      logits, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
    new_stats = updated["batch_stats"]
  else:
    logits, new_stats = model.apply(variables, x, train=False), batch_stats
  loss = jnp.mean(metrics.LOSSES[loss_name](logits, y))
  return loss, (logits, new_stats)


def apply_gradients(ctx: StepContext, state: TrainState, grads, new_batch_stats, loss, accuracy):
  """One optimizer step from given loss gradients, with the dynamics metrics."""
  updates, opt_state = ctx.tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  lr = step_lr = optim.step_lr(opt_state)  # with a schedule: this step's eta_t
  if ctx.fixed_effective_lr:  # the SI step used eta_t = eta~ rho_t^2
    lr = lr * optim.sq_norm(optim.select(ctx.groups.si_mask(state.params), state.params))
  step_metrics = metrics.dynamics_metrics(
      state.params, grads, new_params, lr, ctx.groups.si_groups)
  if "lr_multiplier" in optim.hyperparams(opt_state):
    step_metrics["learning_rate"] = step_lr
  step_metrics.update(loss=loss, accuracy=accuracy)
  new_state = state.replace(
      step=state.step + 1, params=new_params, batch_stats=new_batch_stats, opt_state=opt_state)
  return new_state, step_metrics


def train_step(ctx: StepContext, state: TrainState, images, labels, idx, *, augment: bool = False,
               pad_value=None, invariance_every: int = 0, invariance_scale: float = 2.0,
               mesh: jax.sharding.Mesh | None = None, axis_name: str | None = None):
  """One SGD step on the mini-batch ``images[idx]``: (state, batch) -> (state, metrics).

  Under ``jax.pmap`` ``images[idx]`` is this device's shard and every replica takes the global
  batch's step. Raises ValueError for ``invariance_every`` with ``axis_name``."""
  if axis_name is not None and invariance_every:
    raise ValueError("train.invariance_every needs the global loss's gradient; it is not "
                     "supported under pmap (axis_name): set it to 0 or use the jit step")
  x, y = shard_batch(images[idx], mesh), shard_batch(labels[idx], mesh)
  if augment:
    key = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:
      key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    x = data_lib.augment_batch(key, x, pad_value)
  grad_fn = jax.value_and_grad(
      lambda p: loss_and_aux(ctx.model, p, state.batch_stats, x, y, axis_name=axis_name,
                             loss_name=ctx.loss),
      has_aux=True)
  (loss, (logits, new_stats)), grads = grad_fn(state.params)
  accuracy = jnp.mean(metrics.correct(logits, y))
  # Equal shards: the global means. Each shard's gradient already carries, through BN's
  # pmean'ed statistics, its loss's dependence on the other shards, so the mean of the
  # shard gradients is the gradient of the global batch's loss.
  if axis_name is not None:
    grads, loss, accuracy = jax.lax.pmean((grads, loss, accuracy), axis_name)
  new_state, step_metrics = apply_gradients(ctx, state, grads, new_stats, loss, accuracy)
  if invariance_every:
    loss_fn = lambda p: loss_and_aux(ctx.model, p, state.batch_stats, x, y,
                                     loss_name=ctx.loss)[0]
    check = lambda: invariance.invariance_residuals(
        loss_fn, state.params, ctx.groups.si_groups, invariance_scale)
    skip = lambda: jax.tree.map(jnp.zeros_like, jax.eval_shape(check))
    step_metrics.update(jax.lax.cond(state.step % invariance_every == 0, check, skip))
  return new_state, step_metrics


def micro_batch_grads(ctx: StepContext, params, batch_stats, grad_sum, images, labels, idx):
  """Adds sum_i grad loss_i over the micro-batch (its own BN statistics) to ``grad_sum``."""
  x, y = images[idx], labels[idx]
  n = idx.shape[0]
  grad_fn = jax.value_and_grad(
      lambda p: loss_and_aux(ctx.model, p, batch_stats, x, y, loss_name=ctx.loss),
      has_aux=True)
  (loss, (logits, new_stats)), grads = grad_fn(params)
  grad_sum = jax.tree.map(lambda s, g: s + n * g, grad_sum, grads)
  return grad_sum, new_stats, loss * n, jnp.sum(metrics.correct(logits, y))


def gd_apply(ctx: StepContext, state: TrainState, grad_sum, new_batch_stats, loss_sum,
             correct_sum, n):
  """The full-batch GD step from the summed gradients of ``n`` examples."""
  grads = jax.tree.map(lambda g: g / n, grad_sum)
  return apply_gradients(ctx, state, grads, new_batch_stats, loss_sum / n, correct_sum / n)


def eval_sums(ctx: StepContext, params, batch_stats, images, labels, idx, train: bool):
  """(sum of losses, number correct) on ``images[idx]``; BN statistics are not updated."""
  x, y = images[idx], labels[idx]
  logits = loss_and_aux(ctx.model, params, batch_stats, x, y, train=train,
                        loss_name=ctx.loss)[1][0]
  return jnp.sum(metrics.LOSSES[ctx.loss](logits, y)), jnp.sum(metrics.correct(logits, y))


def subset_correct(ctx: StepContext, params, batch_stats, images, labels, idx, noisy):
  """(number correct where ``noisy[idx]`` is 1, where it is 0) on ``images[idx]``, train-mode BN.

  Under ``data.label_noise``: the corrupted and the kept train labels (``noisy``: 0/1 floats)."""
  x, y, mask = images[idx], labels[idx], noisy[idx]
  logits = loss_and_aux(ctx.model, params, batch_stats, x, y, train=True,
                        loss_name=ctx.loss)[1][0]
  hits = metrics.correct(logits, y)
  return jnp.sum(hits * mask), jnp.sum(hits * (1 - mask))


def train_pass_sums(ctx: StepContext, params, batch_stats, images, labels, idx):
  """Appendix B's train pass on one batch, train mode: (sum of losses, number correct, sums).

  ``sums``: the summed loss's gradient; with ``ctx.hessian_probes`` also v^T H_b v per fixed
  Rademacher probe v on the SI parameters. They add up over batches."""
  x, y = images[idx], labels[idx]

  def loss_sum(p):
    logits = loss_and_aux(ctx.model, p, batch_stats, x, y, train=True, loss_name=ctx.loss)[1][0]
    return jnp.sum(metrics.LOSSES[ctx.loss](logits, y)), logits

  (total, logits), grads = jax.value_and_grad(loss_sum, has_aux=True)(params)
  correct = jnp.sum(metrics.correct(logits, y))
  if not ctx.hessian_probes:
    return total, correct, grads
  probes = metrics.rademacher_probes(jax.random.key(HESSIAN_PROBE_SEED), params,
                                     ctx.groups.si_mask(params), ctx.hessian_probes)
  forms = metrics.hessian_quadratic_forms(lambda p: loss_sum(p)[0], params, probes)
  return total, correct, {"grads": grads, "hessian_forms": forms}


def group_changes(ctx: StepContext, params, batch_stats, x, scale: float = 2.0):
  """Property (1a) per SI group at ``params``: ||f(c x_S) - f(x)|| / ||f(x)||, c = ``scale``.

  f: the train-mode outputs (batch statistics) on the images ``x``. One value per group of
  ``ctx.groups.si_groups``, in its order; a group that holds gives ~1e-5 (rounding and BN's
  epsilon; more where the norm is tiny), a group that does not ~1."""
  def outputs(p):
    return ctx.model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                           mutable=["batch_stats"])[0]

  base = outputs(params)
  size = jnp.maximum(jnp.linalg.norm(base), invariance.TINY)
  return jnp.stack([
      jnp.linalg.norm(outputs(invariance.scale_paths(params, tuple(paths), scale)) - base) / size
      for paths in ctx.groups.si_groups.values()])


def full_pass_metrics(ctx: StepContext, state: TrainState, sums, n):
  """``metrics.full_pass_metrics`` from ``n`` examples' ``train_pass_sums``, at the last lr.

  Adds Hutchinson's ``train_hessian_trace`` over the SI parameters (``ctx.hessian_probes``) and
  the distance to init when the optimizer keeps x_0."""
  grad_sum = sums["grads"] if ctx.hessian_probes else sums
  mean_grads = jax.tree.map(lambda g: g / n, grad_sum)
  lr = optim.step_lr(state.opt_state)
  if ctx.fixed_effective_lr:  # the SI step uses eta_t = eta~ rho_t^2
    lr = lr * optim.sq_norm(optim.select(ctx.groups.si_mask(state.params), state.params))
  out = metrics.full_pass_metrics(state.params, mean_grads, lr, ctx.groups.si_groups)
  if ctx.hessian_probes:
    out["train_hessian_trace"] = jnp.mean(sums["hessian_forms"]) / n
  init = optim.initial_si_params(state.opt_state)
  if init is not None:
    out.update(metrics.distance_to_init(state.params, init, ctx.groups.si_paths))
  return out
