"""Similarity of the minima reached in different periods (Sec. 6, appendix H, Figs. 6, 20).

  python experiments/minima_similarity.py --config=configs/minima_similarity.py:cpu \
      --workdir=runs/minima

Expected: the minima at the ends of different periods' phase A (two seeds) are far apart in
weight space, and a two-member ensemble of them beats the single models. Variants: ``cpu``,
'' (paper), ``cifar100``, ``resnet`` (Fig. 20); ``cpu_seed1`` and ``cpu_seed2`` take seed 1
(independent: 2) and seed 2 (independent: 0) as the reference. Results: docs/reproduction.md.
"""

from si_jax.engine.experiment import add_member, experiment_config, scaled_base


def get_config(arg: str | None = None):
  reference = 0
  if arg in ("cpu_seed1", "cpu_seed2"):
    arg, reference = "cpu", int(arg[-1])
  config, scale = scaled_base(arg, allowed=("cpu", "paper", "cifar100", "resnet"))
  config = experiment_config(config, "minima_similarity", figure="similarity")
  config.checkpoint.every_epochs, config.checkpoint.keep = (1 if scale == "cpu" else 5), 100000
  if scale != "cpu":
    config.optim.lr = 0.03
  other = (reference + 1) % 3
  add_member(config, f"seed_{reference}", f"seed {reference}", {"seed": reference})
  add_member(config, f"seed_{other}", f"seed {other} (independent)", {"seed": other})
  return config
