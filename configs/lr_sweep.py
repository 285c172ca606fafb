"""Fixed weight decay, different learning rates (Fig. 3, appendix F.2, Fig. 17).

Claim: periodic behavior appears for a middle range of learning rates and is absent for
too small ones (the first period never ends) and too large ones (the loss never
converges).

  python experiments/run_family.py --config=configs/lr_sweep.py:cpu --workdir=runs/lr_sweep

Variants: ``cpu`` (digits, width 8, wd 0.03, lr 3 .. 0.003, 300 epochs, ~6 min on 2
cores); ``cifar_cpu`` (the CIFAR-10 proxy: width 8, 2,048 images, wd 0.01, lr 1 .. 0.01,
120 epochs, pass --config.data.data_dir=DIR; expected, as measured: lr 0.3 and 0.1
periodic (destabilizations at 56, 75, 90, 106, 113 and 50, 59, 75, 93, 120), lr 0.03 one
at epoch 78, lr 1 never converges, lr 0.01 never destabilizes; 27 min); '' (paper:
ConvNet width 32 on CIFAR-10, wd 0.001, lr 1.0, 0.03, 0.01, 0.001, 1001 epochs: the
released code's Figure-2 runs); ``cifar100``, ``resnet``, ``resnet_cifar100`` (Fig.
17's other panels, same learning rates).
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
