"""Kill a training run with SIGKILL at random moments, resume it each time, and check
that it ends with exactly the metrics and parameters of an uninterrupted run.

  python experiments/kill_resume.py --kills=20 [--epochs=300] [--workdir=/tmp/kills]

Both runs are separate processes, so equality also shows cross-process determinism.
Kills land anywhere: inside a step, during a checkpoint write, between a checkpoint
and the next log line. Prints the number of kills tried and the comparison
(``si_jax.engine.kill_resume``).
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from absl import flags

from si_jax.engine import kill_resume
from si_jax.programs import cli

_KILLS = flags.DEFINE_integer("kills", 20, "SIGKILLs to deliver", lower_bound=0)
_EPOCHS = flags.DEFINE_integer("epochs", 300, "epochs of the quickstart run", lower_bound=1)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/si_jax_kills", "scratch directory (deleted first)")
_SEED = flags.DEFINE_integer("seed", 0, "seed of the kill times")


def main(argv):
  del argv  # only flags
  shutil.rmtree(_WORKDIR.value, ignore_errors=True)
  ref, killed = (os.path.join(_WORKDIR.value, name) for name in ("reference", "killed"))
  t0 = time.time()
  out = kill_resume.run(ref, _EPOCHS.value)
  if out.returncode:
    sys.exit(f"error: the reference run failed:\n{out.stderr[-2000:]}")
  print(f"reference run: {time.time() - t0:.0f} s")
  n = kill_resume.kill_and_resume(killed, _EPOCHS.value, _KILLS.value, _SEED.value)
  same = kill_resume.compare(ref, killed)
  print(f"kills: {n}; per-epoch records identical: {same.same_epochs}; per-step records "
        f"identical: {same.same_steps}; final parameters bit-identical: {same.same_params}")
  if not same.identical:
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main)
