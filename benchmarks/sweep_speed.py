"""A sweep of N learning rates: one vmapped step over N members vs N single steps
(si_jax, both convolution implementations) vs N PyTorch steps.

  python benchmarks/sweep_speed.py [--members 8] [--widths 8 16] [--steps 10]

Prints per-step times of the vmapped sweep and of one single run for model.conv_impl
'xla' and 'patches', the speed-up N * single / vmapped (> 1: vmapping wins), and
N sequential PyTorch steps (channels-last). Measured in one run; never asserted.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys

import jax

from si_jax import config as config_lib
from si_jax import sweep, train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_vs_torch import dataset, step_flops, time_jax, time_torch  # noqa: E402


MESH_CHILD = r"""
import functools, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + sys.argv[1]
sys.path.insert(0, sys.argv[6])
import jax
from si_jax import config as config_lib, sweep, train
from step_vs_torch import dataset, time_jax
config = config_lib.base_config()
config.model.width, config.model.conv_impl = int(sys.argv[2]), sys.argv[3]
config.data.name, config.data.source = "digits", "embedded"
ds = dataset(size=8, channels=1) if sys.argv[5] == "1" else dataset()
members = [{"optim.lr": 0.01 * 2**i} for i in range(int(sys.argv[4]))]
task, stacked = sweep.create_sweep(config, members, ds)
mesh = sweep.sweep_mesh(len(members))
stacked = jax.device_put(stacked, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("runs")))
step = jax.jit(jax.vmap(functools.partial(train.train_step, task, mesh=mesh),
                        in_axes=(0, None, None, None)), donate_argnums=0)
print(time_jax(step, stacked, ds, int(sys.argv[7])))
"""


def mesh_sweep_time(devices, width, impl, members, digits, steps) -> float:
  """The vmapped sweep on a ('runs', 'data') mesh of forced host devices (own process)."""
  here = os.path.dirname(os.path.abspath(__file__))
  out = subprocess.run([sys.executable, "-c", MESH_CHILD, str(devices), str(width), impl,
                        str(members), "1" if digits else "0", here, str(steps)],
                       capture_output=True, text=True, check=True)
  return float(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--members", type=int, default=8)
  parser.add_argument("--widths", type=int, nargs="+", default=[8, 16])
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--devices", type=int, default=2,
                      help="also time the sweep split over this many forced host devices")
  parser.add_argument("--digits", action="store_true",
                      help="8x8x1 inputs (the cpu-scale experiments) instead of 32x32x3")
  args = parser.parse_args()
  ds = dataset(size=8, channels=1) if args.digits else dataset()
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}), {os.cpu_count()} CPUs, "
        f"{args.members} members, batch 128, {'8x8x1' if args.digits else '32x32x3'} inputs")
  try:
    import torch  # noqa: F401
  except ImportError:
    torch = None
  n = args.members
  for width in args.widths:
    best_sequential = None
    for impl in ("xla", "patches"):
      config = config_lib.base_config()
      config.model.width, config.model.conv_impl = width, impl
      config.data.name, config.data.source = "digits", "embedded"  # the data passed below is used
      members = [{"optim.lr": 0.01 * 2**i} for i in range(n)]
      task, stacked = sweep.create_sweep(config, members, ds)
      vmapped = jax.jit(jax.vmap(functools.partial(train.train_step, task),
                                 in_axes=(0, None, None, None)), donate_argnums=0)
      f_sweep = step_flops(vmapped, stacked, ds)
      t_sweep = time_jax(vmapped, stacked, ds, args.steps)
      single_task, single_state = train.create_task_and_state(config, ds)
      single = jax.jit(functools.partial(train.train_step, single_task), donate_argnums=0)
      f_single = step_flops(single, single_state, ds)
      t_single = time_jax(single, single_state, ds, args.steps)
      best_sequential = min(best_sequential or 1e9, n * t_single)
      print(f"width {width:3d} conv_impl {impl:7s}: vmapped {t_sweep * 1e3:8.1f} ms/step, "
            f"{n} x single {n * t_single * 1e3:8.1f} ms, speed-up {n} x single / vmapped = "
            f"{n * t_single / t_sweep:4.2f}x; XLA FLOPs vmapped / single = "
            f"{f_sweep / f_single:4.2f}, achieved {f_sweep / t_sweep / 1e9:5.1f} vs "
            f"{f_single / t_single / 1e9:5.1f} GFLOP/s", flush=True)
      if args.devices > 1:
        t_mesh = mesh_sweep_time(args.devices, width, impl, n, args.digits, args.steps)
        print(f"width {width:3d} conv_impl {impl:7s}: the sweep on {args.devices} forced host "
              f"devices ('runs' x 'data' mesh) {t_mesh * 1e3:8.1f} ms/step, speed-up "
              f"{n} x single / mesh sweep = {n * t_single / t_mesh:4.2f}x", flush=True)
    if torch and not args.digits:
      t_torch = time_torch(width, ds, args.steps, channels_last=True)
      print(f"width {width:3d}: {n} sequential PyTorch steps (channels-last) "
            f"{n * t_torch * 1e3:8.1f} ms; best sequential si_jax / PyTorch = "
            f"{best_sequential / (n * t_torch):4.2f}x", flush=True)


if __name__ == "__main__":
  main()
