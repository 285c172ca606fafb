"""Periods and phases of a run, read from its logs (Sec. 3 of the paper, Figs. 1-4).

A *destabilization* (the start of phase C) is a train-loss spike that comes after the
loss has converged and that the SI weight norm answers with a jump: the two together
are what the paper calls a destabilization (Figs. 1-4, 11). Concretely, sample i is the
onset of a destabilization when

1. the loss is ``ratio`` (10) times above its minimum since the run start or since the
   last destabilization was over ("armed": after a spike the loss has to fall
   ``ratio`` below the spike's peak before a new one can count, so one long or double-
   humped spike counts once);
2. the loss has converged: its running median over 3 samples has fallen
   ``converge_ratio`` (100) below the reference loss: that median's largest value, or
   the chance-level loss ln(classes) if larger (``analyze_run`` reads the classes from
   the run's config), so a run whose loss never converges (too large a learning rate)
   has no destabilizations however noisy it is;
3. the SI weight norm jumps: its largest value in the ``confirm`` samples from i on
   exceeds its smallest in the ``confirm`` samples before i by the factor
   ``1 + norm_jump`` (a loss bump without a norm jump is SGD noise, not phase C).

Each period then runs from one onset to the next (period 0 from the start of training:
the warm-up, which has no phase C) and is split into

* phase C: from the onset to the loss's peak within the spike (before the loss has
  fallen ``ratio`` below that peak);
* phase A: from the peak until the loss is within ``b_decades`` (1) decade of the
  period's minimum loss (the loss falls, the norm changes little);
* phase B: from there to the next onset (the loss sits near its minimum while the
  weight norm shrinks and the effective LR eta/rho^2 grows).

``analyze`` returns all of it with per-period statistics (length in samples, epochs
and steps, minimum train loss and test error, effective-LR, effective-gradient-norm
and weight-norm ranges) and says "no periodic behavior" (with the reason) when a run
has fewer than two destabilizations.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from si_jax import logs


def load_series(workdir: str, steps: bool = False) -> dict[str, np.ndarray]:
  """Every logged metric of a run as a float array over epochs (NaN where absent)."""
  records = logs.read_run(workdir, steps=steps)
  keys = sorted({k for r in records for k in r})
  return {k: np.asarray([r.get(k, np.nan) for r in records], np.float64) for k in keys}


def loss_series(series: dict[str, np.ndarray]) -> np.ndarray:
  """The full-pass train loss where logged (appendix B), else the in-step batch loss."""
  if "train_loss" in series and np.isfinite(series["train_loss"]).sum() > len(series["train_loss"]) // 2:
    return series["train_loss"]
  return series["loss"]


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
  """One period: sample indices [start, end) and its phases (index ranges, end exclusive;
  they tile the period, except in a run whose loss never converged: all empty there)."""
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
  x: np.ndarray                  # epochs (or steps) of the samples
  onsets: list[int]              # sample indices of the destabilizations
  periods: list[Period]
  reason: str                    # why there is no periodic behavior ('' if there is)

  @property
  def periodic(self) -> bool:
    return not self.reason

  @property
  def destabilizations(self) -> list[float]:
    """x values (epochs or steps) of the destabilization onsets."""
    return [float(self.x[i]) for i in self.onsets]

  def period_lengths(self, key: str = "length") -> list[float]:
    """Lengths of the complete periods after the warm-up (period 0)."""
    return [p.stats[key] for p in self.periods[1:] if p.complete]

  def summary(self) -> dict[str, Any]:
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
      rows.append(f"  period {p.index}{'' if p.complete else ' (incomplete)'}: x {s['x_start']:.6g}"
                  f"..{s['x_end']:.6g}, min loss {s['min_loss']:.3g}, test error "
                  f"{s.get('min_test_error', float('nan')):.3g}, rho {s.get('weight_norm_min', float('nan')):.3g}"
                  f"..{s.get('weight_norm_max', float('nan')):.3g}, eff. LR "
                  f"{s.get('effective_lr_min', float('nan')):.3g}..{s.get('effective_lr_max', float('nan')):.3g}")
    return "\n".join(rows)


def _fmt(values: list[float]) -> str:
  return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def find_onsets(loss: np.ndarray, weight_norm: np.ndarray | None = None, *, ratio: float = 10.0,
                converge_ratio: float = 100.0, norm_jump: float = 0.02, confirm: int = 5,
                smooth: int = 1, reference_loss: float | None = None
                ) -> tuple[list[int], list[int], str]:
  """(onsets, peaks, reason): sample indices where destabilizations start, where each
  spike's loss peaks (before it falls ``ratio`` below that peak), and why there are no
  destabilizations if so.

  See the module docstring for the three conditions. ``weight_norm=None`` skips the
  norm-jump condition (e.g. for a bare loss trace).
  """
  if not ratio > 1 or not converge_ratio >= 1 or not norm_jump >= 0 or confirm < 1:
    raise ValueError(f"need ratio > 1, converge_ratio >= 1, norm_jump >= 0, confirm >= 1; "
                     f"got {ratio}, {converge_ratio}, {norm_jump}, {confirm}")
  loss = _smooth(np.asarray(loss, np.float64), smooth)
  finite = np.isfinite(loss) & (loss > 0)
  if finite.sum() < 3:
    return [], [], "fewer than 3 finite loss values"
  level = _smooth(np.where(finite, loss, np.nan), 3)  # one-sample dips are not convergence
  top = max(np.nanmax(level), reference_loss or 0.0)
  onsets: list[int] = []
  peaks: list[int] = []
  window_min, level_min, armed, peak = np.inf, np.inf, True, 0.0
  ever_converged, bumps_without_jump = False, 0
  for i in np.flatnonzero(finite):
    value = loss[i]
    if not armed:  # inside a spike: wait until the loss has come back down
      if value > peak:
        peak, peaks[-1] = value, int(i)
      elif value * ratio <= peak:
        armed, window_min, level_min = True, value, level[i]
      continue
    window_min, level_min = min(window_min, value), min(level_min, level[i])
    converged = level_min * converge_ratio <= top
    ever_converged |= converged
    if value > ratio * window_min and converged:
      if weight_norm is not None and not _norm_jumps(weight_norm, i, norm_jump, confirm):
        bumps_without_jump += 1
        continue
      onsets.append(int(i))
      peaks.append(int(i))
      armed, peak = False, value
  if onsets:
    return onsets, peaks, ""
  if not ever_converged:
    return [], [], (f"the loss never converged (its 3-sample running median fell to "
                f"{np.nanmin(level):.3g}, less than {converge_ratio:g}x below its maximum "
                f"{top:.3g}): learning rate or weight decay too large, or a network that cannot fit "
                "the data (e.g. too small a last-layer norm)")
  extra = (f"; {bumps_without_jump} loss bumps without a weight-norm jump were SGD noise"
           if bumps_without_jump else "")
  return [], [], ("the loss converged and never destabilized (learning rate or weight decay "
              f"too small, or the run too short){extra}")


def _norm_jumps(weight_norm: np.ndarray, i: int, norm_jump: float, confirm: int) -> bool:
  before = weight_norm[max(0, i - confirm):i + 1]
  after = weight_norm[i:i + confirm + 1]
  before, after = before[np.isfinite(before)], after[np.isfinite(after)]
  if not len(before) or not len(after):
    return False
  return after.max() > (1 + norm_jump) * before.min()


def _range(stats: dict, name: str, values: np.ndarray) -> None:
  values = values[np.isfinite(values)]
  if len(values):
    stats[f"{name}_min"], stats[f"{name}_max"] = float(values.min()), float(values.max())


def analyze(series: dict[str, np.ndarray], *, ratio: float = 10.0, converge_ratio: float = 100.0,
            norm_jump: float = 0.02, confirm: int = 5, smooth: int = 1,
            b_decades: float = 1.0, min_destabilizations: int = 2,
            reference_loss: float | None = None) -> Analysis:
  """Destabilizations, periods, phases and per-period statistics of a logged run.

  ``series`` is ``load_series(workdir)`` (per epoch) or ``load_series(workdir,
  steps=True)`` (per step; pass ``smooth`` of about an epoch's steps there, since
  batch losses are noisy). Fewer than ``min_destabilizations`` onsets means no
  periodic behavior.
  """
  loss = loss_series(series)
  n = len(loss)
  x = _x(series, n)
  rho = series.get("weight_norm")
  onsets, peaks, reason = find_onsets(loss, rho, ratio=ratio, converge_ratio=converge_ratio,
                               norm_jump=norm_jump, confirm=confirm, smooth=smooth,
                               reference_loss=reference_loss)
  if onsets and len(onsets) < min_destabilizations:
    reason = (f"only {len(onsets)} destabilization (at {x[onsets[0]]:g}); periodic behavior "
              f"needs {min_destabilizations}: train longer")
  smoothed = _smooth(loss, smooth)
  bounds = [0, *onsets, n]
  periods = []
  converged = not reason.startswith("the loss never converged")
  for k, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
    if end <= start:
      continue
    seg = smoothed[start:end]
    ok = np.isfinite(seg)
    peak = peaks[k - 1] + 1 if k else start  # phase C: onset .. the spike's peak
    after = smoothed[peak:end]
    low = np.nanmin(seg) if ok.any() else np.nan
    near = np.flatnonzero(after <= low * 10**b_decades)
    b_start = peak + int(near[0]) if len(near) else end

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
    phases_ = ((start, peak), (peak, b_start), (b_start, end)) if converged else ((start, start),) * 3
    periods.append(Period(index=k, start=start, end=end, complete=end < n,
                          c=phases_[0], a=phases_[1], b=phases_[2], stats=stats))
  return Analysis(x=x, onsets=onsets, periods=periods, reason=reason)


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
  """``analyze`` of a run directory's logs (``series``: already loaded with
  ``load_series``), with the chance-level loss as the reference for convergence (a run
  whose first logged loss is already low still counts as converged once it is 100x
  below chance)."""
  kwargs.setdefault("reference_loss", chance_loss(workdir))
  return analyze(load_series(workdir, steps=steps) if series is None else series, **kwargs)


def find_destabilizations(series: dict[str, np.ndarray], **kwargs) -> list[int]:
  """Epochs (or steps) of the destabilization onsets (``analyze``'s detector)."""
  return [int(v) for v in analyze(series, **kwargs).destabilizations]
