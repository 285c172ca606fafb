"""Fixed learning-rate x weight-decay products, each at several ratios (appendix F.1,
Figs. 15-16), with the rescaled-initialization runs of Proposition 4.

Claims: runs with the same product settle into the same effective-LR and
effective-gradient-norm ranges (Remark 3: sqrt(2 eta lam) / L <= eta~ <= sqrt(2 eta lam)
/ l) and periods of similar length, after warm-ups that differ (same initial norm,
different equilibrium norms); a larger product gives a larger effective LR and more
frequent periods (Fig. 15's rows); with the initialization rescaled by
c = sqrt(lr / lr_ref) the runs are identical to their product's reference, warm-up
included (Proposition 4: (c x0, c^2 eta, lam / c^2) gives the same directions).

  python experiments/run_family.py --config=configs/lr_wd_product.py:cpu --workdir=runs/product

Members, per product p (tag ``p<p>``, e.g. ``p0p003``, ``p1em05``): ``<tag>_ratio_<i>``
at lr_i with wd = p / lr_i, and ``<tag>_rescaled_<i>`` at the same (lr_i, wd) with the SI
weights of the initialization scaled by c = sqrt(lr_i / lr_ref), lr_ref the product's
middle learning rate (its ``ratio_1``, which is not rescaled). All members differ only in lr,
wd and init scale, so they run as one vmapped program where that pays
(``si_jax.engine.experiment.run_family``).

Variants:
  ``cpu``: digits, width 8, 300 epochs; products 0.001 and 0.003 (the quickstart's lr 0.1
    x wd 0.03), each at lr 0.3 / 0.1 / 0.03 (wd = p / lr: 0.0033 / 0.01 / 0.033 and
    0.01 / 0.03 / 0.1), lr_ref = 0.1: 10 members, 1-2 min each on 2 CPU cores (~10-20
    min sequentially; faster vmapped with --cpu_devices=2
    --config.model.conv_impl=patches). Measured (docs/reproduction.md): every member
    periodic; product 0.001 destabilizes first at epoch 112-125 and every ~40-80 epochs,
    product 0.003 at 32-51 and every ~23-26; the effective LR's 95th percentile over
    the second half is 0.023, 0.023, 0.076 against 0.047, 0.040, 0.056 (Remark 3's bounds
    scale with sqrt(product): sqrt(3) apart); product 0.001's rescaled
    members track the reference to ~1e-3 up to their common first destabilization
    (epoch 125). Product 0.01 (too large here: the loss never reconverges between
    spikes) is in the report too.
  ``cifar_cpu``: the CIFAR-10 proxy (width 8, 2,048 images, 120 epochs, pass
    --config.data.data_dir=DIR), the same products and learning rates as ``cpu``;
    rescaled members for product 0.001 only, 60 epochs (past the reference's first
    destabilization): 8 members, 20 min for the five not shared with the sweeps.
    Measured: every ratio member periodic (first destabilization at epochs 41-65, mean
    periods 14-24 epochs); the effective LR's 5-95% range over the second half is
    0.0018-0.0036 for product 0.001 and 0.0032-0.0055 for 0.003; the rescaled members
    track the reference (rho / c within 0.1-0.6% for 10 epochs, 2-4% by epoch 40-50)
    and first destabilize at epochs 52 and 48 against its 50. Resumed to 240 epochs
    (``--config.train.epochs=240``), product 0.003 destabilizes 10-13 times against
    product 0.001's 8-9 at every lr (mean periods after epoch 120: 13.9-16.7 against
    28.5-32.3 epochs).
  '' (paper): ConvNet width 32 on CIFAR-10, last-layer norm 10, 1001 epochs; products
    1e-4, 3e-5 and 1e-5, each at wd 1e-4 / 1e-3 / 1e-2 (lr = p / wd), lr_ref = p / 1e-3
    (the paper's standard wd): 15 members. The appendix does not list Fig. 15's
    products; these span the periodic range of its Figs. 3 and 18 (lr 0.1 .. 0.01 at wd
    1e-3, i.e. Fig. 3's 0.03 and 0.01 and one step above) with ratios 100x apart.
  ``cifar100``, ``resnet``: the paper-scale family on those bases.
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
  """x rounded to 12 significant digits: 0.01 / 0.1 is 0.1, not 0.09999999999999999
  (so a member equals the same (lr, wd) run of the other sweeps bit for bit)."""
  return float(f"{x:.12g}")


def ratio_settings(scale: str) -> list[tuple[float, list[tuple[float, float]]]]:
  """[(product, [(lr, wd) per ratio, the reference in the middle])] for the scale."""
  if scale in ("cpu", "cifar_cpu"):
    return [(p, [(lr, _decimal(p / lr)) for lr in CPU_LRS]) for p in CPU_PRODUCTS]
  return [(p, [(_decimal(p / wd), wd) for wd in PAPER_WDS]) for p in PAPER_PRODUCTS]


def add_product(config, product: float, pairs: list[tuple[float, float]],
                rescaled_epochs: int | None = None, rescaled: bool = True) -> None:
  """The ratio members of one product, then (if ``rescaled``) Proposition 4's rescaled
  members: each non-reference (lr, wd) again with the init's SI weights scaled by
  sqrt(lr / lr_ref), trained for ``rescaled_epochs`` (default: as long as the others)."""
  tag, lr_ref = product_tag(product), pairs[len(pairs) // 2][0]
  for i, (lr, wd) in enumerate(pairs):
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
  config, scale = scaled_base(arg, allowed=("cpu", "cifar_cpu", "paper", "cifar100", "resnet"))
  config = experiment_config(config, "lr_wd_product", figure="product")
  # on CIFAR only the first product has rescaled members, and they stop after the
  # reference's first destabilizations (the time budget of 2 CPU cores)
  cifar = scale == "cifar_cpu"
  for k, (product, pairs) in enumerate(ratio_settings(scale)):
    add_product(config, product, pairs, RESCALED_EPOCHS_CIFAR if cifar else None,
                rescaled=not (cifar and k))
  return config
