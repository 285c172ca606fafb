"""Kill a training run with SIGKILL at random moments, resume it each time, and check
that it ends with exactly the metrics and parameters of an uninterrupted run.

  python experiments/kill_resume.py --kills 20 [--epochs 300] [--workdir /tmp/kills]

Both runs are separate processes, so equality also shows cross-process determinism.
Kills land anywhere: inside a step, during a checkpoint write, between a checkpoint
and the next log line. Prints the number of kills tried and the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir: str, epochs: int, extra=()) -> list[str]:
  return [sys.executable, "-m", "si_jax.main", "--config=configs/quickstart.py",
          f"--workdir={workdir}", f"--config.train.epochs={epochs}",
          "--config.data.train_size=512", "--config.train.log_every=step",
          "--config.checkpoint.every_epochs=1", "--plot=false", *extra]


def run(workdir, epochs, timeout=None):
  return subprocess.run(command(workdir, epochs), cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout)


def records(workdir: str, name: str) -> list[dict]:
  with open(os.path.join(workdir, name)) as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]


def final_params(workdir: str) -> dict[str, np.ndarray]:
  """The SI and last-layer parameters of the newest checkpoint."""
  import jax  # noqa: F401  (orbax needs it)
  import orbax.checkpoint as ocp
  ckpt = os.path.join(workdir, "checkpoints")
  epoch = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
  tree = ocp.StandardCheckpointer().restore(os.path.join(ckpt, str(epoch), "state"))
  flat = {}

  def walk(prefix, node):
    if isinstance(node, dict):
      for k, v in node.items():
        walk(f"{prefix}/{k}", v)
    else:
      flat[prefix] = np.asarray(node)

  walk("", tree["params"])
  return flat


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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--kills", type=int, default=20)
  parser.add_argument("--epochs", type=int, default=300)
  parser.add_argument("--workdir", default="/tmp/si_jax_kills")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  shutil.rmtree(args.workdir, ignore_errors=True)
  ref, killed = os.path.join(args.workdir, "reference"), os.path.join(args.workdir, "killed")
  t0 = time.time()
  out = run(ref, args.epochs)
  if out.returncode:
    raise SystemExit(out.stderr[-2000:])
  print(f"reference run: {time.time() - t0:.0f} s")
  n = kill_and_resume(killed, args.epochs, args.kills, args.seed)
  same_epochs = records(ref, "metrics.jsonl") == records(killed, "metrics.jsonl")
  same_steps = records(ref, "steps.jsonl") == records(killed, "steps.jsonl")
  pa, pb = final_params(ref), final_params(killed)
  same_params = pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
  print(f"kills: {n}; metrics.jsonl identical: {same_epochs}; steps.jsonl identical: "
        f"{same_steps}; final parameters bit-identical: {same_params}")
  if not (same_epochs and same_steps and same_params):
    raise SystemExit(1)


if __name__ == "__main__":
  main()
