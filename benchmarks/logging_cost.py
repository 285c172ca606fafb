"""The cost of per-step logging over per-epoch logging in a real run (the quickstart's
digits ConvNet): ``train.log_every='step'`` writes every step's metrics to steps.bin.

  python -m benchmarks.logging_cost [--epochs 30] [--repeats 3]

Both runs compute the same in-step metrics (they always do); per-step logging adds the
host-side records and the JSON lines. Runs alternate, best of ``--repeats``, evaluation
and checkpoints off so the logging is what differs. Never asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks import common
from si_jax import logs
from si_jax.engine import train


def run(log_every: str, epochs: int, workdir: str) -> float:
  config = common.digits_config(width=8, epochs=epochs)
  config.train.log_every = log_every
  config.train.eval_every = 10**6  # only after the last epoch
  config.checkpoint.every_epochs = 0
  t0 = time.perf_counter()
  train.train_and_evaluate(config, workdir, progress=False)
  return time.perf_counter() - t0


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=30)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  times = {"epoch": [], "step": []}
  with tempfile.TemporaryDirectory() as tmp:
    run("epoch", 1, os.path.join(tmp, "warmup"))
    for r in range(args.repeats):
      for mode in ("epoch", "step"):
        times[mode].append(run(mode, args.epochs, os.path.join(tmp, f"{mode}_{r}")))
    steps = len(logs.read_run(os.path.join(tmp, "step_0"), steps=True))
  e, s = min(times["epoch"]), min(times["step"])
  print(f"{args.epochs} epochs ({steps} steps) of the quickstart run: per-epoch logging {e:.2f} s, "
        f"per-step logging {s:.2f} s: per-step costs {100 * (s / e - 1):+.1f}% "
        f"({1e6 * (s - e) / steps:.0f} us per step)")


if __name__ == "__main__":
  main()
