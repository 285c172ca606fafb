"""What ``si_metrics`` costs in the jitted SGD step of the pre-LN transformer at
``configs/transformer.py:cpu``'s size: over its SI tensors one by one, the groups
``find_si_groups`` finds, those folded into kinds by ``compact_groups``, and the kinds of
the model's declared groups.

  python -m benchmarks.compact_groups [--repeats 3] [--steps 30]

Per model ('transformer', the config's, and 'transformer_qknorm') the groups are found
once (the logits of a batch of the task), then each variant runs in a fresh process
(nothing compiled carries over): the step of ``common.plain_step`` (no group metrics),
and that step plus ``metrics.si_metrics`` (the union and each group) over each grouping.
Compile: seconds to lower and compile the donated step; step: the median of ``--steps``
calls. Variants alternate, the median of ``--repeats``; the script prints the ratios to
the plain step, all measured in this one run. Never asserted."""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from si_jax import data as data_lib
from si_jax import metrics, optim, si_groups
from si_jax.engine import state as state_lib
from si_jax.engine.step import loss_and_aux

MODELS = ("transformer", "transformer_qknorm")


def _setup(name: str):
  """(config, dataset, step context, state) of configs/transformer.py:cpu with model ``name``."""
  config = importlib.import_module("configs.transformer").get_config("cpu")
  config.model.name = name
  ds = data_lib.load_dataset(config.data.name, config.data.source)
  return (config, ds, *state_lib.create_state(config, ds))


def metrics_step(ctx, groups, state, images, labels, idx):
  """``common.plain_step`` plus ``si_metrics`` of x_t -> x_{t+1} over ``groups``."""
  x, y = images[idx], labels[idx]
  (loss, (_, stats)), grads = jax.value_and_grad(
      lambda p: loss_and_aux(ctx.model, p, state.batch_stats, x, y), has_aux=True)(state.params)
  updates, opt_state = ctx.tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  out = metrics.si_metrics(state.params, grads, new_params, groups, lr=optim.step_lr(opt_state))
  return state.replace(step=state.step + 1, params=new_params, batch_stats=stats,
                       opt_state=opt_state), {"loss": loss, **out}


def groupings(name: str) -> dict[str, dict]:
  """{label: groups}: each SI tensor alone, ``find_si_groups``' groups, their kinds and
  the kinds of the model's declared groups (``models.param_groups``)."""
  _, ds, ctx, state = _setup(name)
  fn = lambda p, x: ctx.model.apply({"params": p}, x)
  found = si_groups.find_si_groups(fn, state.params, jnp.asarray(ds.train_images[:common.BATCH]))
  paths = dict.fromkeys(p for ps in found.values() for p in ps)
  return {"per tensor": {"/".join(p): (p,) for p in paths}, "found": found,
          "found kinds": si_groups.compact_groups(found),
          "declared kinds": si_groups.compact_groups(ctx.groups.si_groups)}


def measure(name: str, groups: dict | None, steps: int) -> tuple[float, float]:
  """(compile seconds, median step seconds) of the step; ``groups`` None: the plain step."""
  jax.jit(lambda a: a + 1)(jnp.zeros(()))  # JAX's one-time start-up, outside the timing
  _, ds, ctx, state = _setup(name)
  body = (functools.partial(common.plain_step, ctx) if groups is None
          else functools.partial(metrics_step, ctx, groups))
  idx = common.batch_indices(len(ds.train_labels))[0]
  t0 = time.perf_counter()
  compiled = jax.jit(body, donate_argnums=0).lower(
      state, ds.train_images, ds.train_labels, idx).compile()
  seconds = time.perf_counter() - t0
  return seconds, common.time_jax(compiled, state, ds, steps)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--steps", type=int, default=30)
  args = parser.parse_args()
  print(common.versions(), flush=True)
  for name in MODELS:
    variants = {"plain": None, **common.in_fresh_process(groupings, name)}
    times = {label: [] for label in variants}
    for _ in range(args.repeats):
      for label, groups in variants.items():
        times[label].append(common.in_fresh_process(measure, name, groups, args.steps))
    compile0, step0 = (statistics.median(t) for t in zip(*times["plain"]))
    for label, groups in variants.items():
      compile_s, step_s = (statistics.median(t) for t in zip(*times[label]))
      count = "no group metrics" if groups is None else f"{len(groups):2d} groups"
      print(f"{name:18s} {label:14s} ({count:16s}): compile {compile_s:5.2f} s "
            f"({compile_s / compile0:4.2f}x), step {1e3 * step_s:6.2f} ms "
            f"({step_s / step0:4.2f}x)", flush=True)
    for label in ("found kinds", "declared kinds"):
      for kind, paths in variants[label].items():
        print(f"  {label} {kind}: {', '.join('/'.join(p) for p in paths)}", flush=True)


if __name__ == "__main__":
  main()
