"""First-step compile time of the train step per model, without and with the persistent
compilation cache (what ``--compilation_cache_dir`` saves on repeated launches).

  python -m benchmarks.compile_time

Each measurement runs in a fresh process (so nothing is cached in memory): lowering
+ compiling the jitted step with metrics, batch 128, CIFAR-shaped input. 'cold' uses an
empty cache directory, 'warm' the same directory again. Then the models' init
(``models.init_variables``) compiled at XLA's default LLVM level 3 and at the level 2
the library uses, with whether both give the same bits. Never asserted.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from si_jax import models
from si_jax.engine import state as state_lib
from si_jax.engine import step as step_lib

CASES = [("convnet_si", 8, "xla"), ("convnet_si", 32, "xla"), ("convnet_si", 32, "patches"),
         ("resnet18_si", 64, "xla")]


def compile_seconds(name: str, width: int, impl: str, cache: str) -> float:
  """Seconds to lower and compile the train step of the model, with the persistent
  compilation cache in ``cache`` (run it in a fresh process: ``common.in_fresh_process``)."""
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  config = common.convnet_config(width, impl)
  config.model.name = name
  ds = common.dataset(n=256)
  ctx, state = state_lib.create_state(config, ds)
  step = jax.jit(functools.partial(step_lib.train_step, ctx), donate_argnums=0)
  idx = common.batch_indices(256)[0]
  t0 = time.perf_counter()
  step.lower(state, ds.train_images, ds.train_labels, idx).compile()
  return time.perf_counter() - t0


def init_seconds(name: str, width: int, level: int) -> tuple[float, str]:
  """(seconds to compile the model's init at LLVM ``level``, a hash of its bits)."""
  model = models.create_model(name, num_classes=10, width=width, norm="batch")
  init = jax.jit(functools.partial(model.init, train=False),
                 compiler_options={"xla_backend_optimization_level": level})
  args = (jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32))
  t0 = time.perf_counter()
  compiled = init.lower(*args).compile()
  seconds = time.perf_counter() - t0
  leaves = jax.tree.leaves(compiled(*args))
  return seconds, hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in leaves)).hexdigest()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.parse_args()
  print(common.versions())
  for name, width, impl in CASES:
    with tempfile.TemporaryDirectory() as cache:
      cold = common.in_fresh_process(compile_seconds, name, width, impl, cache)
      warm = common.in_fresh_process(compile_seconds, name, width, impl, cache)
    print(f"{name:12s} width {width:3d} conv_impl {impl:7s}: compile {cold:6.2f} s cold, "
          f"{warm:5.2f} s from the persistent cache ({cold / warm:4.1f}x faster)", flush=True)
  for name, width in dict.fromkeys((n, w) for n, w, _ in CASES):
    (t3, h3), (t2, h2) = (common.in_fresh_process(init_seconds, name, width, level)
                          for level in (3, 2))
    print(f"{name:12s} width {width:3d} init: {t3:5.2f} s at level 3, {t2:5.2f} s at level 2 "
          f"({t3 / t2:4.1f}x faster), same bits: {h3 == h2}", flush=True)


if __name__ == "__main__":
  main()
