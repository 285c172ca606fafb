"""What a resumed run compiles: a fresh run and its resume, each a fresh process sharing one
empty persistent compilation cache.

  python -m benchmarks.resume_compile [--epochs 2] [--grad_pass_every 1]

A quickstart-shaped run (width 8, the embedded digits) trains 1 epoch and checkpoints, then a
second process resumes it to ``--epochs``. Printed per process: CPU seconds, XLA compilations
and persistent-cache hits. A resume whose restored state differs from a fresh one in how its
arrays are committed to a device compiles its programs anew (no cache hit) and its step once
more after the first step; ``si_jax.engine.checkpoint`` restores them uncommitted, as a fresh
state is, so the resume reads the fresh run's programs from the cache.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

CHILD = r"""
import resource, sys
import jax
jax.config.update("jax_log_compiles", True)
from si_jax import config as config_lib
from si_jax.engine import train
c = config_lib.base_config()
c.model.width = 8
c.data.name, c.data.source = "digits", "embedded"
c.train.epochs, c.train.grad_pass_every = int(sys.argv[2]), int(sys.argv[3])
c.checkpoint.every_epochs = 1
train.train_and_evaluate(c, sys.argv[1], progress=False)
r = resource.getrusage(resource.RUSAGE_SELF)
print("CPU", r.ru_utime + r.ru_stime, file=sys.stderr)
"""


def _process(workdir: str, epochs: int, grad_pass_every: int, cache: str) -> dict[str, float]:
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PLATFORMS": "cpu",
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  out = subprocess.run([sys.executable, "-c", CHILD, workdir, str(epochs), str(grad_pass_every)],
                       capture_output=True, text=True, env=env, check=False)
  if out.returncode:
    raise SystemExit(f"error: the run failed:\n{out.stderr[-2000:]}")
  err = out.stderr
  return {"cpu_s": float(re.search(r"^CPU (\S+)", err, re.M)[1]),
          "compilations": len(re.findall(r"Finished XLA compilation", err)),
          "cache_hits": len(re.findall(r"Persistent compilation cache hit", err))}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=2, help="the resumed run's length")
  parser.add_argument("--grad_pass_every", type=int, default=1)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    cache, workdir = os.path.join(tmp, "cache"), os.path.join(tmp, "run")
    fresh = _process(workdir, 1, args.grad_pass_every, cache)
    resumed = _process(workdir, args.epochs, args.grad_pass_every, cache)
  for name, r in (("fresh, 1 epoch", fresh), (f"resumed to {args.epochs}", resumed)):
    print(f"{name:>16}: {r['cpu_s']:6.1f} CPU-s, {r['compilations']} compilations, "
          f"{r['cache_hits']} cache hits")
  print(f"resumed / fresh CPU: {resumed['cpu_s'] / fresh['cpu_s']:.2f}")


if __name__ == "__main__":
  main()
