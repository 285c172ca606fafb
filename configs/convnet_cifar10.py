"""Scale-invariant ConvNet on CIFAR-10 with SGD and weight decay (Figs. 1-3, 17).

  python -m si_jax.main --config=configs/convnet_cifar10.py --workdir=runs/convnet \
      --config.data.data_dir=DIR          # DIR holds cifar-10-batches-py/ or the .tar.gz

Expected: after a warm-up, destabilizations (a loss spike answered by a weight-norm jump)
a few hundred epochs apart (hours on a GPU); ``:cpu`` (2,048 images) shows several within
150 epochs on 2 CPU cores. Measured: docs/reproduction_history.md (Part 2), docs/detector.md.
"""

from si_jax.config import base_config


def get_config(arg: str | None = None):
  config = base_config()
  config.data.name = "cifar10"
  config.data.source = "archive"
  config.model.width = 32
  config.optim.lr = 0.01
  config.optim.wd = 0.001
  config.train.epochs = 1001
  if arg == "cpu":
    config.model.width = 8
    config.data.train_size = 2048
    config.data.test_size = 2000
    config.optim.lr = 0.1
    config.optim.wd = 0.01
    config.train.epochs = 150
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; use '' or 'cpu'")
  return config
