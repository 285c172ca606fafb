"""A full-batch GD step (appendix C: 4.5K images) of the ConvNet: time, peak memory and
the FLOP count XLA reports, as a fraction of this machine's measured matmul throughput.

  python -m benchmarks.gd_step [--width 32] [--images 4500] [--micro 0 500]

``--micro 0`` is one pass with exact full-batch BN statistics (train.micro_batch_size
None); other values accumulate gradients over micro-batches of that size (ghost BN
statistics), the memory-saving path. Prints per configuration: seconds per GD step,
XLA's FLOPs per step, achieved GFLOP/s and its fraction of the float32 matmul peak
(a 2048^3 matmul timed here), XLA's temp-buffer estimate and the process peak RSS.
"""

from __future__ import annotations

import argparse
import functools
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from si_jax.engine import batching
from si_jax.engine import state as state_lib
from si_jax.engine import step as step_lib


def temp_bytes(compiled) -> float:
  try:
    m = compiled.memory_analysis()
    return float(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)
  except Exception:  # not every backend reports it
    return float("nan")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=int, default=32)
  parser.add_argument("--images", type=int, default=4500)
  parser.add_argument("--micro", type=int, nargs="+", default=[0, 500])
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--conv_impl", default="xla", choices=["xla", "patches"])
  args = parser.parse_args()
  peak = common.matmul_gflops()
  print(f"{common.versions()}; float32 matmul peak {peak:.0f} GFLOP/s; "
        f"width {args.width}, {args.images} images, conv_impl {args.conv_impl}")
  ds = common.dataset(n=args.images)
  ctx, state = state_lib.create_state(common.convnet_config(args.width, args.conv_impl), ds)
  x, y = jax.device_put(ds.train_images), jax.device_put(ds.train_labels)
  micro_fn = jax.jit(functools.partial(step_lib.micro_batch_grads, ctx))
  gd_fn = jax.jit(functools.partial(step_lib.gd_apply, ctx), static_argnums=5)
  n = len(ds.train_labels)
  for micro in args.micro:
    chunks = batching.batches(np.arange(n, dtype=np.int32), micro or n, False)
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    compiled = {len(c): micro_fn.lower(state.params, state.batch_stats, zeros, x, y, c).compile()
                for c in chunks}
    flops = sum(common.flops_of(compiled[len(c)]) for c in chunks)
    memory = max(temp_bytes(c) for c in compiled.values())

    def step(state):
      grad_sum, stats = jax.tree.map(jnp.zeros_like, state.params), state.batch_stats
      loss, correct = 0.0, 0.0
      for idx in chunks:  # noqa: B023 -- step runs within this iteration
        grad_sum, stats, l, c = micro_fn(state.params, stats, grad_sum, x, y, idx)
        loss, correct = loss + l, correct + c
      state, m = gd_fn(state, grad_sum, stats, loss, correct, n)
      jax.block_until_ready(m)
      return state

    state = step(state)  # compile and warm up
    times = []
    for _ in range(args.steps):
      t0 = time.perf_counter()
      state = step(state)
      times.append(time.perf_counter() - t0)
    t = min(times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    label = "one pass (exact BN stats)" if not micro else f"micro-batches of {micro}"
    print(f"{label:28s}: {t:6.2f} s/step, {flops / 1e9:7.1f} GFLOP/step, {flops / t / 1e9:6.1f} "
          f"GFLOP/s = {100 * flops / t / 1e9 / peak:4.1f}% of the matmul peak; XLA buffers "
          f"{memory / 2**30:5.2f} GiB, process peak RSS so far {rss:5.2f} GiB", flush=True)


if __name__ == "__main__":
  main()
