"""Periods and phases of a run, read from its logs (Sec. 3-4 of the paper, Figs. 1-4).

The paper splits every period of training with BN and weight decay into three phases
(Sec. 4 and Fig. 4; appendix Fig. 11 for full-batch GD, Fig. 14 for the toy function):

* phase A: the train loss falls back to its low level;
* phase B: the loss stays low while weight decay shrinks the SI weight norm rho, so the
  effective learning rate eta / rho^2 (appendix A.1, proof of Proposition 4) grows;
* phase C, the *destabilization*: the effective LR has grown too large, the train loss
  spikes, and the large effective gradients g~ make the norm jump up (Eq. (3):
  rho_{t+1}^2 = (1 - eta lambda)^2 rho_t^2 + eta^2 g~_t^2 / rho_t^2), which lowers the
  effective LR again and starts the next period.

A destabilization is therefore detected as a sharp rise of the train loss answered by
a jump of the weight norm after a stretch of falling norm. "Sharp" and "jump" are
measured against the run's own fluctuations, not against absolute levels, so one rule
serves digits (loss floors near 1e-4 between spikes) and CIFAR-10 (floors of 0.02-0.3,
never 100x below chance). With s_loss the robust scale of the noise of ln(loss) (its
per-sample change's standard deviation, from the median absolute deviation of second
differences, so a steady fall does not count as noise: ``robust_scale``) and s_rho the
median per-sample |change of ln(rho)| (the norm's typical relative change, about
eta lambda per step in phase B), sample i is the onset of a destabilization when

1. the loss rises: ln(loss_i) exceeds the ln of its minimum since the run start, or
   since the last spike was over, by ``rise`` = ``rise_scales`` (6) x s_loss, clipped
   to [ln ``min_ratio`` (2), ln ``ratio`` (10)] (a tenfold rise is always sharp, one
   below twofold never). The spike is over once the loss has fallen ``rise`` below its
   peak, or back within ``rise`` / 2 of the minimum it rose from, so one long or
   double-humped spike counts once;
2. the loss has converged before: its 3-sample running median has fallen below the
   reference loss (that median's largest value, or the chance-level loss ln(classes)
   if larger; ``analyze_run`` reads the classes from the run's config) by
   ``converge`` = ``converge_scales`` (5) x s_loss clipped to [ln ``converge_ratio``
   (5), ln ``max_converge_ratio`` (100)] (a run of frequent spikes inflates s_loss
   with its own spikes), and by at least ``settle_fraction`` (0.4) of the way, in
   decades, from the reference down to the run's lowest running median (full-batch GD
   at too large a learning rate bounces between 0.05 and 5 for hundreds of steps, 50x
   below chance at its dips, before it converges to 1e-5: the bounces are not
   destabilizations; measured on the kept runs: CIFAR proxy onsets start 41-100% of
   the way down (SGD 47-100%, GD 41-44%), the bounces of digits GD at lr 2 at
   19-38%), so a run whose loss never converges (too large a learning rate) has no
   destabilizations however noisy it is. Known limit: per-step GD whose loss never
   settles but oscillates smoothly (digits at lr 4: 0.2-6 every ~15 steps) has a small
   ``robust_scale`` and its dips pass as convergence; per-epoch runs are not affected;
3. the weight norm answers (not checked for a bare loss trace): its largest value from
   i to ``confirm`` (2) samples after the spike's loss peak exceeds its smallest value
   rho_min in the ``confirm`` samples up to i by ``jump`` = max(ln(1 + ``norm_jump``
   (0.01)), ``jump_scales`` (1.5) x s_rho) in ln units, and rho_min is below the norm
   3 ``confirm`` samples before i (the norm was falling: phase B came first). A loss
   bump without such a jump is SGD noise, not phase C. The effective LR eta / rho^2
   then drops by the same factor squared, so it needs no test of its own.

On the CIFAR-10 ``:cpu`` run recorded in tests/data (s_loss = 0.15 per epoch: rise
2.5x; s_rho = 1.2%: jump 1.8%) the onsets are epochs 50, 59, 75, 93, 120, 141, each
at most an epoch before a jump of the norm (within 3 epochs: 2.3% at epoch 51, 9-23% at
the others); with weight decay 1e-3 the one onset, at epoch 134, is an epoch before the
one jump (6.3%); on the digits quickstart (rise 10x, jump 5.5%) each of the 11 onsets is
0-1 epoch before a jump of 9% or more.

Each period then runs from one onset to the next (period 0 from the start of training:
the warm-up, which has no phase C) and is split into

* phase C: from the onset to the loss's peak within the spike;
* phase A: from the peak until the loss is within ``b_decades`` (1) decade, or half
  the spike's height in decades where that is less (CIFAR's 5-50x spikes), of its
  minimum over the rest of the period;
* phase B: from there to the next onset.

``analyze`` returns all of it with per-period statistics (length in samples, epochs
and steps, minimum train loss and test error, effective-LR, effective-gradient-norm
and weight-norm ranges) and says "no periodic behavior" (with the reason) when a run
has fewer than two destabilizations.
"""


from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from si_jax import logs


def load_series(workdir: str, steps: bool = False) -> dict[str, np.ndarray]:
  """Every logged metric of a run as a float array over epochs (NaN where absent)."""
  records = logs.read_run(workdir, steps=steps)
  keys = sorted({k for r in records for k in r})
  return {k: np.asarray([r.get(k, np.nan) for r in records], np.float64) for k in keys}


def loss_series(series: dict[str, np.ndarray]) -> np.ndarray:
  """The loss to analyze: the full-pass train loss if mostly logged, else the in-step batch loss.

  The full-pass train loss where logged (appendix B) for more than half the samples, else the
  in-step batch loss (else the train loss however sparse). Raises ValueError when ``series`` has
  neither."""
  if "train_loss" in series and ("loss" not in series or np.isfinite(
      series["train_loss"]).sum() > len(series["train_loss"]) // 2):
    return series["train_loss"]
  if "loss" not in series:
    raise ValueError(f"series has no 'loss' nor 'train_loss' key: nothing to analyze "
                     f"(keys: {sorted(series)})")
  return series["loss"]


SERIES_KEYS = ("loss", "train_loss", "weight_norm", "epoch", "step", "test_error",
               "effective_lr", "effective_grad_norm")  # what ``analyze`` reads


def check_series(series) -> dict[str, np.ndarray]:
  """Returns ``series`` with the keys ``analyze`` reads (``SERIES_KEYS``) as 1-D float arrays.

  Lists and tuples are converted; other keys are passed through unchanged.

  Raises:
    TypeError: ``series`` is not a mapping.
    ValueError: no 'loss' nor 'train_loss'; a series that is not a 1-D sequence of
      numbers (named); series of unequal lengths (named, with both lengths).
  """
  if not isinstance(series, Mapping):
    raise TypeError(f"series must be a mapping {{name: values}}, got {type(series).__name__}")
  out = dict(series)
  for key in SERIES_KEYS:
    if key in out:
      try:
        out[key] = np.asarray(out[key], np.float64)
      except (TypeError, ValueError):
        raise ValueError(f"series[{key!r}] is not a sequence of numbers") from None
      if out[key].ndim != 1:
        raise ValueError(f"series[{key!r}] must be 1-D (one value per sample), has shape "
                         f"{out[key].shape}")
  loss_key = "train_loss" if loss_series(out) is out.get("train_loss") else "loss"
  n = len(out[loss_key])
  for key in SERIES_KEYS:
    if key in out and len(out[key]) != n:
      raise ValueError(f"series[{key!r}] has {len(out[key])} values but series[{loss_key!r}] "
                       f"has {n}: every series needs one value per sample")
  return out


def _x(series: dict[str, np.ndarray], n: int) -> np.ndarray:
  """The x axis: epochs (1-based as logged) for epoch records, steps for step records."""
  if "epoch" in series and not ("step" in series and len(np.unique(series["epoch"])) < n):
    return series["epoch"]
  if "step" in series:
    return series["step"]
  return np.arange(1, n + 1, dtype=np.float64)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
  """Running median over ``window`` samples (centred), NaN-aware; window 1 is identity."""
  if window <= 1:
    return values
  pad = window // 2
  padded = np.pad(values, (pad, window - 1 - pad), mode="edge")
  return np.nanmedian(np.lib.stride_tricks.sliding_window_view(padded, window), axis=-1)


@dataclasses.dataclass(frozen=True)
class Period:
  """One period: sample indices [start, end) and its phases.

  The phases are index ranges, end exclusive; they tile the period, except in a run whose loss never
  converged: all empty there."""
  index: int
  start: int
  end: int
  complete: bool          # ends at a destabilization (False: the run ended first)
  c: tuple[int, int]      # phase C: onset .. loss peak (empty for period 0)
  a: tuple[int, int]
  b: tuple[int, int]
  stats: dict[str, float]


@dataclasses.dataclass(frozen=True)
class Analysis:
  """A run's destabilizations, its periods and their phases (``analyze``)."""

  x: np.ndarray                  # epochs (or steps) of the samples
  onsets: list[int]              # sample indices of the destabilizations
  periods: list[Period]
  reason: str                    # why there is no periodic behavior ('' if there is)

  @property
  def periodic(self) -> bool:
    """Whether the run shows periodic behavior (at least the needed destabilizations)."""
    return not self.reason

  @property
  def destabilizations(self) -> list[float]:
    """x values (epochs or steps) of the destabilization onsets."""
    return [float(self.x[i]) for i in self.onsets]

  def period_lengths(self, key: str = "length") -> list[float]:
    """Lengths of the complete periods after the warm-up (period 0)."""
    return [p.stats[key] for p in self.periods[1:] if p.complete]

  def summary(self) -> dict[str, Any]:
    """The JSON summary of a family member: reason, onsets, periods with their stats."""
    lengths = self.period_lengths()
    return {
        "periodic": self.periodic,
        "reason": self.reason,
        "destabilizations": self.destabilizations,
        "n_destabilizations": len(self.onsets),
        "mean_period": float(np.mean(lengths)) if lengths else float("nan"),
        "periods": [dict(index=p.index, complete=p.complete, phases=self.phase_bounds(p), **p.stats)
                    for p in self.periods],
    }

  def phase_bounds(self, period: Period) -> dict[str, list[float]]:
    """Each non-empty phase of ``period`` as [first x, last x] (epochs or steps)."""
    return {name: [float(self.x[lo]), float(self.x[hi - 1])]
            for name, (lo, hi) in (("C", period.c), ("A", period.a), ("B", period.b)) if hi > lo}

  def describe(self) -> str:
    """A few lines for a terminal."""
    if not self.periodic:
      return f"no periodic behavior: {self.reason}"
    lengths = self.period_lengths()
    head = (f"{len(self.onsets)} destabilizations at {_fmt(self.destabilizations)}; "
            f"period length {np.mean(lengths):.4g} (min {min(lengths):.4g}, max {max(lengths):.4g})"
            if lengths else f"{len(self.onsets)} destabilizations at {_fmt(self.destabilizations)}")
    rows = [head]
    for p in self.periods:
      s = p.stats
      nan = float("nan")
      rows.append(
          f"  period {p.index}{'' if p.complete else ' (incomplete)'}: x {s['x_start']:.6g}"
          f"..{s['x_end']:.6g}, min loss {s['min_loss']:.3g}, test error "
          f"{s.get('min_test_error', nan):.3g}, rho {s.get('weight_norm_min', nan):.3g}"
          f"..{s.get('weight_norm_max', nan):.3g}, eff. LR "
          f"{s.get('effective_lr_min', nan):.3g}..{s.get('effective_lr_max', nan):.3g}")
    return "\n".join(rows)


def _fmt(values: list[float]) -> str:
  return "[" + ", ".join(f"{v:g}" for v in values) + "]"


ZERO_LOSS = float(np.finfo(np.float32).eps)  # what a logged loss of exactly 0 stands for, at most


def positive_loss(loss) -> np.ndarray:
  """The loss ready for its logarithm: zeros raised to a floor, negative and non-finite NaN.

  Exact zeros are raised to the run's smallest positive loss or ``ZERO_LOSS`` (float32's epsilon,
  1.2e-7), whichever is smaller; negative and non-finite values become NaN (not logged). A float32
  cross-entropy rounds to exactly 0 below about half that epsilon, so a zero is a floor like any
  other, below every logged value: ln 0 = -inf would instead drop the floor and merge the spikes
  rising from it."""
  loss = np.asarray(loss, np.float64)
  positive = np.isfinite(loss) & (loss > 0)
  floor = min(ZERO_LOSS, float(loss[positive].min())) if positive.any() else ZERO_LOSS
  return np.where(positive, loss, np.where(loss == 0, floor, np.nan))


def robust_scale(values: np.ndarray, lag: int = 1, min_changes: int = 20) -> float:
  """Robust noise scale of ``values``: the standard deviation of a change over ``lag`` samples.

  1.4826 x the median absolute deviation of the second differences v[i + lag] - 2 v[i] + v[i - lag],
  divided by sqrt(3) (for white noise of variance s^2 / 2 a change has variance s^2, a second
  difference 3 s^2). A steady trend (an exponential fall of the loss is a straight line in ln) adds
  nothing, a noise-free trace that mostly sits still gives 0. A running median over w samples is
  correlated over w samples: its noise shows at ``lag`` = w. Fewer than ``min_changes`` second
  differences give no estimate (0): a short trace is all signal."""
  second = values[2 * lag:] - 2 * values[lag:-lag] + values[:-2 * lag]
  second = second[np.isfinite(second)]
  if len(second) < min_changes:
    return 0.0
  return float(1.4826 * np.median(np.abs(second - np.median(second))) / np.sqrt(3))


def typical_change(values: np.ndarray) -> float:
  """Median |per-sample change| of ``values`` over the samples where it changes.

  A per-step trace of a per-epoch value repeats it: those repeats are not changes."""
  steps = np.abs(np.diff(values))
  steps = steps[np.isfinite(steps) & (steps > 0)]
  return float(np.median(steps)) if len(steps) else 0.0


@dataclasses.dataclass(frozen=True)
class Thresholds:
  """A run's detection thresholds in natural-log units (module docstring, 1-3)."""
  rise: float       # ln-loss rise that starts a spike (and fall that ends it)
  converge: float   # ln-loss fall below the reference needed to count as converged
  jump: float       # ln-norm rise that confirms a spike
  top: float        # the reference loss for convergence
  settled: float    # ln loss a 3-sample running median must reach to be converged:
                    # ``converge`` below ``top`` and ``settle_fraction`` of the way to
                    # the run's lowest running median (a whole-run statistic, like the
                    # others: continuing a run can move a borderline onset)


def thresholds(loss: np.ndarray, weight_norm: np.ndarray | None, *, lag: int = 1,
               ratio: float = 10.0, min_ratio: float = 2.0, rise_scales: float = 6.0,
               converge_ratio: float = 5.0, converge_scales: float = 5.0,
               max_converge_ratio: float = 100.0, settle_fraction: float = 0.4,
               norm_jump: float = 0.01, jump_scales: float = 1.5,
               reference_loss: float | None = None) -> Thresholds:
  """Thresholds from the run's own statistics: s_loss and s_rho (module docstring).

  s_loss = ``robust_scale`` of ln(loss) (changes over ``lag`` samples: the width of the running
  median ``loss`` went through) and s_rho = ``typical_change`` of ln(weight norm)."""
  if not ratio >= min_ratio > 1 or not converge_ratio >= 1 or not norm_jump >= 0:
    raise ValueError(f"need ratio >= min_ratio > 1, converge_ratio >= 1, norm_jump >= 0; got "
                     f"ratio {ratio}, min_ratio {min_ratio}, converge_ratio {converge_ratio}, "
                     f"norm_jump {norm_jump}")
  if not 0 <= settle_fraction < 1:
    raise ValueError(f"need 0 <= settle_fraction < 1; got {settle_fraction}")
  if min(rise_scales, converge_scales, jump_scales) < 0:
    raise ValueError("rise_scales, converge_scales and jump_scales must be >= 0")
  log_loss = np.log(positive_loss(loss))
  s_loss = robust_scale(log_loss, lag)
  level = _smooth(log_loss, 3)  # one-sample dips are not convergence
  s_rho = typical_change(np.log(weight_norm)) if weight_norm is not None else 0.0
  # capped: a run of frequent spikes inflates s_loss with its own spikes (digits at lr
  # 0.3: 5 s_loss is 1,900x), and 100x below chance is converged on any dataset
  converge = float(np.clip(converge_scales * s_loss, np.log(converge_ratio),
                           np.log(max(max_converge_ratio, converge_ratio))))
  reference = np.log(reference_loss) if reference_loss and reference_loss > 0 else -np.inf
  top = max(float(np.nanmax(level)), reference)
  # and part of the way down to the run's floor: a loss bouncing between 0.05 and 5 for
  # hundreds of GD steps (digits, lr 2) is 50x below chance at its dips, not converged
  settled = min(top - converge, top - settle_fraction * (top - float(np.nanmin(level))))
  return Thresholds(
      rise=float(np.clip(rise_scales * s_loss, np.log(min_ratio), np.log(ratio))),
      converge=converge, jump=max(float(np.log1p(norm_jump)), jump_scales * s_rho),
      top=float(np.exp(top)), settled=settled)


def _spike_end(log_loss: np.ndarray, i: int, rise: float, low: float) -> tuple[int, int]:
  """(peak, over): the sample where the spike starting at i peaks, and the first where it is over.

  ``over`` is the first sample after the peak where the spike is over: ``rise`` below that peak, or
  back within half of ``rise`` above ``low``, the minimum it rose from (len(log_loss) if the run
  ends first). The second rule ends an SGD bump that is followed by the real spike a few samples
  later, before the loss has fallen a whole ``rise`` below the bump."""
  peak = i
  for j in range(i + 1, len(log_loss)):
    if not np.isfinite(log_loss[j]):
      continue
    if log_loss[j] > log_loss[peak]:
      peak = j
    elif log_loss[peak] - log_loss[j] >= rise or log_loss[j] - low <= rise / 2:
      return peak, j
  return peak, len(log_loss)


def _norm_answers(log_rho: np.ndarray, i: int, peak: int, jump: float, confirm: int) -> bool:
  """Condition 3: the norm jumps by ``jump`` across the onset i and was falling into it.

  The jump is between the ``confirm`` samples up to the onset i and the samples from i to
  ``confirm`` after the loss peak."""
  before = log_rho[max(0, i - confirm):i + 1]
  after = log_rho[i:peak + confirm + 1]
  before, after = before[np.isfinite(before)], after[np.isfinite(after)]
  earlier = log_rho[max(0, i - 3 * confirm)]
  if not len(before) or not len(after) or not np.isfinite(earlier):
    return False
  return after.max() - before.min() >= jump and before.min() < earlier


# how the reasons for no periodic behavior start (``outcome``)
TOO_FEW_FINITE = "too few finite loss values"
NEVER_CONVERGED = "the loss never converged"
NEVER_DESTABILIZED = "the loss converged and never destabilized"
TOO_FEW_ONSETS = "only "  # "only 1 destabilization (at ...)"


def find_onsets(loss: np.ndarray, weight_norm: np.ndarray | None = None, *, confirm: int = 2,
                smooth: int = 1, **kwargs) -> tuple[list[int], list[int], str]:
  """(onsets, peaks, reason): where destabilizations start, where spikes peak, and why none.

  Sample indices where destabilizations start, where each spike's loss peaks, and why there are no
  destabilizations if so.

  See the module docstring for the three conditions; ``kwargs`` go to ``thresholds``.
  ``weight_norm=None`` skips the norm condition (e.g. for a bare loss trace). A loss of exactly 0 is
  a floor (``positive_loss``). Raises ValueError for ``confirm`` < 1 or a ``weight_norm`` whose
  length is not the loss's.
  """
  if confirm < 1:
    raise ValueError(f"need confirm >= 1; got {confirm}")
  if weight_norm is not None and len(weight_norm) != len(loss):
    raise ValueError(f"weight_norm has {len(weight_norm)} values but the loss has "
                     f"{len(loss)}: one value per sample each")
  loss = positive_loss(_smooth(np.asarray(loss, np.float64), smooth))
  finite = np.isfinite(loss)
  if finite.sum() < 3:
    return [], [], (f"{TOO_FEW_FINITE} ({int(finite.sum())} of {len(loss)}; 3 needed): the "
                    "run diverged or stopped before it can be analyzed")
  thr = thresholds(loss, weight_norm, lag=max(1, smooth), **kwargs)
  log_loss = np.log(loss)
  level = _smooth(log_loss, 3)
  log_rho = None if weight_norm is None else np.log(np.asarray(weight_norm, np.float64))
  onsets: list[int] = []
  peaks: list[int] = []
  low, level_low, resume = np.inf, np.inf, 0
  ever_converged, bumps = False, 0
  for i in np.flatnonzero(finite):
    if i < resume:  # inside a spike: wait until the loss has come back down
      continue
    low, level_low = min(low, log_loss[i]), min(level_low, level[i])
    converged = level_low <= thr.settled
    ever_converged |= converged
    if not (converged and log_loss[i] - low >= thr.rise):
      continue
    peak, resume = _spike_end(log_loss, i, thr.rise, low)
    if log_rho is not None and not _norm_answers(log_rho, i, peak, thr.jump, confirm):
      bumps, resume = bumps + 1, i + 1
      continue
    onsets.append(int(i))
    peaks.append(int(peak))
    low = level_low = np.inf  # the spike is over at ``resume``: minima start afresh there
  if onsets:
    return onsets, peaks, ""
  return [], [], _no_onset_reason(ever_converged, bumps, level, thr)


def outcome(reason: str) -> str:
  """A run's verdict from its ``Analysis.reason`` (``summary()['reason']``), for tables.

  One of 'periodic' (no reason), 'too few destabilizations', 'never destabilized' (the loss
  converged), 'never converged', 'too few finite loss values'; any other reason (one a caller wrote,
  e.g. for a run without an epoch record) is returned unchanged."""
  if not reason:
    return "periodic"
  for prefix, verdict in ((TOO_FEW_ONSETS, "too few destabilizations"),
                          (NEVER_DESTABILIZED, "never destabilized"),
                          (NEVER_CONVERGED, "never converged"),
                          (TOO_FEW_FINITE, TOO_FEW_FINITE)):
    if reason.startswith(prefix):
      return verdict
  return reason


def _no_onset_reason(ever_converged: bool, bumps: int, level: np.ndarray,
                     thr: Thresholds) -> str:
  if not ever_converged:
    return (f"{NEVER_CONVERGED} (its 3-sample running median fell to "
            f"{np.exp(np.nanmin(level)):.3g}, less than {np.exp(thr.converge):.3g}x below "
            f"{thr.top:.3g}, its maximum or the chance level): learning rate or weight decay "
            "too large, or a network that cannot fit the data (e.g. too small a last-layer norm)")
  extra = (f"; {bumps} loss bumps without a weight-norm jump were SGD noise" if bumps else "")
  return (f"{NEVER_DESTABILIZED} (learning rate or weight decay too small, or the run too "
          f"short){extra}")


def _range(stats: dict, name: str, values: np.ndarray) -> None:
  values = values[np.isfinite(values)]
  if len(values):
    stats[f"{name}_min"], stats[f"{name}_max"] = float(values.min()), float(values.max())


def analyze(series: dict[str, np.ndarray], *, confirm: int = 2, smooth: int = 1,
            b_decades: float = 1.0, min_destabilizations: int = 2, **kwargs) -> Analysis:
  """Destabilizations, periods, phases and per-period statistics of a logged run.

  ``series`` is ``load_series(workdir)`` (per epoch) or ``load_series(workdir,
  steps=True)`` (per step; pass ``smooth`` of about an epoch's steps there, since
  batch losses are noisy, and ``confirm`` of an epoch or two). ``kwargs`` (``ratio``,
  ``min_ratio``, ``rise_scales``, ``converge_ratio``, ``converge_scales``,
  ``max_converge_ratio``, ``settle_fraction``, ``norm_jump``, ``jump_scales``,
  ``reference_loss``) go to
  ``thresholds``. Fewer than
  ``min_destabilizations`` onsets means no periodic behavior; ``outcome(reason)`` names
  the case. Phases are left empty unless the loss converged.

  Raises:
    TypeError / ValueError: a malformed ``series`` (``check_series``: no loss, series of
      unequal lengths, non-numeric values; lists are accepted).
  """
  series = check_series(series)
  loss = loss_series(series)
  n = len(loss)
  x = _x(series, n)
  onsets, peaks, reason = find_onsets(loss, series.get("weight_norm"), confirm=confirm,
                                      smooth=smooth, **kwargs)
  if onsets and len(onsets) < min_destabilizations:
    reason = (f"{TOO_FEW_ONSETS}{len(onsets)} destabilization (at {x[onsets[0]]:g}); "
              f"periodic behavior needs {min_destabilizations}: train longer")
  smoothed = _smooth(loss, smooth)
  bounds = [0, *onsets, n]
  periods = []
  converged = outcome(reason) not in ("never converged", TOO_FEW_FINITE)
  for k, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
    if end <= start:
      continue
    peak = peaks[k - 1] + 1 if k else start  # phase C: onset .. the spike's peak
    after = smoothed[peak:end]
    # phase B starts at the first sample within b_decades of the loss's minimum after the
    # peak (not the onset's: it can sit below a new, higher floor)
    low = np.nanmin(after) if np.isfinite(after).any() else np.nan
    top = smoothed[peak - 1] if peak > start else smoothed[start]  # the spike's peak
    near = np.flatnonzero(after <= low * 10**_b_band(top, low, b_decades))
    b_start = peak + int(near[0]) if len(near) else end
    phases_ = (((start, peak), (peak, b_start), (b_start, end)) if converged
               else ((start, start),) * 3)
    periods.append(Period(index=k, start=start, end=end, complete=end < n, c=phases_[0],
                          a=phases_[1], b=phases_[2], stats=_stats(series, loss, x, start, end)))
  return Analysis(x=x, onsets=onsets, periods=periods, reason=reason)


def _b_band(peak_loss: float, low: float, b_decades: float) -> float:
  """How close (in decades) to its minimum the loss must come for phase B.

  ``b_decades``, or half the spike's height where that is smaller (CIFAR's spikes of 5-50x never
  leave a decade of the floor; digits' spikes of 1e3-1e5x keep the decade)."""
  height = np.log10(peak_loss / low) if np.isfinite(peak_loss) and low > 0 else np.inf
  return float(max(0.0, min(b_decades, 0.5 * height)))  # the minimum itself always counts


def _stats(series: dict[str, np.ndarray], loss: np.ndarray, x: np.ndarray, start: int,
           end: int) -> dict[str, float]:
  """Per-period statistics of samples [start, end).

  Its x range and length, minimum loss and test error, effective-LR, effective-gradient-norm and
  weight-norm ranges."""
  n = len(loss)
  stats: dict[str, float] = {
      "x_start": float(x[start]), "x_end": float(x[end - 1]),
      "length": float(x[end] - x[start]) if end < n else float(x[end - 1] - x[start] + 1),
      "samples": float(end - start),
      "min_loss": float(np.nanmin(loss[start:end])) if np.isfinite(loss[start:end]).any()
                  else float("nan"),
  }
  if "epoch" in series:
    stats["epoch_start"] = float(series["epoch"][start])
    stats["epochs"] = float(series["epoch"][min(end, n - 1)] - series["epoch"][start])
  if "step" in series:
    stats["step_start"] = float(series["step"][start])
    stats["steps"] = float(series["step"][min(end, n - 1)] - series["step"][start])
  if "test_error" in series and np.isfinite(series["test_error"][start:end]).any():
    stats["min_test_error"] = float(np.nanmin(series["test_error"][start:end]))
  for name in ("effective_lr", "effective_grad_norm", "weight_norm"):
    if name in series:
      _range(stats, name, series[name][start:end])
  return stats


def chance_loss(workdir: str) -> float | None:
  """ln(number of classes) of a run's dataset, from its config.json (None if unknown)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    name = json.load(f).get("data", {}).get("name")
  classes = {"digits": 10, "cifar10": 10, "cifar100": 100}.get(name)
  return float(np.log(classes)) if classes else None


def analyze_run(workdir: str, steps: bool = False, series: dict[str, np.ndarray] | None = None,
                **kwargs) -> Analysis:
  """``analyze`` of a run directory's logs, with the chance-level loss ln(classes) as reference.

  ``series``: already loaded with ``load_series``. The chance level is the reference for
  convergence: a run whose first logged loss is already low still needs to fall ``converge_ratio``
  below chance, and ``settle_fraction`` of the way from chance to its lowest level, to count as
  converged."""
  kwargs.setdefault("reference_loss", chance_loss(workdir))
  return analyze(load_series(workdir, steps=steps) if series is None else series, **kwargs)


def find_destabilizations(series: dict[str, np.ndarray], **kwargs) -> list[int]:
  """Epochs (or steps) of the destabilization onsets (``analyze``'s detector)."""
  return [int(v) for v in analyze(series, **kwargs).destabilizations]
