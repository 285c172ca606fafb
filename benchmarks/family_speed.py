"""End to end: a family trained as one vmapped program vs its members one after another.

  python -m benchmarks.family_speed [--epochs 30] [--members 4] [--cifar_dir DIR]

For each device split of the CPU (1 device, and as many devices as cores) a child
process trains the same family twice, vmapped (``sweep.train_sweep``) and sequentially
(``train.train_and_evaluate`` per member), compile time included, and the parent prints
every wall time and the ratios against today's default (sequential on one device), all
measured in this one run. Families: the digits ``:cpu`` lr sweep (width 8, patches
convolution) and, with ``--cifar_dir``, a CIFAR-shaped one (32x32x3, width 8, 2,048
proxy images). With more than one device the vmapped family runs on a ('runs', 'data')
mesh: members split over the devices.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks import common

LRS = (0.3, 0.1, 0.03, 0.01, 0.2, 0.05, 0.02, 0.005)


def family_config(kind: str, epochs: int, cifar_dir: str | None):
  from si_jax.config import base_config
  config = base_config()
  config.model.width, config.model.conv_impl = 8, "patches"
  config.optim.lr, config.optim.wd = 0.1, 0.03
  config.train.epochs, config.checkpoint.every_epochs = epochs, 0
  config.train.grad_pass_every = -1
  if kind == "digits":
    config.data.name, config.data.source = "digits", "embedded"
  else:
    config.data.name, config.data.source, config.data.data_dir = "cifar10", "archive", cifar_dir
    config.data.train_size, config.data.test_size = 2048, 1000
  config.data.order_seed = config.seed
  return config


def _child(devices: int, kind: str, epochs: int, members: int, cifar_dir) -> tuple[float, float]:
  """(vmapped, sequential) seconds, in a fresh process: the device split must be set
  before JAX's first computation."""
  common.use_cpu_devices(devices)
  from si_jax.engine import sweep, train
  config = family_config(kind, epochs, cifar_dir)
  overrides = [{"optim.lr": lr} for lr in LRS[:members]]
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    sweep.train_sweep(config, overrides, os.path.join(tmp, "vmapped"), progress=False)
    vmapped = time.perf_counter() - start
    start = time.perf_counter()
    for i, o in enumerate(overrides):
      train.train_and_evaluate(sweep.member_config(config, o), os.path.join(tmp, f"seq_{i}"),
                               progress=False)
    sequential = time.perf_counter() - start
  return vmapped, sequential


def measure(devices: int, kind: str, args) -> tuple[float, float]:
  return common.in_fresh_process(_child, devices, kind, args.epochs, args.members,
                                 args.cifar_dir)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=30)
  parser.add_argument("--members", type=int, default=4, choices=range(2, len(LRS) + 1))
  parser.add_argument("--cifar_dir", default=None,
                      help="a folder holding cifar-10-batches-py/ (the CPU-scale proxy)")
  args = parser.parse_args()
  kinds = ["digits"] + (["cifar"] if args.cifar_dir else [])
  splits = sorted({1, os.cpu_count() or 1})
  print(f"{args.members} members x {args.epochs} epochs; device splits {splits}; "
        f"{os.cpu_count()} cores")
  for kind in kinds:
    times = {d: measure(d, kind, args) for d in splits}
    base = times[1][1]  # sequential on one device: the default before
    for d, (vmapped, sequential) in times.items():
      print(f"{kind:6s} {d} device(s): vmapped {vmapped:7.1f} s  sequential {sequential:7.1f} s  "
            f"| speed-up vs sequential on 1 device: vmapped {base / vmapped:.2f}x, "
            f"sequential {base / sequential:.2f}x")
    best = min(times, key=lambda d: times[d][0])
    print(f"{kind:6s} fastest family: vmapped on {best} device(s)")


if __name__ == "__main__":
  main()
