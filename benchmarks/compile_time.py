"""First-step compile time of the train step per model, without and with the persistent
compilation cache (what ``--compilation_cache_dir`` saves on repeated launches).

  python benchmarks/compile_time.py

Each measurement runs in a fresh subprocess (so nothing is cached in memory): lowering
+ compiling the jitted step with metrics, batch 128, CIFAR-shaped input. 'cold' uses an
empty cache directory, 'warm' the same directory again. Never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CASES = [("convnet_si", 8, "xla"), ("convnet_si", 32, "xla"), ("convnet_si", 32, "patches"),
         ("resnet18_si", 64, "xla")]

CHILD = r"""
import functools, json, sys, time
import jax
cache = sys.argv[4]
jax.config.update("jax_compilation_cache_dir", cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
sys.path.insert(0, sys.argv[5])
from step_vs_torch import dataset
from si_jax import config as config_lib, train
config = config_lib.base_config()
config.model.name, config.model.width, config.model.conv_impl = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ds = dataset(n=256)
task, state = train.create_task_and_state(config, ds)
step = jax.jit(functools.partial(train.train_step, task), donate_argnums=0)
idx = train.batches(train.epoch_order(0, 0, 256), 128, True)[0]
t0 = time.perf_counter()
compiled = step.lower(state, ds.train_images, ds.train_labels, idx).compile()
print(json.dumps({"compile_s": time.perf_counter() - t0}))
"""


def measure(name, width, impl, cache) -> float:
  here = os.path.dirname(os.path.abspath(__file__))
  out = subprocess.run([sys.executable, "-c", CHILD, name, str(width), impl, cache, here],
                       capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])["compile_s"]


def main():
  import jax
  print(f"jax {jax.__version__} ({jax.default_backend()}), {os.cpu_count()} CPUs")
  for name, width, impl in CASES:
    with tempfile.TemporaryDirectory() as cache:
      cold = measure(name, width, impl, cache)
      warm = measure(name, width, impl, cache)
    print(f"{name:12s} width {width:3d} conv_impl {impl:7s}: compile {cold:6.2f} s cold, "
          f"{warm:5.2f} s from the persistent cache ({cold / warm:4.1f}x faster)", flush=True)


if __name__ == "__main__":
  main()
