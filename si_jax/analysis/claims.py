"""The report's claims as code: a statement, its criterion, and a test over a family's seeds.

Each ``Claim`` is judged on a family's members, each member a run per seed, from the
detector's analyses (``phases.Analysis``). The criteria were written before the runs they
judge (2026-12-03, with the 3-seed families training); ``si_jax.analysis.recount`` applies
them under the detector's constants and each constant halved and doubled, and quotes the
criterion beside the verdict in docs/reproduction.md. A member "periodic" has at least two
destabilizations (``phases.Analysis.periodic``); its mean period is the mean length of its
complete periods after the warm-up.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from si_jax.analysis import phases, regimes

Found = dict[str, list[phases.Analysis]]  # member name -> the analysis of each seed's run


@dataclasses.dataclass(frozen=True)
class Member:
  """A family member: its name, its config overrides, its runs (one per seed, by seed)."""
  name: str
  overrides: dict[str, Any]
  runs: tuple  # of recount.Run


@dataclasses.dataclass(frozen=True)
class Claim:
  """A claim of the paper, the criterion that decides it here, and that criterion as code."""
  statement: str
  criterion: str
  test: Callable[[Sequence[Member], Found], bool]


@dataclasses.dataclass(frozen=True)
class Family:
  """How a family is reported: a note, its claims, its swept key, extra table columns."""
  note: str
  claims: tuple[Claim, ...]
  key: str | None = None
  columns: tuple[tuple[str, Callable[[Member, list], str]], ...] = ()
  keep: tuple[str, ...] = ()  # series a claim reads beyond recount.COLUMNS and the loss

  def order(self, members: Sequence[Member]) -> list[Member]:
    """The members by the swept value (as listed where nothing is swept)."""
    return sorted(members, key=lambda m: m.overrides[self.key]) if self.key else list(members)


def mean_period(a: phases.Analysis) -> float:
  """Mean length of the complete periods after the warm-up (inf where there is none)."""
  lengths = a.period_lengths()
  return float(np.mean(lengths)) if lengths else math.inf


def _middle_range(members: Sequence[Member], found: Found) -> bool:
  for seed in range(min(len(found[m.name]) for m in members)):
    periodic = [i for i, m in enumerate(members) if found[m.name][seed].periodic]
    if not (periodic and periodic == list(range(periodic[0], periodic[-1] + 1))
            and periodic[0] > 0 and periodic[-1] < len(members) - 1):
      return False
  return True


def _more_frequent(members: Sequence[Member], found: Found) -> bool:
  ranges = [[mean_period(a) for a in found[m.name]] for m in members
            if all(len(a.period_lengths()) >= 2 for a in found[m.name])]
  return len(ranges) >= 2 and all(max(later) < min(earlier)
                                  for earlier, later in zip(ranges, ranges[1:]))


MIDDLE_RANGE = Claim(
    "Periodic behavior for a middle range of the swept value (F.2, F.3)",
    "in every seed, at least one member is periodic, the periodic members are contiguous in "
    "the swept value, and neither the smallest nor the largest value is periodic.",
    _middle_range)
MORE_FREQUENT = Claim(
    "A larger value, more frequent destabilizations (Fig. 3, F.3)",
    "among the members with at least two complete periods in every seed (at least two such "
    "members), the seeds' mean periods of each member all lie below those of every member "
    "with a smaller value: the ranges over seeds do not overlap.",
    _more_frequent)


def _product(m: Member) -> float:
  return round(m.overrides["optim.lr"] * m.overrides["optim.wd"], 12)


def _ratio_members(members: Sequence[Member]) -> dict[float, list[Member]]:
  out: dict[float, list[Member]] = {}
  for m in members:
    if "_ratio_" in m.name:
      out.setdefault(_product(m), []).append(m)
  return dict(sorted(out.items()))


def _similar_periods(members: Sequence[Member], found: Found) -> bool:
  for group in _ratio_members(members).values():
    if not all(a.periodic for m in group for a in found[m.name]):
      return False
    means = [np.mean([mean_period(a) for a in found[m.name]]) for m in group]
    if len(group) < 2 or max(means) > 1.5 * min(means):
      return False
  return True


def elr_quantiles(m: Member) -> tuple[float, float]:
  """The 5% and 95% quantiles of the effective LR over the second half of training, seed median."""
  qs = []
  for run in m.runs:
    elr = run.series["effective_lr"]
    half = elr[len(elr) // 2:]
    qs.append(np.nanquantile(half, [0.05, 0.95]))
  return tuple(float(v) for v in np.median(qs, axis=0))


def _similar_elr(members: Sequence[Member], found: Found) -> bool:
  for group in _ratio_members(members).values():
    q = np.asarray([elr_quantiles(m) for m in group])
    if len(group) < 2 or (q.max(axis=0) > 2 * q.min(axis=0)).any():
      return False
  return True


def _larger_product_faster(members: Sequence[Member], found: Found) -> bool:
  groups = list(_ratio_members(members).values())
  if len(groups) < 2:
    return False
  slowest = [max(mean_period(a) for m in g for a in found[m.name]) for g in groups]
  fastest = [min(mean_period(a) for m in g for a in found[m.name]) for g in groups]
  return all(s < f for f, s in zip(fastest, slowest[1:]))


SIMILAR_PERIODS = Claim(
    "The same lr x wd product, similar periods (F.1)",
    "for each product, every ratio member is periodic in every seed, and the members' mean "
    "periods (averaged over seeds) are within a factor of 1.5 of each other.",
    _similar_periods)
SIMILAR_ELR = Claim(
    "The same lr x wd product, the same effective-LR range (F.1, Figs. 15-16)",
    "for each product, the ratio members' 5% and 95% quantiles of the effective LR over the "
    "second half of training (median over seeds) each agree within a factor of 2.",
    _similar_elr)
LARGER_PRODUCT = Claim(
    "A larger product, more frequent periods (F.1, Fig. 15's rows)",
    "every seed's mean period of every ratio member at the larger product is shorter than "
    "every seed's mean period of every ratio member at the smaller one (a run without a "
    "complete period counts as an infinitely long one).",
    _larger_product_faster)


def _rescaled_like_reference(members: Sequence[Member], found: Found) -> bool:
  rescaled = [m for m in members if "model.init_scale" in m.overrides]
  if not rescaled:
    return False
  for m in rescaled:
    lr_ref = round(m.overrides["optim.lr"] / m.overrides["model.init_scale"] ** 2, 9)
    ref = [r for r in _ratio_members(members).get(_product(m), [])
           if round(r.overrides["optim.lr"], 9) == lr_ref]
    if len(ref) != 1 or [r.seed for r in m.runs] != [r.seed for r in ref[0].runs]:
      return False  # every seed against the same seed of its reference
    for k, (run, ref_run) in enumerate(zip(m.runs, ref[0].runs)):
      first = min([len(run.series["epoch"]), len(ref_run.series["epoch"]),
                   *found[m.name][k].onsets[:1], *found[ref[0].name][k].onsets[:1]])
      ratio = run.series["effective_lr"][:first] / ref_run.series["effective_lr"][:first]
      if first < 10 or not np.all(np.abs(ratio - 1) <= 0.01):
        return False
  return True


RESCALED_INIT = Claim(
    "The init x sqrt(lr / lr_ref) repeats the reference run (Proposition 4, F.1)",
    "in every seed, each rescaled member's effective LR lies within 1% of its reference's "
    "(the same product at lr_ref = lr / c^2, the same seed) at every epoch before the "
    "earlier of the two runs' first destabilizations, and there are at least 10 such epochs "
    "(written 2026-12-05, before `configs/lr_wd_product.py:prop4_cpu` was trained).",
    _rescaled_like_reference)


def _last_layer(members: Sequence[Member], found: Found) -> bool:
  small, large = members[0], members[-1]
  seeds = min(len(m.runs) for m in members)
  for seed, (a_small, a_large) in enumerate(zip(found[small.name][:seeds],
                                                found[large.name][:seeds])):
    floor = np.nanmin(phases.loss_series(small.runs[seed].series))
    others = [np.nanmin(phases.loss_series(m.runs[seed].series)) for m in members[1:]]
    if len(a_small.onsets) >= 2 or not a_large.periodic or floor < 10 * max(others):
      return False
  return True


SMALL_LAST_LAYER = Claim(
    "A small last-layer norm: a high train loss, and the periodic behavior may vanish (G)",
    "in every seed, the smallest norm has fewer than two destabilizations and a lowest train "
    "loss at least 10x every larger norm's, and the largest norm is periodic.",
    _last_layer)


def periodic_in_every_seed(name: str) -> Callable[[Sequence[Member], Found], bool]:
  """The test that member ``name`` was run and is periodic in every seed."""
  return lambda members, found: bool(found.get(name)) and all(a.periodic for a in found[name])


def keeps_periodic(name: str, what: str) -> Claim:
  """The claim that member ``name`` (a practical modification) stays periodic in every seed."""
  return Claim(f"{what} keeps the periodic behavior (Sec. 7, I)",
               f"member {name} is periodic in every seed.", periodic_in_every_seed(name))


def _gd_periodic(members: Sequence[Member], found: Found) -> bool:
  regular = [m for m in members if m.name.startswith("lr_") and m.overrides["optim.lr"] >= 0.5]
  return bool(regular) and all(a.periodic for m in regular for a in found[m.name])


def _fixed_norm(members: Sequence[Member], found: Found) -> bool:
  fixed = [m for m in members if m.overrides.get("optim.fix_si_norm")]
  regular = [m for m in members if m.name == "regular_before"]
  return bool(fixed) and all(not a.onsets for m in fixed for a in found[m.name]) and all(
      a.onsets for m in regular for a in found[m.name])


GD_PERIODIC = Claim(
    "Full-batch GD is periodic too (C, Fig. 10)",
    "every regular GD member with lr >= 0.5 is periodic in every seed.", _gd_periodic)
FIXED_NORM = Claim(
    "Fixing the weight norm removes the periodicity (C, Fig. 12)",
    "no fixed-norm member destabilizes (the loss-only rule) in any seed, and the regular run "
    "from the same checkpoint (regular_before, where run) destabilizes in every seed.",
    _fixed_norm)


def _schedules_hide(members: Sequence[Member], found: Found) -> bool:
  constant = found.get("constant")
  decaying = [found.get(name) for name in ("cosine", "linear", "step")]
  if not constant or not all(decaying):
    return False
  for seed, base in enumerate(constant):
    last_quarter = 0.75 * base.x[-1]
    if not any(e > last_quarter for e in base.destabilizations):
      return False
    for runs in decaying:
      if seed >= len(runs):
        return False
      a = runs[seed]
      if any(e > last_quarter for e in a.destabilizations) or len(a.onsets) >= len(base.onsets):
        return False
  return True


SCHEDULES_HIDE = Claim(
    "A learning-rate schedule ends or thins the periodic behavior (J)",
    "in every seed, the constant schedule destabilizes in the last quarter of training, and "
    "each decaying schedule (cosine, linear, step) does not and has fewer destabilizations "
    "than the constant schedule (written 2026-12-05, before `configs/schedules.py:cpu` was "
    "trained with three seeds; one seed of each schedule had been run).", _schedules_hide)
QK_NORM = Claim(
    "A transformer with QK-norm is periodic too (our question, not the paper's)",
    "member qk_norm is periodic in every seed (written 2026-12-05, before "
    "`configs/transformer.py:variants_cpu` was trained; seed 0 had been run alone).",
    periodic_in_every_seed("qk_norm"))


def regime(run) -> str:
  """A sphere run's regime (``regimes.classify`` of its kept series, reference ln 10)."""
  return regimes.classify(run.series, math.log(10)).name


def _regimes_by_seed(members: Sequence[Member]) -> list[list[str]]:
  """Per seed, the regimes of the members in ELR order."""
  seeds = min(len(m.runs) for m in members)
  return [[regime(m.runs[k]) for m in members] for k in range(seeds)]


def _three_regimes(members: Sequence[Member], found: Found) -> bool:
  return all(set(seed) == set(regimes.REGIMES) for seed in _regimes_by_seed(members))


def _regimes_ordered(members: Sequence[Member], found: Found) -> bool:
  rank = {name: k for k, name in enumerate(regimes.REGIMES)}
  return all(all(rank[a] <= rank[b] for a, b in zip(seed, seed[1:]))
             for seed in _regimes_by_seed(members))


THREE_REGIMES = Claim(
    "Training on the sphere at a fixed ELR has three regimes (Kodryan et al. 2022, Sec. 4)",
    "in every seed, convergence, chaotic equilibrium and divergence (``regimes.classify``) "
    "each appear among the ELRs.", _three_regimes)
REGIMES_ORDERED = Claim(
    "The regimes follow the ELR: convergence, then chaotic equilibrium, then divergence",
    "in every seed, the regimes never step back as the ELR grows (no convergence above a "
    "chaotic or divergent ELR, no chaotic equilibrium above a divergent one).",
    _regimes_ordered)


def _regime_column(member: Member, found: list) -> str:
  return ", ".join(regime(r) for r in member.runs)


def _elr_column(member: Member, found: list) -> str:
  if "effective_lr" not in member.runs[0].series:
    return "-"
  lo, hi = elr_quantiles(member)
  return f"{lo:.2g}-{hi:.2g}"


def _min_loss_column(member: Member, found: list) -> str:
  return ", ".join(f"{np.nanmin(phases.loss_series(r.series)):.2g}" for r in member.runs)


def _product_column(member: Member, found: list) -> str:
  return f"{member.overrides['optim.lr'] * member.overrides['optim.wd']:.2g}"


def _epochs_column(member: Member, found: list) -> str:
  return ", ".join(f"{r.series['epoch'][-1]:,.0f}" for r in member.runs)


def _first_onset_column(member: Member, found: list) -> str:
  return ", ".join(f"{a.destabilizations[0]:g}" if a.onsets else "-" for a in found)


def _jumps_column(member: Member, found: list) -> str:
  """Each onset's norm jump: the largest rise of the SI norm within two epochs after it."""
  out = []
  for run, a in zip(member.runs, found):
    rho = run.series["weight_norm"]
    out += [f"{100 * (np.nanmax(rho[i:i + 3]) / rho[i - 1] - 1):.2g}%" for i in a.onsets if i]
  return ", ".join(out) or "-"


def _sphere_family(description: str) -> Family:
  """A sphere family: the two regime claims over the ELR, each seed's regimes shown."""
  return Family(description, (THREE_REGIMES, REGIMES_ORDERED), key="optim.lr",
                columns=(("regime per seed", _regime_column),),
                keep=("train_accuracy", "effective_grad_norm", "train_effective_grad_norm"))


PRACTICAL = (("non_si", "Trainable non-SI parameters"), ("momentum", "Momentum 0.9"),
             ("augment", "Augmentation"), ("all", "All three together"),
             ("layer_norm", "Layer norm"), ("instance_norm", "Instance norm"), ("adam", "Adam"))

FAMILIES = {
    "lr_sweep": Family("The learning rate swept at wd 0.03 (`configs/lr_sweep.py:cpu`).",
                       (MIDDLE_RANGE, MORE_FREQUENT), key="optim.lr"),
    "cifar_lr_sweep": Family(
        "The learning rate swept at wd 0.01 on 2,048 CIFAR-10-proxy images, 120 epochs "
        "(`configs/lr_sweep.py:cifar_cpu`).", (MIDDLE_RANGE, MORE_FREQUENT), key="optim.lr"),
    "wd_sweep": Family("The weight decay swept at lr 0.1 (`configs/wd_sweep.py:cpu`).",
                       (MIDDLE_RANGE, MORE_FREQUENT), key="optim.wd"),
    "cifar_wd_sweep": Family(
        "The weight decay swept at lr 0.1 on 2,048 CIFAR-10-proxy images, 120 epochs "
        "(`configs/wd_sweep.py:cifar_cpu`).", (MIDDLE_RANGE, MORE_FREQUENT), key="optim.wd"),
    "lr_wd_product": Family(
        "Products 0.001 and 0.003 at lr 0.3, 0.1, 0.03 (ratio members; Proposition 4's "
        "rescaled inits are compared run against run, not recounted) "
        "(`configs/lr_wd_product.py:cpu`).",
        (SIMILAR_PERIODS, SIMILAR_ELR, LARGER_PRODUCT),
        columns=(("effective LR 5-95%, 2nd half (seed median)", _elr_column),)),
    "cifar_lr_wd_product": Family(
        "Products 0.001 and 0.003 at lr 0.3, 0.1, 0.03 on 2,048 CIFAR-10-proxy images, 120 "
        "epochs, and Proposition 4's rescaled inits of product 0.001 for 60 epochs "
        "(`configs/lr_wd_product.py:cifar_cpu`).",
        (SIMILAR_PERIODS, SIMILAR_ELR, LARGER_PRODUCT),
        columns=(("effective LR 5-95%, 2nd half (seed median)", _elr_column),)),
    "lr_wd_small_products": Family(
        "Towards the paper's lr x wd (1e-5): runs of the quickstart's config at smaller "
        "products (`python -m si_jax.main --config=configs/quickstart.py` with the member's "
        "lr, wd, train.epochs and model.init_scale; three seeds at 3e-4, one at 1e-4 and "
        "1e-5, whose runs take 11 and 50 minutes: observations, no claim).",
        (), columns=(("lr x wd", _product_column), ("epochs run", _epochs_column),
                     ("first destabilization", _first_onset_column),
                     ("norm jump at each onset", _jumps_column))),
    "lr_wd_product_prop4": Family(
        "Proposition 4 alone: each product's reference (lr 0.1) and its two rescaled inits "
        "(lr 0.3 at init x1.73, lr 0.03 at init x0.548), three seeds "
        "(`configs/lr_wd_product.py:prop4_cpu`).", (RESCALED_INIT,)),
    "transformer_wd": Family(
        "A pre-LN transformer on modular addition (SGD, lr 1 on its SI groups), the weight "
        "decay swept (`configs/transformer.py:wd_cpu`).", (MIDDLE_RANGE,), key="optim.wd"),
    "transformer_variants": Family(
        "The transformer of `transformer_wd` at wd 0.003 with QK-norm, and with its SI norm "
        "held fixed (`configs/transformer.py:variants_cpu`); the free-norm control of the "
        "fixed-norm claim is `transformer_wd`'s wd_0p003, the same config.", (QK_NORM, FIXED_NORM),
        columns=(("lowest train loss per seed", _min_loss_column),)),
    "schedules": Family(
        "The quickstart's run with the released code's learning-rate schedules "
        "(`configs/schedules.py:cpu`).", (SCHEDULES_HIDE,),
        columns=(("lowest train loss per seed", _min_loss_column),)),
    "weight_norm": Family(
        "Weight normalization instead of batch norm at the quickstart's settings "
        "(`configs/weight_norm.py:cpu`); no claim judged: the batch-norm run of these "
        "settings is `lr_sweep`'s lr_0p1.", (),
        columns=(("lowest train loss per seed", _min_loss_column),)),
    "last_layer_norm": Family("The fixed last layer's norm (`configs/last_layer_norm.py:cpu`).",
                              (SMALL_LAST_LAYER,), key="model.last_layer_norm",
                              columns=(("lowest train loss per seed", _min_loss_column),)),
    "practical": Family("Sec. 7's modifications (`configs/practical.py:cpu`).",
                        tuple(keeps_periodic(n, w) for n, w in PRACTICAL),
                        columns=(("lowest train loss per seed", _min_loss_column),)),
    "cifar_practical": Family(
        "Fig. 7's modifications one by one at lr 0.1, wd 0.01 on 2,048 CIFAR-10-proxy images, "
        "120 epochs (`configs/practical.py:cifar_cpu`; momentum at lr 0.01).",
        tuple(keeps_periodic(n, w) for n, w in PRACTICAL[:3]),
        columns=(("lowest train loss per seed", _min_loss_column),)),
    "gd": Family("Full-batch GD on 512 digits, per step, and the fixed-norm members "
                 "(`experiments/gd_fixed_norm.py --config=configs/gd.py:cpu`).",
                 (GD_PERIODIC, FIXED_NORM)),
    "cifar_gd": Family("Full-batch GD on 512 CIFAR-10-proxy images, per step, and the "
                       "fixed-norm members (`experiments/gd_fixed_norm.py "
                       "--config=configs/gd.py:cifar_cpu`).", (GD_PERIODIC, FIXED_NORM)),
    "three_regimes_cpu": _sphere_family(
        "Trained on the sphere at 13 fixed ELRs, seeds 0, 1 and 2, no weight decay "
        "(`configs/three_regimes.py:cpu`)."),
    "three_regimes_cifar_cpu": _sphere_family(
        "Trained on the sphere at 10 fixed ELRs, seeds 0, 1 and 2, no weight decay, on 512 "
        "CIFAR-10-proxy images (`configs/three_regimes.py:cifar_cpu`)."),
}
