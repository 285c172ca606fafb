"""SGD on the sphere at a fixed effective LR: three regimes (Kodryan et al. 2022, Fig. 1).

  python experiments/run_family.py --config=configs/three_regimes.py:cpu \
      --workdir=runs/three_regimes_cpu

Expected (``optim.sphere='total'``: ``optim.lr`` is the ELR): convergence for the smallest
ELRs, chaotic equilibrium in the middle, divergence for the largest; each member's ``regime``
in WORKDIR/summary.json. Variants: ``cpu``, ``cifar_cpu``, '' (paper); docs/three_regimes.md.
"""

import numpy as np

from si_jax.engine.experiment import add_member, experiment_config, scaled_base

SEEDS = (0, 1, 2)  # three seeds per ELR (issue 23); seeds 0, 1 were trained first


def elr_grid(low_exp: float, high_exp: float, num: int) -> tuple[float, ...]:
  """``num`` ELRs log-spaced from 10**low_exp to 10**high_exp, rounded to 3 digits."""
  return tuple(float(f"{e:.3g}") for e in np.logspace(low_exp, high_exp, num))


def member_name(elr: float, seed: int) -> str:
  return "elr_" + f"{elr:g}".replace(".", "p").replace("-", "m") + f"_s{seed}"


def get_config(arg: str | None = None):
  config, scale = scaled_base(arg, allowed=("cpu", "cifar_cpu", "paper"))
  config = experiment_config(config, "three_regimes")
  config.optim.sphere = "total"
  config.optim.wd = 0.0
  config.train.distance_to_init = True
  config.train.hessian_probes = 2
  config.train.grad_pass_every = -1  # the released thinning
  if scale == "cpu":
    config.model.conv_impl = "patches"  # one vmapped program pays on CPU with patches
    config.train.epochs = 60
    config.train.grad_pass_every = 5
    elrs = elr_grid(-3.5, -0.5, 13)
  elif scale == "cifar_cpu":  # sized for tens of minutes on 2 cores
    config.model.conv_impl = "patches"
    config.data.train_size, config.data.test_size = 512, 500
    config.train.epochs = 80
    config.train.grad_pass_every = 5
    elrs = elr_grid(-3.5, -0.5, 10)
  else:
    config.train.epochs = 1000
    elrs = elr_grid(-7, -1, 13)
  config.optim.lr = elrs[0]
  for elr in elrs:
    for seed in SEEDS:
      add_member(config, member_name(elr, seed), f"ELR {elr:g}, seed {seed}",
                 {"optim.lr": elr, "seed": seed})
  return config
