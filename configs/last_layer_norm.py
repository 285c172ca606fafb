"""The fixed last layer's norm (appendix G, Fig. 19).

  python experiments/run_family.py --config=configs/last_layer_norm.py:cpu \
      --workdir=runs/last_layer

Expected: a small norm (near PyTorch's init, ~1.8 for 10 classes) keeps the train loss high
and may remove the periods; large norms (10, the main text's) give a low loss and periods.
Variants: ``cpu``, '' (paper), ``resnet_cifar100``. Results: docs/reproduction.md.
"""

from si_jax.engine.experiment import add_member, experiment_config, scaled_base


def get_config(arg: str | None = None):
  config, _ = scaled_base(arg, allowed=("cpu", "paper", "resnet_cifar100"))
  config = experiment_config(config, "last_layer_norm")
  # appendix G: the lowest norm near PyTorch's init, sqrt(classes / 3) (5.77 for CIFAR-100)
  lowest = (5.77,) if arg == "resnet_cifar100" else ()
  for norm in sorted((*lowest, 1.0, 3.0, 10.0, 30.0)):
    add_member(config, f"norm_{norm:g}".replace(".", "p"), f"last-layer norm {norm:g}",
               {"model.last_layer_norm": norm})
  return config
