"""The step under ``jax.pmap`` (a named batch axis) equals the jit step, on 4 forced CPU
devices: the batch split over the pmap axis, over a jit 'data' mesh, or not at all
gives the same trajectory (parameters, BN running statistics, loss and metrics)."""

import functools
import multiprocessing
import os

import jax
import numpy as np

from si_jax.config import base_config
from si_jax.engine import sharding, step
from si_jax.engine import state as state_lib

DEVICES, BATCH, STEPS = 4, 64, 3


def sgd_config():
  """A tiny ConvNet on the embedded digits, SGD with momentum and weight decay."""
  config = base_config()
  config.model.width = 4
  config.data.name, config.data.source = "digits", "embedded"
  config.data.train_size, config.data.test_size = BATCH * STEPS, 100
  config.optim.lr, config.optim.wd, config.optim.momentum = 0.1, 0.01, 0.9
  return config


def host(tree):
  return jax.tree.map(np.asarray, tree)


def run_three_ways():
  """(pmap, jit over a 4-device mesh, jit on one device) -> [(params, batch_stats,
  metrics) after each step]; runs in a child whose XLA_FLAGS force 4 CPU devices."""
  assert jax.local_device_count() == DEVICES, jax.devices()
  jax.config.update("jax_enable_x64", True)  # float32's rounding differences between the
  # three reduction orders grew to 2e-3 in a gradient norm by step 3 on some CPUs
  config = sgd_config()
  dataset = state_lib.load_dataset(config)
  ctx, state0 = state_lib.create_state(config, dataset)
  state0 = jax.tree.map(
      lambda a: a.astype(np.float64) if jax.numpy.issubdtype(a.dtype, np.floating) else a,
      state0)
  images, labels = dataset.train_images.astype(np.float64), dataset.train_labels
  batches = [np.arange(t * BATCH, (t + 1) * BATCH, dtype=np.int32) for t in range(STEPS)]

  pmapped = jax.pmap(functools.partial(step.train_step, ctx, axis_name="batch"),
                     axis_name="batch", in_axes=(0, None, None, 0))
  replicas = jax.tree.map(lambda a: jax.numpy.stack([a] * DEVICES), state0)
  mesh = sharding.data_mesh()
  on_mesh = jax.jit(functools.partial(step.train_step, ctx, mesh=mesh))
  mesh_images, mesh_labels = sharding.place_arrays((images, labels), mesh, stacked=False)
  plain = jax.jit(functools.partial(step.train_step, ctx))  # on the default device
  traces = {"pmap": [], "mesh": [], "plain": []}
  mesh_state = plain_state = state0
  for idx in batches:
    # each device gets BATCH // DEVICES consecutive examples of the batch
    replicas, m = pmapped(replicas, images, labels, idx.reshape(DEVICES, -1))
    traces["pmap"].append(host((replicas.params, replicas.batch_stats, m)))
    mesh_state, m = on_mesh(mesh_state, mesh_images, mesh_labels, idx)
    traces["mesh"].append(host((mesh_state.params, mesh_state.batch_stats, m)))
    plain_state, m = plain(plain_state, images, labels, idx)
    traces["plain"].append(host((plain_state.params, plain_state.batch_stats, m)))
  return traces


def run_in_a_child():
  """``run_three_ways`` in a spawned child: the device count is fixed when jax starts."""
  flags = os.environ.get("XLA_FLAGS", "")
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={DEVICES}"
  try:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
      return pool.apply(run_three_ways)
  finally:
    os.environ["XLA_FLAGS"] = flags


def relative_errors(actual, expected):
  """{leaf path: max |actual - expected| / max |expected|} (per leaf: an element-wise
  relative error is meaningless for entries near zero)."""
  flat = jax.tree_util.tree_flatten_with_path(expected)[0]
  return {jax.tree_util.keystr(path): float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
          for (path, b), a in zip(flat, jax.tree.leaves(actual))}


def test_pmap_step_equals_the_jit_step():
  """After each of 3 momentum + weight-decay steps: the replicas agree exactly, and the
  params, BN running statistics (global-batch mean and unbiased variance), loss and
  in-step metrics equal those of the jit step over a 4-device mesh and on one device.
  (One test, so that pytest-xdist does not start the child twice.)"""
  traces = run_in_a_child()
  for t, trace in enumerate(traces["pmap"]):
    for leaf in jax.tree.leaves(trace):
      assert leaf.shape[0] == DEVICES
      np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape), f"step {t}")
  for reference in ("mesh", "plain"):
    for t, (pmapped, expected) in enumerate(zip(traces["pmap"], traces[reference])):
      errors = relative_errors(jax.tree.map(lambda a: a[0], pmapped), expected)
      worst = max(errors, key=errors.get)
      assert errors[worst] < 1e-12, (reference, t, worst, errors[worst])
  assert traces["plain"][0][0]["conv_0"]["kernel"].dtype == np.float64
  losses = [float(metrics["loss"]) for _, _, metrics in traces["plain"]]
  assert len(set(losses)) == STEPS  # three different batches and parameters
