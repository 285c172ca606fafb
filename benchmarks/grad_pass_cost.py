"""What appendix B's gradient pass costs end to end: the same run with the pass off, on
the released code's thinning (the default) and after every epoch.

  python -m benchmarks.grad_pass_cost [--epochs 100] [--width 8]

Each variant trains the quickstart (digits, width 8) for ``--epochs`` epochs in a fresh
process (compile time included) and the script prints wall times and the overhead over
the run without the pass, all measured in this one run. The thinning runs the pass after
epochs 1-20, every 5th to 100, every 10th to 200, every 50th to 1000: 36 passes in 100
epochs, 62 in the paper's 1001.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from benchmarks import common


def _train(epochs: int, width: int, every: int) -> float:
  from si_jax.engine import train
  config = common.digits_config(width=width, epochs=epochs)
  config.train.grad_pass_every = every
  config.checkpoint.every_epochs = 0
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    train.train_and_evaluate(config, workdir, progress=False)
    return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=100)
  parser.add_argument("--width", type=int, default=8)
  args = parser.parse_args()
  variants = {"off": 0, "thinned (default)": -1, "every epoch": 1}
  times = {name: common.in_fresh_process(_train, args.epochs, args.width, every)
           for name, every in variants.items()}
  for name, seconds in times.items():
    print(f"{name:18s} {seconds:7.1f} s  overhead {seconds / times['off'] - 1:+.1%}")


if __name__ == "__main__":
  main()
