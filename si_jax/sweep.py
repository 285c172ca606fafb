"""Vmapped hyperparameter sweeps: N runs that differ in learning rate, weight decay,
seed, initialization scale or last-layer norm, trained inside one compiled program.

The train state is one pytree with the hyperparameters inside the optimizer state, so
the members are stacked along a leading run axis and the ordinary ``train.train_step``
is ``jax.vmap``-ed over it. All members see the same data order (``data.order_seed``
of the base config, or its seed); a member's ``seed`` changes its init and
augmentation only. Each member
writes ``WORKDIR/member_I/{config.json, metrics.jsonl}`` in the single-run format, so
plotting and analysis work unchanged.

Not yet: full-batch GD, per-step logs, checkpoints and resume for sweeps.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from si_jax import invariance, train, validate
from si_jax.logs import MetricWriter

SWEEPABLE = ("optim.lr", "optim.wd", "seed", "init_scale", "model.last_layer_norm")


def member_config(config: ml_collections.ConfigDict, overrides: dict[str, Any]):
  """The base config with one member's overrides (``init_scale`` is not a config field)."""
  unknown = set(overrides) - set(SWEEPABLE)
  if unknown:
    raise ValueError(f"sweep members may set only {SWEEPABLE}, got {sorted(unknown)}")
  c = config.copy_and_resolve_references()
  c.data.order_seed = train.order_seed(config)  # one data order for every member
  for key, value in overrides.items():
    if key == "seed":
      c.seed = value
    elif key != "init_scale":
      section, field = key.split(".")
      c[section][field] = value
  return c


def create_sweep(config, members: list[dict[str, Any]], dataset):
  """(task, stacked state): member i's state is that of its own single run, with its SI
  parameters multiplied by ``init_scale``."""
  if not members:
    raise ValueError("a sweep needs at least one member")
  states, task = [], None
  for overrides in members:
    c = member_config(config, overrides)
    validate.validate_config(c)
    member_task, state = train.create_task_and_state(c, dataset)
    scale = overrides.get("init_scale", 1.0)
    invariance.check_scale(scale)
    if scale != 1.0:
      state = state.replace(params=invariance.scale_paths(
          state.params, member_task.groups.si_paths, scale))
    task = task or member_task
    states.append(state)
  return task, jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def train_sweep(config: ml_collections.ConfigDict, members: list[dict[str, Any]], workdir: str,
                progress: bool = True) -> list[dict[str, Any]]:
  """Trains every member at once (SGD mode); returns each member's final epoch record."""
  validate.validate_config(config)
  if config.train.mode != "sgd" or config.train.log_every != "epoch":
    raise ValueError("sweeps support train.mode='sgd' with train.log_every='epoch' for now")
  dataset = train.load_dataset(config)
  tc = config.train
  task, state = create_sweep(config, members, dataset)
  x, y = jax.device_put(dataset.train_images), jax.device_put(dataset.train_labels)
  test_x, test_y = jax.device_put(dataset.test_images), jax.device_put(dataset.test_labels)
  step = jax.jit(jax.vmap(functools.partial(
      train.train_step, task, augment=config.data.augment,
      pad_value=jnp.asarray(dataset.pad_value)), in_axes=(0, None, None, None)),
      donate_argnums=0)
  evaluate_batch = jax.jit(jax.vmap(functools.partial(train.eval_sums, task),
                                    in_axes=(0, 0, None, None, None, None)), static_argnums=5)

  evaluate = functools.partial(train.evaluate_in_batches, evaluate_batch)

  writers = []
  for i, overrides in enumerate(members):
    member_dir = os.path.join(workdir, f"member_{i}")
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
