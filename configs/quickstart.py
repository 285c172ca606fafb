"""Quickstart: periodic behavior in minutes on 2 CPU cores, no download.

  python -m si_jax.main --config=configs/quickstart.py --workdir=/tmp/si_quickstart

The scale-invariant ConvNet (width 8, fixed last layer of norm 10) on scikit-learn's
8x8 digits, plain SGD, batch 128, lr 0.1, wd 0.03, 300 epochs. Expected: the loss
converges (phase A), the weight norm shrinks while the effective LR grows (phase B)
until the loss spikes (phase C), again and again: 10-11 destabilizations, the first at
epoch 45 (the later ones depend on the CPU: XLA:CPU's rounding differs between
machines); the figure goes to WORKDIR/figure.png (docs/reproduction.md).
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
