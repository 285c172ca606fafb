"""Practical modifications (Sec. 7, appendix I, Figs. 7, 21-23).

Claim: periodic behavior survives trainable non-SI parameters, momentum 0.9, data
augmentation and all three together; layer and instance normalization; and Adam.

  python experiments/run_family.py --config=configs/practical.py:cpu --workdir=runs/practical

Variants: ``cpu`` (digits, width 8, lr 0.1, wd 0.03, 300 epochs: the SI baseline, each
modification, all together, layer norm, instance norm, Adam (lr 1e-3, coupled L2 wd
0.03)); '' (paper: ConvNet width 32 on CIFAR-10, lr 0.01, wd 0.001, 1001 epochs);
``cifar100``, ``resnet``, ``resnet_cifar100`` (Fig. 21). On the 8x8 digits the crop
(padding 4) and horizontal flip are a much stronger augmentation than on CIFAR.
"""

from si_jax.experiment import add_member, experiment_config, scaled_base


def get_config(arg: str | None = None):
  config, scale = scaled_base(arg)
  config = experiment_config(config, "practical")
  add_member(config, "si", "scale-invariant (baseline)")
  add_member(config, "non_si", "trainable non-SI params", {"model.train_non_si": True})
  add_member(config, "momentum", "momentum 0.9", {"optim.momentum": 0.9})
  add_member(config, "augment", "augmentation", {"data.augment": True})
  add_member(config, "all", "all three", {"model.train_non_si": True, "optim.momentum": 0.9,
                                          "data.augment": True})
  add_member(config, "layer_norm", "layer norm", {"model.norm": "layer"})
  add_member(config, "instance_norm", "instance norm", {"model.norm": "instance"})
  adam_lr = 1e-3 if scale == "cpu" else 1e-4
  add_member(config, "adam", f"Adam lr {adam_lr:g}", {"optim.name": "adam", "optim.lr": adam_lr})
  return config
