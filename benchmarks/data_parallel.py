"""Train-step time with the batch split over N CPU devices vs one device.

  python -m benchmarks.data_parallel [--width 32] [--devices 1 2] [--steps 10]

Each device count runs in its own process (the CPU's device count is fixed when JAX
starts). Prints ms/step and the speed-up against the first count. Never asserted.
"""

from __future__ import annotations

import argparse
import functools

import jax

from benchmarks import common
from si_jax.engine import sharding
from si_jax.engine import state as state_lib
from si_jax.engine import step as step_lib


def data_parallel_step_time(devices: int, width: int, steps: int) -> float:
  """Median seconds of a train step whose batch is split over ``devices`` CPU devices
  (run it in a fresh process: ``common.in_fresh_process``)."""
  common.use_cpu_devices(devices)
  ds = common.dataset()
  ctx, state = state_lib.create_state(common.convnet_config(width), ds)
  mesh = sharding.data_mesh() if jax.local_device_count() > 1 else None
  step = jax.jit(functools.partial(step_lib.train_step, ctx, mesh=mesh), donate_argnums=0)
  return common.time_jax(step, state, ds, steps)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=int, default=32)
  parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--steps", type=int, default=10)
  args = parser.parse_args()
  base = None
  for n in args.devices:
    t = common.in_fresh_process(data_parallel_step_time, n, args.width, args.steps)
    base = base or t
    print(f"width {args.width}, {n} device(s): {t * 1e3:7.1f} ms/step, speed-up {base / t:4.2f}x",
          flush=True)


if __name__ == "__main__":
  main()
