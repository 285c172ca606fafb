"""Proposition 4 over a whole trajectory (the per-step identities: ``si_jax.invariance``)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from si_jax import invariance, models
from si_jax.engine import batching, step
from si_jax.engine import state as state_lib


def proposition4_trajectory(config, c: float, num_steps: int, dataset=None,
                            probe_size: int = 256,
                            hyperparams: tuple[float, float] | None = None,
                            ) -> dict[str, np.ndarray]:
  """Trains (x_0, eta, lambda) and (c x_0, c^2 eta, lambda / c^2) side by side.

  Both runs see the same batches. Returns per-step arrays:
    ``loss_rel_diff``   |f_b - f_a| / f_a on the step's batch,
    ``param_rel_diff``  ||x_b / c - x_a|| / ||x_a|| over the SI parameters,
    ``logit_max_diff``  max |logits_b - logits_a| on a fixed probe batch (train-mode BN),
  which Proposition 4 says are 0 up to float round-off and BN's epsilon.
  ``hyperparams`` overrides (lr, wd) of the rescaled run (a negative control).
  """
  invariance.check_scale(c)
  if dataset is None:
    dataset = state_lib.load_dataset(config)
  task_a, state_a = state_lib.create_state(config, dataset)
  config_b = config.copy_and_resolve_references()
  config_b.optim.lr, config_b.optim.wd = hyperparams or invariance.rescaled_hyperparams(
      config.optim.lr, config.optim.wd, c)
  task_b, state_b = state_lib.create_state(config_b, dataset)
  si_paths = task_a.groups.si_paths
  state_b = state_b.replace(params=invariance.scale_paths(state_a.params, si_paths, c))
  step_a = jax.jit(functools.partial(step.train_step, task_a))
  step_b = jax.jit(functools.partial(step.train_step, task_b))
  x, y = jax.device_put(dataset.train_images), jax.device_put(dataset.train_labels)
  probe = x[:probe_size]

  @jax.jit
  def compare(sa, sb):
    la = step.loss_and_aux(task_a.model, sa.params, sa.batch_stats, probe, y[:probe_size])[1][0]
    lb = step.loss_and_aux(task_b.model, sb.params, sb.batch_stats, probe, y[:probe_size])[1][0]
    xa = [models.get_path(sa.params, p) for p in si_paths]
    xb = [models.get_path(sb.params, p) / c for p in si_paths]
    param_diff = invariance.tree_norm([b - a for a, b in zip(xa, xb)]) / invariance.tree_norm(xa)
    return jnp.max(jnp.abs(la - lb)), param_diff

  out = {"loss_rel_diff": [], "param_rel_diff": [], "logit_max_diff": []}
  n, epoch, order = len(dataset.train_labels), 0, []
  for _ in range(num_steps):
    if not order:
      order = batching.epoch_batches(config, epoch, n)
      epoch += 1
    idx = order.pop(0)
    state_a, ma = step_a(state_a, x, y, idx)
    state_b, mb = step_b(state_b, x, y, idx)
    logit_diff, param_diff = compare(state_a, state_b)
    out["loss_rel_diff"].append(abs(float(mb["loss"]) - float(ma["loss"])) / float(ma["loss"]))
    out["param_rel_diff"].append(float(param_diff))
    out["logit_max_diff"].append(float(logit_diff))
  return {k: np.asarray(v) for k, v in out.items()}
