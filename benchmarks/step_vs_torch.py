"""The paper's ConvNet train step: si_jax (jitted, metrics in the step) vs PyTorch,
side by side in one run, same thread count, CIFAR-shaped random data, batch 128.

  python benchmarks/step_vs_torch.py [--widths 8 16 32] [--steps 20]

Prints per-step times and the ratio of the faster si_jax step (model.conv_impl 'xla'
or 'patches') to the faster PyTorch one (lower is better for si_jax), plus the cost of
the in-step dynamics metrics (si_jax step with vs without them).
Timings are medians over ``--steps`` after warm-up; never asserted anywhere.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import jax

import numpy as np
import optax

from si_jax import config as config_lib
from si_jax import data as data_lib
from si_jax import train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def dataset(n=1024, seed=0, size=32, channels=3):
  """Random CIFAR-shaped data (``size=8, channels=1``: digits-shaped)."""
  rng = np.random.default_rng(seed)
  shape = (size, size, channels)
  return data_lib.Dataset("bench", rng.standard_normal((n, *shape)).astype(np.float32),
                          rng.integers(0, 10, n).astype(np.int32),
                          rng.standard_normal((128, *shape)).astype(np.float32),
                          rng.integers(0, 10, 128).astype(np.int32), 10,
                          np.zeros(channels, np.float32))


def plain_step(task, state, images, labels, idx):
  """The same SGD step without the dynamics metrics (loss only)."""
  x, y = images[idx], labels[idx]
  (loss, (_, stats)), grads = jax.value_and_grad(
      lambda p: train.loss_and_aux(task.model, p, state.batch_stats, x, y), has_aux=True)(state.params)
  updates, opt_state = task.tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=stats, opt_state=opt_state), {"loss": loss}


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
  """This machine's float32 matmul throughput (an n^3 matmul, best of ``repeats``)."""
  a = jax.numpy.asarray(np.random.default_rng(0).standard_normal((n, n)), np.float32)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2 * n**3 / min(times) / 1e9


def flops_of(compiled) -> float:
  """XLA's FLOP count of a compiled computation."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def step_flops(step_fn, state, ds) -> float:
  """XLA's FLOP count of one compiled train step (the profile: achieved GFLOP/s = FLOPs / time)."""
  idx = train.batches(train.epoch_order(0, 0, len(ds.train_labels)), 128, True)[0]
  return flops_of(step_fn.lower(state, ds.train_images, ds.train_labels, idx).compile())


def time_jax(step_fn, state, ds, steps):
  x, y = jax.device_put(ds.train_images), jax.device_put(ds.train_labels)
  order = train.batches(train.epoch_order(0, 0, len(ds.train_labels)), 128, True)
  state, m = step_fn(state, x, y, order[0])
  jax.block_until_ready(m)
  times = []
  for i in range(steps):
    t0 = time.perf_counter()
    state, m = step_fn(state, x, y, order[(i + 1) % len(order)])
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def time_torch(width, ds, steps, channels_last):
  import torch
  from torch_convnet import TorchConvNetSI
  torch.manual_seed(0)
  model = TorchConvNetSI(width=width)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
  opt = torch.optim.SGD([c.weight for c in model.convs()], lr=0.01, weight_decay=1e-3)
  x = torch.from_numpy(ds.train_images[:128].transpose(0, 3, 1, 2).copy())
  if channels_last:
    x = x.contiguous(memory_format=torch.channels_last)
  y = torch.from_numpy(ds.train_labels[:128]).long()
  times = []
  for i in range(steps + 2):
    t0 = time.perf_counter()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    if i >= 2:
      times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32])
  parser.add_argument("--steps", type=int, default=8)
  parser.add_argument("--rounds", type=int, default=3,
                      help="variants are timed in turn, this many times; the best round counts")
  args = parser.parse_args()
  try:
    import torch
    threads = torch.get_num_threads()
  except ImportError:
    torch, threads = None, None
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}), "
        f"torch {torch.__version__ if torch else 'absent'} ({threads} threads), {os.cpu_count()} CPUs")
  peak = matmul_gflops()
  ds = dataset()
  for width in args.widths:
    config = config_lib.base_config()
    config.model.width = width
    task, _ = train.create_task_and_state(config, ds)
    config.model.conv_impl = "patches"
    patches_task, _ = train.create_task_and_state(config, ds)
    variants = {  # name: (jitted step, its task's config)
        "xla": jax.jit(functools.partial(train.train_step, task), donate_argnums=0),
        "plain": jax.jit(functools.partial(plain_step, task), donate_argnums=0),
        "patches": jax.jit(functools.partial(train.train_step, patches_task), donate_argnums=0),
    }
    config.model.conv_impl = "xla"
    states = {k: train.create_task_and_state(config, ds)[1] for k in variants}
    best: dict[str, float] = {}
    for _ in range(args.rounds):  # interleaved, so a load change hits every variant
      for k, fn in variants.items():
        best[k] = min(best.get(k, 1e9), time_jax(fn, states[k], ds, args.steps))
        states[k] = train.create_task_and_state(config, ds)[1]  # (donated)
      if torch:
        for cl in (False, True):
          k = "torch channels-last" if cl else "torch"
          best[k] = min(best.get(k, 1e9), time_torch(width, ds, args.steps, channels_last=cl))
    t_xla, t_plain, t_patches = best["xla"], best["plain"], best["patches"]
    t_metrics = min(t_xla, t_patches)
    line = (f"width {width:3d}: si_jax {t_xla * 1e3:7.1f} ms (without metrics "
            f"{t_plain * 1e3:7.1f} ms, metrics cost {100 * (t_xla / t_plain - 1):+5.1f}%), "
            f"conv_impl=patches {t_patches * 1e3:7.1f} ms")
    if torch:
      t_torch, t_cl = best["torch"], best["torch channels-last"]
      line += (f" | torch {t_torch * 1e3:7.1f} ms, channels-last {t_cl * 1e3:7.1f} ms"
               f" | best si_jax / best torch = {t_metrics / min(t_torch, t_cl):4.2f}x")
    flops = {k: step_flops(variants[k], states[k], ds) for k in ("xla", "patches")}
    line += (f"\n           profile: XLA counts {flops['xla'] / 1e9:.2f} GFLOP/step; achieved "
             f"{flops['xla'] / t_xla / 1e9:.0f} GFLOP/s (xla), {flops['patches'] / t_patches / 1e9:.0f} "
             f"GFLOP/s (patches), vs a float32 matmul peak of {peak:.0f} GFLOP/s here")
    print(line, flush=True)


if __name__ == "__main__":
  main()
