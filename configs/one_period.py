"""A close look at one period, logged per step (Figs. 4, 11), with Fig. 13's bounds.

  python experiments/one_period.py --config=configs/one_period.py:cpu --workdir=runs/one_period

Expected: phases A (the loss falls), B (the loss near its minimum, the norm shrinking, the
effective LR growing), C (the loss spikes, the norm jumps). Variants: SGD ``cpu``, ``cifar_cpu``,
'' (paper); GD ``gd_cpu``, ``gd`` (Fig. 11), ``gd13`` (Fig. 13). Results: docs/reproduction.md.
"""

from si_jax.engine.experiment import scaled_base


def get_config(arg: str | None = None):
  if arg in ("cpu", "gd_cpu", "cifar_cpu"):
    config, _ = scaled_base(arg if arg == "cifar_cpu" else "cpu")
  elif arg in ("", None, "gd", "gd13"):
    config, _ = scaled_base("paper")
  else:
    raise ValueError(f"unknown config variant {arg!r}; use cpu, gd_cpu, cifar_cpu, '', gd or gd13")
  config.train.log_every = "step"
  if arg in ("cpu", "cifar_cpu"):
    config.train.epochs = 100 if arg == "cpu" else 80
  elif arg == "gd_cpu":
    config.train.mode = "gd"
    config.data.train_size = 512
    config.optim.lr, config.optim.wd = 0.5, 0.01
    # 3,000 steps: two confirmed destabilizations (856, 1713) for period 1 (measured 2026-12-05)
    config.train.epochs, config.train.eval_every = 3000, 10
    config.checkpoint.every_epochs = 250
  elif arg in ("gd", "gd13"):
    config.train.mode = "gd"
    config.data.train_size, config.data.test_size, config.data.subset = 4500, 5000, "random"
    config.optim.lr, config.optim.wd = 0.5, (0.001 if arg == "gd" else 1e-4)
    config.train.epochs, config.train.eval_every = 10000, 50
    config.train.micro_batch_size = 128  # the released code's ghost batch-128 statistics
    config.checkpoint.every_epochs = 500
  else:
    config.train.epochs = 400
  return config
