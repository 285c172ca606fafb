"""What several benchmarks share: random CIFAR-shaped data and the configs that train
on it, the SGD step without the dynamics metrics, timing of jitted and PyTorch steps,
XLA's FLOP count against this machine's matmul peak, and fresh processes for
measurements that need one (a device count, an empty compilation cache)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import statistics
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import optax

from si_jax import config as config_lib
from si_jax import data as data_lib
from si_jax.engine import batching
from si_jax.engine.step import loss_and_aux

BATCH = 128


def dataset(n: int = 1024, seed: int = 0, size: int = 32, channels: int = 3,
            test: int = BATCH) -> data_lib.Dataset:
  """Random images of CIFAR's shape (``size=8, channels=1``: digits' shape), 10 classes."""
  rng = np.random.default_rng(seed)
  shape = (size, size, channels)
  return data_lib.Dataset("bench", rng.standard_normal((n, *shape)).astype(np.float32),
                          rng.integers(0, 10, n).astype(np.int32),
                          rng.standard_normal((test, *shape)).astype(np.float32),
                          rng.integers(0, 10, test).astype(np.int32), 10,
                          np.zeros(channels, np.float32))


def convnet_config(width: int, conv_impl: str = "xla", lr: float | None = None,
                   wd: float | None = None) -> ml_collections.ConfigDict:
  """The paper's ConvNet at ``width`` (the base config otherwise). Its data section names
  the embedded digits, which need no files to validate; the benchmarks pass their own
  ``dataset()`` to ``state.create_state``."""
  config = config_lib.base_config()
  config.model.width, config.model.conv_impl = width, conv_impl
  config.data.name, config.data.source = "digits", "embedded"
  if lr is not None:
    config.optim.lr = lr
  if wd is not None:
    config.optim.wd = wd
  return config


def digits_config(width: int = 8, epochs: int = 1, lr: float = 0.1,
                  wd: float = 0.03) -> ml_collections.ConfigDict:
  """The quickstart's run: the ConvNet on the embedded 8x8 digits."""
  config = convnet_config(width, lr=lr, wd=wd)
  config.train.epochs = epochs
  return config


def batch_indices(n: int, batch_size: int = BATCH, drop_last: bool = True) -> list[np.ndarray]:
  """The mini-batches of epoch 0 (data-order seed 0) of ``n`` examples."""
  return batching.batches(batching.epoch_order(0, 0, n), batch_size, drop_last)


def plain_step(ctx, state, images, labels, idx):
  """The SGD step of ``step.train_step`` without the dynamics metrics (loss only)."""
  x, y = images[idx], labels[idx]
  (loss, (_, stats)), grads = jax.value_and_grad(
      lambda p: loss_and_aux(ctx.model, p, state.batch_stats, x, y), has_aux=True)(state.params)
  updates, opt_state = ctx.tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=stats, opt_state=opt_state), {"loss": loss}


def time_jax(step_fn, state, ds: data_lib.Dataset, steps: int) -> float:
  """Median seconds of ``steps`` calls of a jitted (state, images, labels, idx) step
  after one warm-up call, each waited for."""
  x, y = jax.device_put(ds.train_images), jax.device_put(ds.train_labels)
  order = batch_indices(len(ds.train_labels))
  state, m = step_fn(state, x, y, order[0])
  jax.block_until_ready(m)
  times = []
  for i in range(steps):
    t0 = time.perf_counter()
    state, m = step_fn(state, x, y, order[(i + 1) % len(order)])
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def time_torch(width: int, ds: data_lib.Dataset, steps: int, channels_last: bool) -> float:
  """Median seconds of a PyTorch SGD step of the same ConvNet on the first batch."""
  import torch

  from benchmarks.torch_convnet import TorchConvNetSI
  torch.manual_seed(0)
  model = TorchConvNetSI(width=width)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
  opt = torch.optim.SGD([c.weight for c in model.convs()], lr=0.01, weight_decay=1e-3)
  x = torch.from_numpy(ds.train_images[:BATCH].transpose(0, 3, 1, 2).copy())
  if channels_last:
    x = x.contiguous(memory_format=torch.channels_last)
  y = torch.from_numpy(ds.train_labels[:BATCH]).long()
  times = []
  for i in range(steps + 2):
    t0 = time.perf_counter()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    if i >= 2:  # warm-up
      times.append(time.perf_counter() - t0)
  return statistics.median(times)


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


def step_flops(step_fn, state, ds: data_lib.Dataset) -> float:
  """XLA's FLOP count of one compiled train step (achieved GFLOP/s = FLOPs / time)."""
  idx = batch_indices(len(ds.train_labels))[0]
  return flops_of(step_fn.lower(state, ds.train_images, ds.train_labels, idx).compile())


def versions() -> str:
  """'jax X (backend), N CPUs': the header line of a benchmark's output."""
  return f"jax {jax.__version__} ({jax.default_backend()}), {os.cpu_count()} CPUs"


def in_fresh_process(fn: Callable[..., Any], *args) -> Any:
  """``fn(*args)`` in a new Python process (spawned: nothing of this one's JAX state,
  compiled programs or device count carries over); ``fn`` must be a module-level
  function and its result picklable."""
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
    return pool.submit(fn, *args).result()


def use_cpu_devices(n: int) -> None:
  """Splits the CPU into ``n`` XLA devices; only before JAX's first computation (in a
  fresh process, ``in_fresh_process``)."""
  jax.config.update("jax_num_cpu_devices", n)
