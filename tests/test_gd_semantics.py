"""Full-batch GD as the released code does it: the sum-reduced losses of batch-128
train-mode passes (ghost BN statistics of 128 examples) accumulated, divided by N, one
step per epoch; checked against the same accumulation written out here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import models
from si_jax.config import base_config
from si_jax.engine import state as state_lib
from si_jax.engine import train

LR, WD, N = 0.5, 0.01, 300


def test_one_ghost_batch_gd_step_equals_a_hand_accumulation(tmp_path):
  config = base_config()
  config.model.width = 4
  config.data.name, config.data.source = "digits", "embedded"
  config.data.train_size, config.data.test_size = N, 100
  config.optim.lr, config.optim.wd = LR, WD
  config.train.mode, config.train.micro_batch_size, config.train.epochs = "gd", 128, 1
  config.checkpoint.every_epochs = 0
  dataset = state_lib.load_dataset(config)
  ctx, start = state_lib.create_state(config, dataset)
  out = train.train_and_evaluate(config, str(tmp_path), progress=False)
  x, y = dataset.train_images, dataset.train_labels

  def summed_loss(params, stats, lo, hi):
    logits, updated = ctx.model.apply({"params": params, "batch_stats": stats}, x[lo:hi],
                                      train=True, mutable=["batch_stats"])
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.take_along_axis(logp, y[lo:hi, None], axis=1)), updated["batch_stats"]

  grad_sum, stats = None, start.batch_stats
  ghost_grad = jax.jit(jax.grad(summed_loss, has_aux=True), static_argnums=(2, 3))
  for lo in (0, 128, 256):  # ghost batches of 128, 128 and 44 examples, in order
    g, stats = ghost_grad(start.params, stats, lo, min(lo + 128, N))
    grad_sum = g if grad_sum is None else jax.tree.map(jnp.add, grad_sum, g)
  si = set(ctx.groups.si_paths)
  for path, p0 in models.flatten_with_paths(start.params):
    got = np.asarray(models.get_path(out["state"].params, path))
    if path in si:  # Eq. (2) with the averaged gradient
      mean_grad = np.asarray(models.get_path(grad_sum, path)) / N
      want = np.asarray(p0) - LR * (mean_grad + WD * np.asarray(p0))
      np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=str(path))
    else:  # frozen: the fixed last layer and the norms' affine parameters
      np.testing.assert_array_equal(got, np.asarray(p0))
  # the running statistics went through the three ghost batches in order
  for (_, got), (_, want) in zip(models.flatten_with_paths(out["state"].batch_stats),
                                    models.flatten_with_paths(stats)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)


def test_exact_statistics_differ_from_ghost_ones(tmp_path):
  """micro_batch_size None (one pass over all N: exact statistics) is another function:
  the first step's loss differs from the ghost-batch one."""
  losses = {}
  for micro in (128, None):
    config = base_config()
    config.model.width = 4
    config.data.name, config.data.source = "digits", "embedded"
    config.data.train_size, config.data.test_size = N, 100
    config.train.mode, config.train.micro_batch_size, config.train.epochs = "gd", micro, 1
    config.checkpoint.every_epochs = 0
    losses[micro] = train.train_and_evaluate(config, str(tmp_path / str(micro)),
                                             progress=False)["final"]["loss"]
  assert losses[128] != pytest.approx(losses[None], rel=1e-4)
