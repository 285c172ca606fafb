"""Kill a training run with SIGKILL at random moments, resume it each time, and check
that it ends with exactly the metrics and parameters of an uninterrupted run.

  python experiments/kill_resume.py --kills=20 [--epochs=300] [--workdir=/tmp/kills]

Both runs are separate processes, so equality also shows cross-process determinism.
Kills land anywhere: inside a step, during a checkpoint write, between a checkpoint
and the next log line. Prints the number of kills tried and the comparison.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
from absl import flags

from si_jax import logs
from si_jax.engine import checkpoint
from si_jax.programs import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir: str, epochs: int, extra=()) -> list[str]:
  """The training program (``python -m si_jax.main``) on the quickstart config: 512
  examples, per-step logs, a checkpoint every epoch."""
  return [sys.executable, "-m", "si_jax.main", "--config=configs/quickstart.py",
          f"--workdir={workdir}", f"--config.train.epochs={epochs}",
          "--config.data.train_size=512", "--config.train.log_every=step",
          "--config.checkpoint.every_epochs=1", "--plot=false", *extra]


def run(workdir, epochs, timeout=None):
  """An uninterrupted run in its own process."""
  return subprocess.run(command(workdir, epochs), cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout)


def records(workdir: str, steps: bool = False) -> list[dict]:
  """The run's per-epoch (or per-step) records, wall time aside."""
  return [{k: v for k, v in r.items() if k != "wall_time"}
          for r in logs.read_run(workdir, steps=steps)]


def final_params(workdir: str) -> dict[str, np.ndarray]:
  """The parameters and BN statistics of the newest checkpoint, by tree path."""
  params, batch_stats, _ = checkpoint.load_weights(workdir)
  leaves = jax.tree_util.tree_flatten_with_path({"params": params, "batch_stats": batch_stats})[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def kill_and_resume(workdir: str, epochs: int, kills: int, seed: int = 0,
                    min_wait: float = 1.0, max_wait: float = 8.0) -> int:
  """Runs to completion, SIGKILLing up to ``kills`` times, each at a uniform random
  moment in [min_wait, max_wait] s after a (re)start; returns the kills done (fewer if
  the run finished first)."""
  rng = random.Random(seed)
  done = 0
  while True:
    proc = subprocess.Popen(command(workdir, epochs), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    if done < kills:
      try:
        proc.wait(timeout=rng.uniform(min_wait, max_wait))
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        done += 1
        continue
    else:
      proc.wait()
    if proc.returncode != 0:
      raise RuntimeError(f"run failed (rc {proc.returncode}): {proc.stderr.read()[-2000:]}")
    return done


def main(argv):
  del argv  # only flags
  values = flags.FLAGS
  shutil.rmtree(values.workdir, ignore_errors=True)
  ref, killed = os.path.join(values.workdir, "reference"), os.path.join(values.workdir, "killed")
  t0 = time.time()
  out = run(ref, values.epochs)
  if out.returncode:
    sys.exit(f"error: the reference run failed:\n{out.stderr[-2000:]}")
  print(f"reference run: {time.time() - t0:.0f} s")
  n = kill_and_resume(killed, values.epochs, values.kills, values.seed)
  same_epochs = records(ref) == records(killed)
  same_steps = records(ref, steps=True) == records(killed, steps=True)
  pa, pb = final_params(ref), final_params(killed)
  same_params = pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
  print(f"kills: {n}; per-epoch records identical: {same_epochs}; per-step records "
        f"identical: {same_steps}; final parameters bit-identical: {same_params}")
  if not (same_epochs and same_steps and same_params):
    sys.exit(1)


if __name__ == "__main__":  # flags only here: tests import this module's functions
  flags.DEFINE_integer("kills", 20, "SIGKILLs to deliver", lower_bound=0)
  flags.DEFINE_integer("epochs", 300, "epochs of the quickstart run", lower_bound=1)
  flags.DEFINE_string("workdir", "/tmp/si_jax_kills", "scratch directory (deleted first)")
  flags.DEFINE_integer("seed", 0, "seed of the kill times")
  cli.run(main)
