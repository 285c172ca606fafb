"""Quickstart: periodic behavior in minutes on 2 CPU cores, no download.

Scale-invariant ConvNet (width 8, fixed last layer of norm 10) on scikit-learn's 8x8
digits (1,438 train images), plain SGD, batch 128. Training converges (phase A), the
weight norm then shrinks under weight decay while the effective LR grows (phase B)
until the loss spikes (phase C), and the cycle repeats.

  python -m si_jax.main --config=configs/quickstart.py --workdir=/tmp/si_quickstart

Expected (what si_jax.analysis.phases reports): 11 destabilizations, at epochs 45, 67, 96, 123,
138, 155, 179, 190, 214, 248 and 277, each a train-loss spike one epoch before a jump of
the weight norm; about a minute on 2 quiet CPU cores (4 measured on a loaded machine);
the figure is written to WORKDIR/figure.png.
"""

from si_jax.config import base_config


def get_config(arg: str | None = None):
  if arg:
    raise ValueError(f"unknown config variant {arg!r}: configs/quickstart.py has none")
  config = base_config()
  config.model.width = 8
  config.data.name = "digits"
  config.data.source = "embedded"
  config.optim.lr = 0.1
  config.optim.wd = 0.03
  config.train.epochs = 300
  return config
