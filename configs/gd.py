"""Full-batch GD (appendix C, Figs. 10 and 12) with the fixed-weight-norm ablation.

Claims: periodic behavior is not an SGD-noise effect: full-batch GD shows it too, for a
range of learning rates (Fig. 10); fixing the SI weight norm removes it, whether the
norm is fixed at initialization (any scale) or at a norm reached by regular training
just before a destabilization (Fig. 12).

  python experiments/gd_fixed_norm.py --config=configs/gd.py:cpu --workdir=runs/gd

Members here: regular GD at three learning rates and GD with the norm fixed at
initialization scaled by 0.5, 1 and 2 (fewer on ``cifar_cpu``).
``experiments/gd_fixed_norm.py`` then adds two members that start from the reference
run's checkpoint taken before its first destabilization: one with the norm fixed
there, one regular (the control).

Variants: ``cpu`` (512 digits, width 8, wd 0.03, lr 0.1/0.5/2, 1500 steps, the
fixed-norm members and the reference at lr 0.5; measured, 401 s with stage 2: lr 0.5
destabilizes 7 times from step 231, lr 2 9 times from step 99, lr 0.1 and the
fixed-norm members never, the control from step 200 repeats lr 0.5's 7); ``cifar_cpu`` (512 images of the
CIFAR-10 proxy, 1,000 test images, width 8, wd 0.01, lr 0.5/2, 500 steps, ghost
batch-128 statistics, the norm fixed at init, pass --config.data.data_dir=DIR;
measured, 16 min with stage 2: lr 0.5 destabilizes at steps 162, 274, 348, 478 and lr 2
at 253, 285, 341, 469; neither fixed-norm member destabilizes, the control from step
100 repeats 162, 274, 348, 478); '' (paper: ConvNet width 32 on a random 4.5K subset
of CIFAR-10, 5K random test images, wd 1e-4 (appendix B, Figs. 10 and 12), lr
0.1/0.5/1/2, 20000 steps; the fixed-norm members and the reference run at lr 1.0 as
Fig. 12 states).

GD semantics, as in the released code: each step sums the gradients of the
sum-reduced losses of batch-128 train-mode passes (BN statistics of 128 examples,
"ghost" batches) and divides by N (``train.micro_batch_size=128``, the paper-scale
default here). ``--config.train.micro_batch_size=None`` uses exact full-set statistics
(one pass over all N examples) instead.
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
