"""Train-step time with the batch split over N forced host devices vs one device.

  python benchmarks/data_parallel.py [--width 32] [--devices 1 2] [--steps 10]

Each device count runs in its own process (XLA_FLAGS must be set before jax starts).
Prints ms/step and the speed-up against the first count. Never asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = r"""
import functools, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + sys.argv[1]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[4])))
import jax
from si_jax import config as config_lib, train
from step_vs_torch import dataset, time_jax
config = config_lib.base_config()
config.model.width = int(sys.argv[2])
ds = dataset()
task, state = train.create_task_and_state(config, ds)
mesh = train.data_mesh() if jax.local_device_count() > 1 else None
step = jax.jit(functools.partial(train.train_step, task, mesh=mesh), donate_argnums=0)
print(time_jax(step, state, ds, int(sys.argv[3])))
"""


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=int, default=32)
  parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--steps", type=int, default=10)
  args = parser.parse_args()
  here = os.path.abspath(__file__)
  base = None
  for n in args.devices:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(args.width), str(args.steps), here],
                         capture_output=True, text=True, check=True)
    t = float(out.stdout.strip().splitlines()[-1])
    base = base or t
    print(f"width {args.width}, {n} device(s): {t * 1e3:7.1f} ms/step, speed-up {base / t:4.2f}x",
          flush=True)


if __name__ == "__main__":
  main()
