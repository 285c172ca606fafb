"""Fixed learning-rate x weight-decay product, different ratios (appendix F.1,
Figs. 15-16), with the rescaled-initialization runs of Proposition 4.

Claims: runs with the same product settle into the same effective-LR and
effective-gradient-norm ranges (Remark 3) and periods of similar length, after warm-ups
that differ (same initial norm, different equilibrium norms); with the initialization
rescaled by c = sqrt(lr / lr_ref) the runs are identical to the reference, warm-up
included (Proposition 4: (c x0, c^2 eta, lam / c^2) gives the same directions).

  python experiments/run_family.py --config=configs/lr_wd_product.py:cpu --workdir=runs/product

Variants: ``cpu`` (digits, product 0.003: lr 0.3/0.1/0.03 with wd 0.01/0.03/0.1, plus
lr 0.3 and 0.03 with rescaled init; 300 epochs); '' (paper: ConvNet width 32 on
CIFAR-10, product 1e-5: lr 0.1/0.01/0.001 with wd 1e-4/1e-3/1e-2, plus rescaled runs).
"""

import math

from si_jax.experiment import add_member, experiment_config, scaled_base


def get_config(arg: str | None = None):
  config, scale = scaled_base(arg, allowed=("cpu", "paper", "cifar100", "resnet"))
  config = experiment_config(config, "lr_wd_product", figure="product")
  if scale == "cpu":
    reference, pairs = (0.1, 0.03), ((0.3, 0.01), (0.1, 0.03), (0.03, 0.1))
  else:
    reference, pairs = (0.01, 0.001), ((0.1, 0.0001), (0.01, 0.001), (0.001, 0.01))
  for i, (lr, wd) in enumerate(pairs):
    add_member(config, f"ratio_{i}", f"lr {lr:g}, wd {wd:g}", {"optim.lr": lr, "optim.wd": wd})
  for i, (lr, wd) in enumerate(pairs):
    if (lr, wd) != reference:
      c = math.sqrt(lr / reference[0])
      add_member(config, f"rescaled_{i}", f"lr {lr:g}, wd {wd:g}, init x{c:.3g}",
                 {"optim.lr": lr, "optim.wd": wd, "model.init_scale": c})
  return config
