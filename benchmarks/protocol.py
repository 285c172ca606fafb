"""The paper's protocol end to end for one epoch: the released code's way (train, then a
second pass over the train set for the train loss and the gradient norms) vs si_jax's
(dynamics metrics inside the train step, one forward pass for the train loss).

  python -m benchmarks.protocol [--width 8] [--images 5120] [--conv_impl xla]

Four timings on the same CIFAR-shaped random data (batch 128), one run, side by side:

* torch two-pass: plain SGD epoch, then per batch forward + backward (no update) for
  the loss and the gradient norm of every conv layer (channels-last);
* si_jax two-pass: the same protocol written in JAX (plain jitted steps, then a jitted
  loss-and-gradient-norm pass);
* si_jax in-step: ``step.train_step`` (all dynamics metrics per step) and the
  train-mode forward pass for ``train_loss`` that ``train_and_evaluate`` logs;
* si_jax in-step without the train-loss pass (what the run costs with eval_every > 1).

Prints seconds per epoch and the ratios; never asserted.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp

from benchmarks import common
from si_jax import optim
from si_jax.engine import loop, records
from si_jax.engine import state as state_lib
from si_jax.engine import step as step_lib


def grad_pass(ctx, params, batch_stats, images, labels, idx):
  """Loss and per-layer gradient norms on one batch, no update (the released code's
  offline pass)."""
  x, y = images[idx], labels[idx]
  (loss, _), grads = jax.value_and_grad(
      lambda p: step_lib.loss_and_aux(ctx.model, p, batch_stats, x, y), has_aux=True)(params)
  return loss, {k: jnp.sqrt(optim.sq_norm(v)) for k, v in grads.items()}


def jax_epochs(config, ds, repeats: int) -> dict[str, float]:
  ctx, state = state_lib.create_state(config, ds)
  x, y = jax.device_put(ds.train_images), jax.device_put(ds.train_labels)
  order = common.batch_indices(len(ds.train_labels), drop_last=False)
  in_step = jax.jit(functools.partial(step_lib.train_step, ctx), donate_argnums=0)
  plain = jax.jit(functools.partial(common.plain_step, ctx), donate_argnums=0)
  second = jax.jit(functools.partial(grad_pass, ctx))
  forward = jax.jit(functools.partial(step_lib.eval_sums, ctx), static_argnums=5)

  def two_pass(state):
    for idx in order:
      state, m = plain(state, x, y, idx)
    out = [second(state.params, state.batch_stats, x, y, idx) for idx in order]
    jax.block_until_ready((state, m, out))
    return state

  def metrics_in_step(state, loss_pass=True):
    pending = []
    for idx in order:
      state, m = in_step(state, x, y, idx)
      pending.append(m)
    records.stack_metrics(pending)
    if loss_pass:
      loop.evaluate_in_batches(forward, state.params, state.batch_stats, x, y, 128, True)
    return state

  times = {"si_jax two-pass": [], "si_jax in-step": [], "si_jax in-step, no loss pass": []}
  runs = {"si_jax two-pass": two_pass, "si_jax in-step": metrics_in_step,
          "si_jax in-step, no loss pass": functools.partial(metrics_in_step, loss_pass=False)}
  states = {k: state_lib.create_state(config, ds)[1] for k in runs}
  for k, f in runs.items():  # compile
    states[k] = f(states[k])
  for _ in range(repeats):
    for k, f in runs.items():  # interleaved, so load changes hit all alike
      t0 = time.perf_counter()
      states[k] = f(states[k])
      times[k].append(time.perf_counter() - t0)
  return {k: min(v) for k, v in times.items()}


def torch_epoch(width, ds, repeats: int) -> float | None:
  try:
    import torch
  except ImportError:
    return None
  from benchmarks.torch_convnet import TorchConvNetSI
  torch.manual_seed(0)
  model = TorchConvNetSI(width=width).to(memory_format=torch.channels_last)
  opt = torch.optim.SGD([c.weight for c in model.convs()], lr=0.01, weight_decay=1e-3)
  x_all = torch.from_numpy(ds.train_images.transpose(0, 3, 1, 2).copy())
  y_all = torch.from_numpy(ds.train_labels).long()
  batches = [(x_all[i:i + 128].contiguous(memory_format=torch.channels_last), y_all[i:i + 128])
             for i in range(0, len(y_all), 128)]

  def epoch():
    model.train()
    for x, y in batches:
      opt.zero_grad()
      torch.nn.functional.cross_entropy(model(x), y).backward()
      opt.step()
    for x, y in batches:  # the second pass: loss and gradient norms, no update
      opt.zero_grad()
      loss = torch.nn.functional.cross_entropy(model(x), y)
      loss.backward()
      [c.weight.grad.norm().item() for c in model.convs()]
      loss.item()

  epoch()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    epoch()
    times.append(time.perf_counter() - t0)
  return min(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=int, default=8)
  parser.add_argument("--images", type=int, default=5120)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--conv_impl", default="xla", choices=["xla", "patches"])
  args = parser.parse_args()
  ds = common.dataset(n=args.images)
  config = common.convnet_config(args.width, args.conv_impl)
  print(f"{common.versions()}; width {args.width}, {args.images} images "
        f"({-(-args.images // 128)} steps), conv_impl {args.conv_impl}; best of {args.repeats}")
  times = jax_epochs(config, ds, args.repeats)
  t_torch = torch_epoch(args.width, ds, args.repeats)
  if t_torch is not None:
    times["torch two-pass (channels-last)"] = t_torch
  base = times["si_jax in-step"]
  for k, v in times.items():
    print(f"{k:32s} {v:8.2f} s/epoch   {v / base:5.2f}x si_jax in-step")


if __name__ == "__main__":
  main()
