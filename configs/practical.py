"""Practical modifications (Sec. 7, appendix I, Figs. 7, 21-23).

  python experiments/run_family.py --config=configs/practical.py:cpu --workdir=runs/practical

Expected: periodic behavior survives trainable non-SI parameters, momentum 0.9, augmentation
and all three together; layer and instance normalization; Adam. Variants: ``cpu``, ``cifar_cpu``
(Fig. 7), '' (paper), ``cifar100``, ``resnet``, ``resnet_cifar100``; docs/reproduction.md.
"""

from si_jax.engine.experiment import add_member, experiment_config, scaled_base


def get_config(arg: str | None = None):
  config, scale = scaled_base(arg)
  config = experiment_config(config, "practical")
  if scale == "paper":
    config.model.width = 64  # appendix B: width 64 for the practical modifications
  add_member(config, "si", "scale-invariant (baseline)")
  cpu = scale == "cpu"
  if scale == "cifar_cpu":  # Fig. 7's modifications one by one
    # at CPU scale momentum runs at lr 0.01: the effective step lr / (1 - momentum) stays 0.1
    momentum = {"optim.momentum": 0.9, "optim.lr": 0.01}
    add_member(config, "non_si", "trainable non-SI params", {"model.train_non_si": True})
    add_member(config, "momentum", "momentum 0.9, lr 0.01", momentum)
    add_member(config, "augment", "augmentation", {"data.augment": True})
    return config
  # the released code trains non-SI parameters from PyTorch's init of the last layer
  # (not rescaled) with the SI lr; at CPU scale the rescaled layer is kept, at wd 0.01 (the
  # measured periodic regime of docs/reproduction_history.md)
  non_si = {"model.train_non_si": True,
            **({"optim.wd": 0.01} if cpu else {"model.last_layer_norm": None})}
  momentum = {"optim.momentum": 0.9, **({"optim.lr": 0.01} if cpu else {})}
  add_member(config, "non_si", "trainable non-SI params" + (", wd 0.01" if cpu else ""), non_si)
  add_member(config, "momentum", "momentum 0.9" + (", lr 0.01" if cpu else ""), momentum)
  add_member(config, "augment", "augmentation", {"data.augment": True})
  add_member(config, "all", "all three" + (", lr 0.01, wd 0.01" if cpu else ""),
             {**non_si, **momentum, "data.augment": True})
  add_member(config, "layer_norm", "layer norm", {"model.norm": "layer"})
  add_member(config, "instance_norm", "instance norm", {"model.norm": "instance"})
  adam_lr = 1e-3 if scale == "cpu" else 1e-4
  add_member(config, "adam", f"Adam lr {adam_lr:g}", {"optim.name": "adam", "optim.lr": adam_lr})
  return config
