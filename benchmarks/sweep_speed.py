"""A sweep of N learning rates: one vmapped step over N members vs N single steps
(si_jax, both convolution implementations) vs N PyTorch steps.

  python -m benchmarks.sweep_speed [--members 8] [--widths 8 16] [--steps 10]

Prints per-step times of the vmapped sweep and of one single run for model.conv_impl
'xla' and 'patches', the speed-up N * single / vmapped (> 1: vmapping wins), and
N sequential PyTorch steps (channels-last). Measured in one run; never asserted.
"""

from __future__ import annotations

import argparse
import functools

import jax

from benchmarks import common
from si_jax.engine import sharding, sweep
from si_jax.engine import state as state_lib
from si_jax.engine import step as step_lib


def lr_sweep(width: int, impl: str, members: int, ds):
  """(step context, stacked states) of ``members`` runs with learning rates 0.01 * 2^i."""
  config = common.convnet_config(width, impl)
  ctx, states = sweep.create_sweep(config, [{"optim.lr": 0.01 * 2**i} for i in range(members)],
                                   ds)
  return ctx, sweep.stack_states(states)


def vmapped_step(ctx, mesh=None):
  """The train step vmapped over the runs axis of the state (data shared)."""
  return jax.jit(jax.vmap(functools.partial(step_lib.train_step, ctx, mesh=mesh),
                          in_axes=(0, None, None, None)), donate_argnums=0)


def mesh_sweep_step_time(devices: int, width: int, impl: str, members: int, digits: bool,
                         steps: int) -> float:
  """Median seconds of the vmapped sweep's step on a ('runs', 'data') mesh of
  ``devices`` CPU devices (run it in a fresh process: ``common.in_fresh_process``)."""
  common.use_cpu_devices(devices)
  ds = common.dataset(size=8, channels=1) if digits else common.dataset()
  ctx, stacked = lr_sweep(width, impl, members, ds)
  mesh = sharding.runs_mesh(members)
  return common.time_jax(vmapped_step(ctx, mesh), sharding.place_runs(stacked, mesh), ds, steps)


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
  ds = common.dataset(size=8, channels=1) if args.digits else common.dataset()
  print(f"{common.versions()}, {args.members} members, batch 128, "
        f"{'8x8x1' if args.digits else '32x32x3'} inputs")
  try:
    import torch  # noqa: F401
  except ImportError:
    torch = None
  n = args.members
  for width in args.widths:
    best_sequential = None
    for impl in ("xla", "patches"):
      ctx, stacked = lr_sweep(width, impl, n, ds)
      vmapped = vmapped_step(ctx)
      f_sweep = common.step_flops(vmapped, stacked, ds)
      t_sweep = common.time_jax(vmapped, stacked, ds, args.steps)
      single_ctx, single_state = state_lib.create_state(common.convnet_config(width, impl), ds)
      single = jax.jit(functools.partial(step_lib.train_step, single_ctx), donate_argnums=0)
      f_single = common.step_flops(single, single_state, ds)
      t_single = common.time_jax(single, single_state, ds, args.steps)
      best_sequential = min(best_sequential or 1e9, n * t_single)
      print(f"width {width:3d} conv_impl {impl:7s}: vmapped {t_sweep * 1e3:8.1f} ms/step, "
            f"{n} x single {n * t_single * 1e3:8.1f} ms, speed-up {n} x single / vmapped = "
            f"{n * t_single / t_sweep:4.2f}x; XLA FLOPs vmapped / single = "
            f"{f_sweep / f_single:4.2f}, achieved {f_sweep / t_sweep / 1e9:5.1f} vs "
            f"{f_single / t_single / 1e9:5.1f} GFLOP/s", flush=True)
      if args.devices > 1:
        t_mesh = common.in_fresh_process(mesh_sweep_step_time, args.devices, width, impl, n,
                                         args.digits, args.steps)
        print(f"width {width:3d} conv_impl {impl:7s}: the sweep on {args.devices} forced host "
              f"devices ('runs' x 'data' mesh) {t_mesh * 1e3:8.1f} ms/step, speed-up "
              f"{n} x single / mesh sweep = {n * t_single / t_mesh:4.2f}x", flush=True)
    if torch and not args.digits:
      t_torch = common.time_torch(width, ds, args.steps, channels_last=True)
      print(f"width {width:3d}: {n} sequential PyTorch steps (channels-last) "
            f"{n * t_torch * 1e3:8.1f} ms; best sequential si_jax / PyTorch = "
            f"{best_sequential / (n * t_torch):4.2f}x", flush=True)


if __name__ == "__main__":
  main()
