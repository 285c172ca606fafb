"""Quickstart: periodic behavior in minutes on 2 CPU cores, no download.

  python -m si_jax.main --config=configs/quickstart.py --workdir=/tmp/si_quickstart

Expected on 8x8 digits: the loss converges (phase A), the weight norm shrinks while the
effective LR grows (B) until the loss spikes (C), about ten times in 300 epochs; the figure
goes to WORKDIR/figure.png. Measured: docs/reproduction.md.
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
