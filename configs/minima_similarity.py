"""Similarity of the minima reached in different periods (Sec. 6, appendix H, Figs. 6, 20).

  python experiments/minima_similarity.py --config=configs/minima_similarity.py:cpu \
      --workdir=runs/minima

Two runs (seeds 0 and 1, the second the "independent" one), checkpointed every epoch
(``cpu``) or 5 epochs (paper); the script takes the checkpoint at the end of phase A of
every period. Expected: the minima of different periods are far apart in weight space,
and a two-member ensemble of them beats the single models. Variants: ``cpu`` (digits,
lr 0.1, wd 0.03, 300 epochs); '' (paper: width 32 on CIFAR-10, lr 0.03, wd 0.001, 1001
epochs); ``cifar100``, ``resnet`` (Fig. 20).
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
