"""Full-batch GD (appendix C, Figs. 10 and 12) with the fixed-weight-norm ablation.

  python experiments/gd_fixed_norm.py --config=configs/gd.py:cpu --workdir=runs/gd

Expected: GD at several learning rates is periodic too (Fig. 10); the SI norm fixed (at the
init's x 0.5, 1, 2, or where the reference run stands before a destabilization) removes it
(Fig. 12). Variants: ``cpu``, ``cifar_cpu``, '' (paper). Results: docs/reproduction.md.
"""

from si_jax.engine.experiment import add_member, experiment_config, scaled_base

REFERENCE = "lr_0p5"  # the run whose pre-destabilization norm is fixed (gd_fixed_norm.py;
# at paper scale pass --reference=lr_1: Fig. 12 is GD at lr 1.0, wd 1e-4)


def get_config(arg: str | None = None):
  config, scale = scaled_base(arg, allowed=("cpu", "cifar_cpu", "paper"))
  config = experiment_config(config, "gd", figure="gd")
  config.train.mode = "gd"
  config.checkpoint.every_epochs, config.checkpoint.keep = 50, 10000
  if scale == "cpu":
    config.data.train_size = 512
    config.optim.wd = 0.03
    config.train.epochs, config.train.eval_every = 1500, 10
    lrs = (0.1, 0.5, 2.0)
  elif scale == "cifar_cpu":
    config.data.train_size, config.data.test_size = 512, 1000
    config.train.epochs, config.train.eval_every = 500, 10
    config.train.micro_batch_size = 128  # the released code's ghost batch-128 statistics
    lrs = (0.5, 2.0)
  else:
    config.data.train_size, config.data.test_size, config.data.subset = 4500, 5000, "random"
    config.optim.wd = 1e-4
    config.train.epochs, config.train.eval_every = 20000, 50
    config.checkpoint.every_epochs = 250
    config.train.micro_batch_size = 128  # the released code's ghost batch-128 statistics
    lrs = (0.1, 0.5, 1.0, 2.0)
  config.optim.lr = 1.0 if scale == "paper" else 0.5  # the fixed-norm members' lr
  for lr in lrs:
    add_member(config, "lr_" + f"{lr:g}".replace(".", "p"), f"GD lr {lr:g}", {"optim.lr": lr})
  for c in ((1.0,) if scale == "cifar_cpu" else (0.5, 1.0, 2.0)):
    add_member(config, "fixed_init_x" + f"{c:g}".replace(".", "p"),
               f"norm fixed at init x{c:g}",
               {"optim.fix_si_norm": True, "model.init_scale": c})
  return config
