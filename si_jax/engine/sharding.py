"""Device meshes and data placement for R >= 1 runs.

One run: a 1-D ``data`` mesh over all devices; R > 1: a ``('runs', 'data')`` mesh over the local
ones. BN statistics are the global batch's: results do not depend on the device count."""

from __future__ import annotations

import math

import jax
import numpy as np

P = jax.sharding.PartitionSpec


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh named 'data' (an Auto axis) over all devices of every host."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def runs_mesh(num_runs: int, devices=None) -> jax.sharding.Mesh:
  """A ('runs', 'data') mesh over the local devices: gcd(devices, runs) run groups."""
  devices = jax.local_devices() if devices is None else devices
  runs = math.gcd(len(devices), num_runs)
  auto = jax.sharding.AxisType.Auto
  return jax.make_mesh((runs, len(devices) // runs), ("runs", "data"), axis_types=(auto, auto),
                       devices=devices)


def mesh_for(num_runs: int | None) -> jax.sharding.Mesh | None:
  """The mesh for ``num_runs`` stacked runs (None: one run), or None on one device."""
  if num_runs is None:
    return data_mesh() if jax.device_count() > 1 else None
  return runs_mesh(num_runs) if jax.local_device_count() > 1 else None


def shard_batch(x, mesh: jax.sharding.Mesh | None):
  """Splits a batch along 'data' inside jit (an uneven one stays replicated)."""
  if mesh is None or mesh.shape["data"] == 1 or x.shape[0] % mesh.shape["data"]:
    return x
  spec = P("data", *([None] * (x.ndim - 1)))
  return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))


def place_arrays(arrays, mesh: jax.sharding.Mesh | None, stacked: bool):
  """Host arrays replicated on every device of ``mesh`` (None: the default device)."""
  if mesh is None:
    return tuple(jax.device_put(a) for a in arrays)
  where = jax.sharding.NamedSharding(mesh, P())
  if stacked:  # a local ('runs', 'data') mesh
    return tuple(jax.device_put(a, where) for a in arrays)
  return tuple(jax.make_array_from_process_local_data(where, a, a.shape) for a in arrays)


def place_replicated(state, mesh: jax.sharding.Mesh | None):
  """One run's state replicated on every device of ``mesh``, of every process."""
  if mesh is None:
    return state
  where = jax.sharding.NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(state, where)

  def put(a):
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(a)), impl=jax.random.key_impl(a))
    local = np.asarray(a)
    return jax.make_array_from_process_local_data(where, local, local.shape)
  return jax.tree.map(put, state)


def place_runs(state, mesh: jax.sharding.Mesh | None):
  """A stacked state split along its leading runs axis."""
  if mesh is None:
    return state
  return jax.device_put(state, jax.sharding.NamedSharding(mesh, P("runs")))
