"""Vmapped families: R runs trained in one compiled program by the single-run loop.

Members differ only in ``SWEEPABLE`` fields (held by the optimizer state); each is an
ordinary run in ``WORKDIR/<name>/`` (docs/design_notes.md)."""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from si_jax import config as config_lib
from si_jax import validate
from si_jax.engine import batching, lifecycle, loop, sharding
from si_jax.engine import state as state_lib

log = logging.getLogger(__name__)

SWEEPABLE = ("optim.lr", "optim.wd", "seed", "model.init_scale", "model.last_layer_norm")
_ALIASES = {"init_scale": "model.init_scale"}


def member_config(config: ml_collections.ConfigDict, overrides: dict[str, Any]):
  """The base config with one member's overrides (``init_scale`` = ``model.init_scale``)."""
  overrides = {_ALIASES.get(k, k): v for k, v in overrides.items()}
  unknown = set(overrides) - set(SWEEPABLE)
  if unknown:
    raise ValueError(f"sweep members may set only {SWEEPABLE}, got {sorted(unknown)}")
  c = config.copy_and_resolve_references()
  c.data.order_seed = batching.order_seed(config)  # one data order for every member
  config_lib.set_fields(c, overrides)
  return c


def create_sweep(config, members: list[dict[str, Any]], dataset):
  """(step context, [member states]): member i's state is that of its own single run."""
  if not members:
    raise ValueError("a sweep needs at least one member")
  states, ctx = [], None
  for overrides in members:
    c = member_config(config, overrides)
    validate.validate_config(c)
    member_ctx, state = state_lib.create_state(c, dataset)
    ctx = ctx or member_ctx
    states.append(state)
  return ctx, states


def stack_states(states: list):
  """The members' states stacked along a new leading runs axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def train_sweep(config: ml_collections.ConfigDict, members: list[dict[str, Any]], workdir: str,
                progress: bool = True, names: list[str] | None = None) -> list[dict[str, Any]]:
  """Trains (or resumes) all members at once, member i in ``WORKDIR/names[i]``.

  Returns each member's last epoch record ({'diverged': message} for a diverged one)."""
  names = names or [f"member_{i}" for i in range(len(members))]
  if len(names) != len(members):
    raise ValueError(f"{len(names)} names for {len(members)} members")
  validate.validate_config(config)
  dataset = state_lib.load_dataset(config)
  ctx, templates = create_sweep(config, members, dataset)
  runs = [lifecycle.open_run(member_config(config, o), os.path.join(workdir, n))
          for o, n in zip(members, names)]
  states = [lifecycle.restore(run, template) for run, template in zip(runs, templates)]
  todo = [i for i, r in enumerate(runs) if not (r.complete or r.previously_diverged())]
  if todo:
    states = lifecycle.restore_together([runs[i] for i in todo], [templates[i] for i in todo],
                                        [states[i] for i in todo])
    start = runs[todo[0]].start_epoch
    if start:
      log.info("resuming %d members of %s from the checkpoints of epoch %d", len(todo), workdir,
               start)
    mesh = sharding.mesh_for(len(todo))
    loop.run_loop(ctx, sharding.place_runs(stack_states(states), mesh), [runs[i] for i in todo],
                  dataset, config, stacked=True, mesh=mesh, progress=progress)
  for i, run in enumerate(runs):
    if i not in todo:  # run_loop closed the ones it trained
      run.close()
  return [run.final_record() for run in runs]
