"""Fixed weight decay, different learning rates (Fig. 3, appendix F.2, Fig. 17).

  python experiments/run_family.py --config=configs/lr_sweep.py:cpu --workdir=runs/lr_sweep

Expected: periodic behavior for a middle range of learning rates, none for too small
ones (the first period never ends) or too large ones (the loss never converges).
Variants: ``cpu`` (digits, wd 0.03, lr 3 .. 0.003, 300 epochs); ``cifar_cpu`` (the
CIFAR-10 proxy, wd 0.01, lr 1 .. 0.01, 120 epochs, pass --config.data.data_dir=DIR:
lr 0.3 and 0.1 periodic); '' (paper: width 32 on CIFAR-10, wd 0.001, lr 1.0, 0.03,
0.01, 0.001, 1001 epochs); ``cifar100``, ``resnet``, ``resnet_cifar100`` (Fig. 17).
Results: docs/reproduction.md.
"""

from si_jax.engine.experiment import add_member, experiment_config, scaled_base


def lr_name(lr: float) -> str:
  return "lr_" + f"{lr:g}".replace(".", "p").replace("-", "m")


def get_config(arg: str | None = None):
  config, scale = scaled_base(arg)
  config = experiment_config(config, "lr_sweep")
  lrs = {"cpu": (3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003),
         "cifar_cpu": (1.0, 0.3, 0.1, 0.03, 0.01)}.get(scale, (1.0, 0.03, 0.01, 0.001))
  for lr in lrs:
    add_member(config, lr_name(lr), f"lr {lr:g}", {"optim.lr": lr})
  return config
