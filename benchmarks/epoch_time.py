"""Time of one training epoch of the paper-scale ConvNet (width 32, batch 128) here.

Measures the jitted train step (metrics included) on CIFAR-shaped data resident on
the device, then reports the projected epoch time for 50,000 images (391 steps) and
the quickstart's epoch. Prints ratios measured in this one run; never asserted.

  python -m benchmarks.epoch_time [--widths 8 32] [--steps 30]
"""

from __future__ import annotations

import argparse
import functools
import time

import jax

from benchmarks import common
from si_jax.engine import state as state_lib
from si_jax.engine import step as step_lib


def step_time(width: int, steps: int, batch: int = 128, n: int = 2048) -> float:
  ds = common.dataset(n=n, test=256)
  ctx, state = state_lib.create_state(common.convnet_config(width, lr=0.01, wd=0.001), ds)
  step = jax.jit(functools.partial(step_lib.train_step, ctx), donate_argnums=0)
  x, y = jax.device_put(ds.train_images), jax.device_put(ds.train_labels)
  order = common.batch_indices(n, batch)
  t0 = time.perf_counter()
  state, m = step(state, x, y, order[0])
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for i in range(steps):
    state, m = step(state, x, y, order[(i + 1) % len(order)])
  jax.block_until_ready(m)
  per_step = (time.perf_counter() - t0) / steps
  print(f"width {width:3d}: first step (compile) {compile_s:6.2f} s, "
        f"step {per_step * 1e3:7.1f} ms, "
        f"projected CIFAR-10 epoch (391 steps) {per_step * 391:6.1f} s")
  return per_step


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--widths", type=int, nargs="+", default=[8, 32])
  parser.add_argument("--steps", type=int, default=30)
  args = parser.parse_args()
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.device_count()} device(s))")
  for w in args.widths:
    step_time(w, args.steps)


if __name__ == "__main__":
  main()
