"""The paper's ConvNet train step: si_jax (jitted, metrics in the step) vs PyTorch,
side by side in one run, same thread count, CIFAR-shaped random data, batch 128.

  python -m benchmarks.step_vs_torch [--widths 8 16 32] [--steps 8] [--rounds 3]

Prints per-step times and the ratio of the faster si_jax step (model.conv_impl 'xla'
or 'patches') to the faster PyTorch one (lower is better for si_jax), plus the cost of
the in-step dynamics metrics (si_jax step with vs without them).
Timings are medians over ``--steps`` after warm-up; never asserted anywhere.
"""

from __future__ import annotations

import argparse
import functools

import jax

from benchmarks import common
from si_jax.engine import state as state_lib
from si_jax.engine import step as step_lib


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
  print(f"{common.versions()}, torch {torch.__version__ if torch else 'absent'} "
        f"({threads} threads)")
  peak = common.matmul_gflops()
  ds = common.dataset()
  for width in args.widths:
    config = common.convnet_config(width)
    ctx, _ = state_lib.create_state(config, ds)
    patches_ctx, _ = state_lib.create_state(common.convnet_config(width, "patches"), ds)
    variants = {  # name: jitted step (the states are interchangeable: same parameters)
        "xla": jax.jit(functools.partial(step_lib.train_step, ctx), donate_argnums=0),
        "plain": jax.jit(functools.partial(common.plain_step, ctx), donate_argnums=0),
        "patches": jax.jit(functools.partial(step_lib.train_step, patches_ctx), donate_argnums=0),
    }
    states = {k: state_lib.create_state(config, ds)[1] for k in variants}
    best: dict[str, float] = {}
    for _ in range(args.rounds):  # interleaved, so a load change hits every variant
      for k, fn in variants.items():
        best[k] = min(best.get(k, 1e9), common.time_jax(fn, states[k], ds, args.steps))
        states[k] = state_lib.create_state(config, ds)[1]  # (donated)
      if torch:
        for cl in (False, True):
          k = "torch channels-last" if cl else "torch"
          best[k] = min(best.get(k, 1e9),
                        common.time_torch(width, ds, args.steps, channels_last=cl))
    t_xla, t_plain, t_patches = best["xla"], best["plain"], best["patches"]
    t_metrics = min(t_xla, t_patches)
    line = (f"width {width:3d}: si_jax {t_xla * 1e3:7.1f} ms (without metrics "
            f"{t_plain * 1e3:7.1f} ms, metrics cost {100 * (t_xla / t_plain - 1):+5.1f}%), "
            f"conv_impl=patches {t_patches * 1e3:7.1f} ms")
    if torch:
      t_torch, t_cl = best["torch"], best["torch channels-last"]
      line += (f" | torch {t_torch * 1e3:7.1f} ms, channels-last {t_cl * 1e3:7.1f} ms"
               f" | best si_jax / best torch = {t_metrics / min(t_torch, t_cl):4.2f}x")
    flops = {k: common.step_flops(variants[k], states[k], ds) for k in ("xla", "patches")}
    line += (f"\n           profile: XLA counts {flops['xla'] / 1e9:.2f} GFLOP/step; achieved "
             f"{flops['xla'] / t_xla / 1e9:.0f} GFLOP/s (xla), "
             f"{flops['patches'] / t_patches / 1e9:.0f} "
             f"GFLOP/s (patches), vs a float32 matmul peak of {peak:.0f} GFLOP/s here")
    print(line, flush=True)


if __name__ == "__main__":
  main()
