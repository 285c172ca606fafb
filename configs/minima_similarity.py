"""Similarity of the minima reached in different periods (Sec. 6, appendix H, Figs. 6, 20).

  python experiments/minima_similarity.py --config=configs/minima_similarity.py:cpu \
      --workdir=runs/minima

Expected: the minima at the ends of different periods' phase A (two seeds) are far apart in
weight space, and a two-member ensemble of them beats the single models. Variants: ``cpu``,
'' (paper), ``cifar100``, ``resnet`` (Fig. 20). Results: docs/reproduction.md.
"""

from si_jax.engine.experiment import add_member, experiment_config, scaled_base


def get_config(arg: str | None = None):
  config, scale = scaled_base(arg, allowed=("cpu", "paper", "cifar100", "resnet"))
  config = experiment_config(config, "minima_similarity", figure="similarity")
  config.checkpoint.every_epochs, config.checkpoint.keep = (1 if scale == "cpu" else 5), 100000
  if scale != "cpu":
    config.optim.lr = 0.03
  add_member(config, "seed_0", "seed 0", {"seed": 0})
  add_member(config, "seed_1", "seed 1 (independent)", {"seed": 1})
  return config
