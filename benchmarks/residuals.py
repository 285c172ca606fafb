"""Prints the measured residuals of Eq. (3), Eq. (8) and Proposition 4 for a short run.

python -m benchmarks.residuals [--steps 200]
"""

from __future__ import annotations

import argparse
import functools

import jax
import numpy as np

from benchmarks import common
from si_jax.engine import batching, proposition4
from si_jax.engine import state as state_lib
from si_jax.engine import step as step_lib


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=200)
  args = parser.parse_args()
  lr, wd = 0.1, 0.01
  config = common.digits_config(width=8, lr=lr, wd=wd)
  dataset = state_lib.load_dataset(config)
  ctx, state = state_lib.create_state(config, dataset)
  step = jax.jit(functools.partial(step_lib.train_step, ctx))
  x, y = dataset.train_images, dataset.train_labels
  records, epoch = [], 0
  while len(records) < args.steps:
    for idx in batching.batches(batching.epoch_order(0, epoch, len(y)), 128, True):
      state, m = step(state, x, y, idx)
      records.append({k: float(v) for k, v in jax.device_get(m).items()})
    epoch += 1
  eq3, eq8 = [], []
  for now, nxt in zip(records, records[1:]):
    rho, g = now["weight_norm"], now["grad_norm"]
    eq3.append(abs(nxt["weight_norm"] ** 2 / ((1 - lr * wd) ** 2 * rho**2 + lr**2 * g**2) - 1))
    ratio = lr**2 * now["effective_grad_norm"] ** 2 / ((1 - lr * wd) ** 2 * rho**4)
    eq8.append(abs(now["cosine_distance"] / (1 - (1 + ratio) ** -0.5) - 1))
  print(f"Eq. (3) rho_(t+1)^2 relative residual over {len(eq3)} steps: "
        f"median {np.median(eq3):.2e}, max {np.max(eq3):.2e}")
  print(f"Eq. (8) 1 - cos relative residual: median {np.median(eq8):.2e}, max {np.max(eq8):.2e}")
  for eps, c, steps in ((0.0, 2.0, args.steps), (0.0, 3.0, 10), (1e-5, 2.0, 10)):
    cfg = config.copy_and_resolve_references()
    cfg.optim.lr = 0.01
    cfg.model.norm_epsilon = eps
    r = proposition4.proposition4_trajectory(cfg, c, steps, dataset=dataset)
    print(f"Prop. 4 (eps={eps:g}, c={c:g}, {steps} steps): param rel diff first "
          f"{r['param_rel_diff'][0]:.1e} max {r['param_rel_diff'].max():.1e}; "
          f"loss rel diff max {r['loss_rel_diff'].max():.1e}")


if __name__ == "__main__":
  main()
