"""Vmapped hyperparameter sweeps: N runs that differ in learning rate, weight decay,
seed, initialization scale or last-layer norm, trained inside one compiled program.

The train state is one pytree with the hyperparameters inside the optimizer state, so
the members are stacked along a leading run axis and the ordinary ``train.train_step``
is ``jax.vmap``-ed over it. All members see the same data order (``data.order_seed``
of the base config, or its seed); a member's ``seed`` changes its init and
augmentation only. Each member
writes ``WORKDIR/member_I/{config.json, metrics.jsonl}`` in the single-run format, so
plotting and analysis work unchanged.

With several local devices the sweep runs on a 2-D mesh ('runs', 'data'): the members
are split over the 'runs' axis (gcd(devices, members) groups) and each member's batch
over the rest ('data'), with BN statistics over the global batch as in single runs; so
sweeps and data parallelism compose and the results do not depend on the device count
(tests/test_parallel.py).

Not yet: full-batch GD, per-step logs, checkpoints and resume for sweeps.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from si_jax import config as config_lib
from si_jax import train, validate
from si_jax.logs import MetricWriter

SWEEPABLE = ("optim.lr", "optim.wd", "seed", "model.init_scale", "model.last_layer_norm")
_ALIASES = {"init_scale": "model.init_scale"}


def sweep_mesh(num_members: int, devices=None) -> jax.sharding.Mesh:
  """A ('runs', 'data') mesh over the local devices: gcd(devices, members) run groups."""
  devices = jax.local_devices() if devices is None else devices
  runs = math.gcd(len(devices), num_members)
  auto = jax.sharding.AxisType.Auto
  return jax.make_mesh((runs, len(devices) // runs), ("runs", "data"), axis_types=(auto, auto),
                       devices=devices)


def member_config(config: ml_collections.ConfigDict, overrides: dict[str, Any]):
  """The base config with one member's overrides (``init_scale`` = ``model.init_scale``)."""
  overrides = {_ALIASES.get(k, k): v for k, v in overrides.items()}
  unknown = set(overrides) - set(SWEEPABLE)
  if unknown:
    raise ValueError(f"sweep members may set only {SWEEPABLE}, got {sorted(unknown)}")
  c = config.copy_and_resolve_references()
  c.data.order_seed = train.order_seed(config)  # one data order for every member
  config_lib.set_fields(c, overrides)
  return c


def create_sweep(config, members: list[dict[str, Any]], dataset):
  """(task, stacked state): member i's state is that of its own single run."""
  if not members:
    raise ValueError("a sweep needs at least one member")
  states, task = [], None
  for overrides in members:
    c = member_config(config, overrides)
    validate.validate_config(c)
    member_task, state = train.create_task_and_state(c, dataset)
    task = task or member_task
    states.append(state)
  return task, jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def train_sweep(config: ml_collections.ConfigDict, members: list[dict[str, Any]], workdir: str,
                progress: bool = True, names: list[str] | None = None) -> list[dict[str, Any]]:
  """Trains every member at once (SGD mode); returns each member's final epoch record.

  Member i logs to ``WORKDIR/names[i]`` (default ``member_I``).
  """
  names = names or [f"member_{i}" for i in range(len(members))]
  if len(names) != len(members):
    raise ValueError(f"{len(names)} names for {len(members)} members")
  validate.validate_config(config)
  if config.train.mode != "sgd" or config.train.log_every != "epoch":
    raise ValueError("sweeps support train.mode='sgd' with train.log_every='epoch' for now")
  dataset = train.load_dataset(config)
  tc = config.train
  task, state = create_sweep(config, members, dataset)
  mesh = sweep_mesh(len(members)) if jax.local_device_count() > 1 else None
  P = jax.sharding.PartitionSpec
  replicated = jax.sharding.NamedSharding(mesh, P()) if mesh else None
  if mesh:
    state = jax.device_put(state, jax.sharding.NamedSharding(mesh, P("runs")))
  x, y, test_x, test_y = (jax.device_put(a, replicated) for a in (
      dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels))
  step = jax.jit(jax.vmap(functools.partial(
      train.train_step, task, augment=config.data.augment,
      pad_value=jnp.asarray(dataset.pad_value), mesh=mesh), in_axes=(0, None, None, None)),
      donate_argnums=0)
  evaluate_batch = jax.jit(jax.vmap(functools.partial(train.eval_sums, task),
                                    in_axes=(0, 0, None, None, None, None)), static_argnums=5)

  evaluate = functools.partial(train.evaluate_in_batches, evaluate_batch)

  writers = []
  for i, overrides in enumerate(members):
    member_dir = os.path.join(workdir, names[i])
    os.makedirs(member_dir, exist_ok=True)
    with open(os.path.join(member_dir, "config.json"), "w") as f:
      f.write(member_config(config, overrides).to_json_best_effort(indent=2))
    writers.append(MetricWriter(member_dir, per_step=False))
  bar = train.Progress(tc.epochs, enabled=progress)
  start = time.time()
  finals: list[dict[str, Any]] = []
  try:
    for epoch in range(tc.epochs):
      pending = []
      for idx in train.batches(train.epoch_order(train.order_seed(config), epoch, len(y)),
                               tc.batch_size, tc.drop_last):
        state, m = step(state, x, y, idx)
        pending.append(m)
      stacked = train.stack_metrics(pending, axis=1)  # (members, steps)
      evals = None
      if (epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs:
        test_loss, test_acc = evaluate(state.params, state.batch_stats, test_x, test_y,
                                       tc.eval_batch_size, False)
        train_loss, train_acc = evaluate(state.params, state.batch_stats, x, y, tc.batch_size, True)
        evals = (test_loss, test_acc, train_loss, train_acc)
      finals = []
      for i, writer in enumerate(writers):
        records = [{k: float(v[i, s]) for k, v in stacked.items()} for s in range(len(pending))]
        train._check_finite(records, epoch * len(pending), tc.on_nonfinite)
        record = {"epoch": epoch + 1, "step": int(state.step[i]),
                  **{k: float(np.mean(v[i])) for k, v in stacked.items()}}
        if evals:
          record.update(test_loss=float(evals[0][i]), test_error=1.0 - float(evals[1][i]),
                        train_loss=float(evals[2][i]), train_accuracy=float(evals[3][i]))
        record["wall_time"] = time.time() - start
        writer.write_epoch(record)
        finals.append(record)
      bar.update(epoch + 1, finals[0])
  finally:
    for writer in writers:
      writer.close()
  return finals
