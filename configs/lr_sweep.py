"""Fixed weight decay, different learning rates (Fig. 3, appendix F.2, Fig. 17).

  python experiments/run_family.py --config=configs/lr_sweep.py:cpu --workdir=runs/lr_sweep

Expected: periodic behavior for a middle range of learning rates, none for too small ones
(the first period never ends) or too large ones (the loss never converges). Variants: ``cpu``,
``cifar_cpu``, '' (paper), ``cifar100``, ``resnet``, ``resnet_cifar100``; docs/reproduction.md.
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
