"""``train_and_evaluate``: one run from a config, through the one training loop."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import ml_collections

from si_jax import logs, validate
from si_jax.engine import lifecycle, loop, sharding
from si_jax.engine import state as state_lib

log = logging.getLogger(__name__)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       progress: bool = True, allow_config_change: bool = False) -> dict[str, Any]:
  """Trains as the config says, resuming a checkpoint of the same config bit for bit.

  Returns:
    {'final': the last epoch record, 'wall_time', 'workdir', 'state', 'task' (the step
    context), 'preempted'}.

  Raises:
    ValueError: a bad config or dataset; ``workdir`` in use or holding another run's config.
    TrainingDiverged: a non-finite loss or weights (``train.on_nonfinite``).
    CheckpointError: a checkpoint cannot be written or read."""
  validate.validate_config(config)
  dataset = state_lib.load_dataset(config)
  run = lifecycle.open_run(config, workdir, allow_config_change)
  try:  # the workdir is locked: released on every way out
    ctx, state = state_lib.create_state(config, dataset)
    state = lifecycle.restore(run, state)
    if run.complete:
      final = logs.read_run(workdir)[-1] if os.path.exists(
          os.path.join(workdir, logs.METRICS_FILE)) else {}
      log.info("%s is already complete (%d epochs); raise train.epochs to continue it", workdir,
               run.start_epoch)
      return {"final": final, "wall_time": run.wall_before, "workdir": workdir,
              "state": state, "task": ctx, "preempted": False}
    if run.start_epoch:
      log.info("resuming %s from the checkpoint of epoch %d (step %d)", workdir,
               run.start_epoch, int(state.step))
    mesh = sharding.mesh_for(None)
    state, preempted = loop.run_loop(ctx, sharding.place_replicated(state, mesh), [run],
                                     dataset, config, stacked=False, mesh=mesh,
                                     progress=progress)
  finally:
    run.close()
  return {"final": run.record, "wall_time": time.time() - run.started, "workdir": workdir,
          "state": state, "task": ctx, "preempted": preempted}
