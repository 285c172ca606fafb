"""Kills a training process at random moments, resumes it, compares it with a whole run.

The resumed run must end with bit-identical records and weights. Both runs are
``python -m si_jax.main`` processes started from the repository root, so
equality also shows cross-process determinism.
"""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys

import jax
import numpy as np

from si_jax import logs
from si_jax.engine import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def command(workdir: str, epochs: int, extra=()) -> list[str]:
  """The training program on the quickstart config (512 examples, a checkpoint per epoch)."""
  return [sys.executable, "-m", "si_jax.main", "--config=configs/quickstart.py",
          f"--workdir={workdir}", f"--config.train.epochs={epochs}",
          "--config.data.train_size=512", "--config.train.log_every=step",
          "--config.checkpoint.every_epochs=1", "--plot=false", *extra]


def run(workdir: str, epochs: int, timeout: float | None = None) -> subprocess.CompletedProcess:
  """An uninterrupted run in its own process (run from the repository root)."""
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
  """Runs to completion, SIGKILLing up to ``kills`` times; returns the kills done.

  Each kill comes at a uniform random moment in [min_wait, max_wait] s after a
  (re)start; fewer kills are done if the run finishes first.

  Raises:
    RuntimeError: a run that was not killed failed.
  """
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


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Whether two runs' logs and newest checkpoints are identical."""
  same_epochs: bool  # per-epoch records, wall time aside
  same_steps: bool  # per-step records, wall time aside
  same_params: bool  # parameters and BN statistics, bit for bit

  @property
  def identical(self) -> bool:
    """All three are the same."""
    return self.same_epochs and self.same_steps and self.same_params


def compare(reference: str, other: str) -> Comparison:
  """Compares the run in ``other`` with the one in ``reference``."""
  pa, pb = final_params(reference), final_params(other)
  return Comparison(
      same_epochs=records(reference) == records(other),
      same_steps=records(reference, steps=True) == records(other, steps=True),
      same_params=pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa))
