"""Fixed lr x wd products at several ratios, and Proposition 4's rescaled runs (Figs. 15-16).

  python experiments/run_family.py --config=configs/lr_wd_product.py:cpu --workdir=runs/product

Expected (appendix F.1): the same product, the same effective-LR range and period length; a
larger product, a larger effective LR and more frequent periods; the init x sqrt(lr / lr_ref)
repeats the product's reference (Proposition 4). Variants: ``cpu``, ``cifar_cpu``, ''
(paper), ``cifar100``, ``resnet``; ``prop4_cpu``: ``cpu``'s references and rescaled runs
alone, three seeds (the family ``lr_wd_product_prop4``). docs/reproduction.md; the
products: docs/paper_settings.md.
"""

import math

from si_jax.engine.experiment import add_member, experiment_config, scaled_base

# scale -> (products, the ratio axis); a ratio member's (lr, wd) follows from the product
CPU_PRODUCTS, CPU_LRS = (0.001, 0.003), (0.3, 0.1, 0.03)
PAPER_PRODUCTS, PAPER_WDS = (1e-4, 3e-5, 1e-5), (1e-4, 1e-3, 1e-2)
RESCALED_EPOCHS_CIFAR = 60


def product_tag(product: float) -> str:
  """'p0p003' for 0.003, 'p1em05' for 1e-5: a member-name prefix (an identifier)."""
  return "p" + f"{product:g}".replace(".", "p").replace("-", "m")


def _decimal(x: float) -> float:
  """x rounded to 12 significant digits (0.01 / 0.1 is 0.1, as in the other sweeps)."""
  return float(f"{x:.12g}")


def ratio_settings(scale: str) -> list[tuple[float, list[tuple[float, float]]]]:
  """[(product, [(lr, wd) per ratio, the reference in the middle])] for the scale."""
  if scale in ("cpu", "cifar_cpu"):
    return [(p, [(lr, _decimal(p / lr)) for lr in CPU_LRS]) for p in CPU_PRODUCTS]
  return [(p, [(_decimal(p / wd), wd) for wd in PAPER_WDS]) for p in PAPER_PRODUCTS]


def add_product(config, product: float, pairs: list[tuple[float, float]],
                rescaled_epochs: int | None = None, rescaled: bool = True,
                only_reference: bool = False) -> None:
  """Adds ``<tag>_ratio_<i>`` at each (lr, wd), then (``rescaled``) Proposition 4's members.

  ``<tag>_rescaled_<i>`` repeats a non-reference (lr, wd) with the init's SI weights x
  sqrt(lr / lr_ref), lr_ref the middle pair's, for ``rescaled_epochs`` (default: all).
  ``only_reference``: of the ratio members, only the reference (the middle pair).
  """
  tag, lr_ref = product_tag(product), pairs[len(pairs) // 2][0]
  for i, (lr, wd) in enumerate(pairs):
    if only_reference and lr != lr_ref:
      continue
    add_member(config, f"{tag}_ratio_{i}", f"product {product:g}: lr {lr:g}, wd {wd:.3g}",
               {"optim.lr": lr, "optim.wd": wd})
  for i, (lr, wd) in enumerate(pairs):
    if rescaled and lr != lr_ref:
      c = math.sqrt(lr / lr_ref)
      epochs = {"train.epochs": rescaled_epochs} if rescaled_epochs else {}
      add_member(config, f"{tag}_rescaled_{i}",
                 f"product {product:g}: lr {lr:g}, wd {wd:.3g}, init x{c:.3g}",
                 {"optim.lr": lr, "optim.wd": wd, "model.init_scale": c, **epochs})


def get_config(arg: str | None = None):
  prop4 = arg == "prop4_cpu"  # Proposition 4 alone: the references and their rescaled runs
  config, scale = scaled_base("cpu" if prop4 else arg,
                              allowed=("cpu", "cifar_cpu", "paper", "cifar100", "resnet"))
  config = experiment_config(config, "lr_wd_product_prop4" if prop4 else "lr_wd_product",
                             figure="product")
  config.experiment.seeds = 3 if prop4 else 1
  # on CIFAR only the first product has rescaled members, and they stop after the
  # reference's first destabilizations (the time budget of 2 CPU cores)
  cifar = scale == "cifar_cpu"
  for k, (product, pairs) in enumerate(ratio_settings(scale)):
    add_product(config, product, pairs, RESCALED_EPOCHS_CIFAR if cifar else None,
                rescaled=not (cifar and k), only_reference=prop4)
  return config
