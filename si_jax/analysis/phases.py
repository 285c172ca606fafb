"""Periods and phases of a run, read from its logs (Sec. 3-4, Figs. 1-4, 11 and 14).

Phases A, B and C (the spike and norm jump, Eq. (3)) are those of
``si_jax.analysis.detector``, which the loop runs too, so live and offline answers agree;
a period runs from one onset to the next (period 0, the warm-up, from the start). Entry
points: ``analyze``, ``analyze_run``, ``detector_options``, ``outcome``. Details:
docs/detector.md."""


from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from si_jax import data as data_lib
from si_jax import logs
from si_jax.analysis import detector


def load_series(workdir: str, steps: bool = False) -> dict[str, np.ndarray]:
  """Every numeric metric of a run as a float array over epochs (NaN where absent or null)."""
  records = logs.read_run(workdir, steps=steps)
  number = lambda v: isinstance(v, (int, float)) or v is None
  keys = sorted({k for r in records for k, v in r.items() if number(v)} -
                {k for r in records for k, v in r.items() if not number(v)})
  return {k: np.asarray([np.nan if r.get(k) is None else r[k] for r in records], np.float64)
          for k in keys}


def loss_series(series: dict[str, np.ndarray]) -> np.ndarray:
  """The loss to analyze: the full-pass train loss if mostly logged (appendix B), else 'loss'."""
  return series[detector.loss_key(series)]


SERIES_KEYS = ("loss", "train_loss", "weight_norm", "epoch", "step", "test_error",
               "effective_lr", "effective_grad_norm")  # what ``analyze`` reads


def check_series(series) -> dict[str, np.ndarray]:
  """``series`` with ``SERIES_KEYS`` as 1-D float arrays (``detector.columns``'s checks)."""
  checked, _ = detector.columns(series, SERIES_KEYS)
  return {**series, **checked}


@dataclasses.dataclass(frozen=True)
class Period:
  """One period: samples [start, end); its phases tile it (all empty if never converged)."""
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


TOO_FEW_FINITE = detector.TOO_FEW_FINITE
NEVER_CONVERGED = detector.NEVER_CONVERGED
NEVER_DESTABILIZED = detector.NEVER_DESTABILIZED
TOO_FEW_ONSETS = "only "  # "only 1 destabilization (at ...)"


def outcome(reason: str) -> str:
  """A run's verdict from its ``Analysis.reason``, for tables; an unknown reason is kept."""
  if not reason:
    return "periodic"
  for prefix, verdict in ((TOO_FEW_ONSETS, "too few destabilizations"),
                          (NEVER_DESTABILIZED, "never destabilized"),
                          (NEVER_CONVERGED, "never converged"),
                          (TOO_FEW_FINITE, TOO_FEW_FINITE)):
    if reason.startswith(prefix):
      return verdict
  return reason


def _range(stats: dict, name: str, values: np.ndarray) -> None:
  values = values[np.isfinite(values)]
  if len(values):
    stats[f"{name}_min"], stats[f"{name}_max"] = float(values.min()), float(values.max())


def analyze(series: Mapping[str, Any], *, reference_loss: float | None = None,
            norm: str = "auto", loss_key: str | None = None, min_destabilizations: int = 2,
            **constants) -> Analysis:
  """Destabilizations, periods, phases and per-period statistics of a logged run.

  ``series``: ``load_series(workdir[, steps=True])``; ``reference_loss``: the untrained loss
  (None: the first finite loss); fewer than ``min_destabilizations`` onsets is no periodic
  behavior; the rest as ``detector.detect``."""
  series = check_series(series)
  found = detector.detect(series, norm=norm, reference=reference_loss, loss_key=loss_key,
                          **constants)
  n, x, onsets = len(found.phases), found.x, found.onsets
  reason = found.reason
  if onsets and len(onsets) < min_destabilizations:
    reason = (f"{TOO_FEW_ONSETS}{len(onsets)} destabilization (at {x[onsets[0]]:g}); "
              f"periodic behavior needs {min_destabilizations}: train longer")
  loss = series[loss_key] if loss_key else loss_series(series)
  bounds = [0, *onsets, n]
  periods = []
  for k, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
    c, a, b = _period_phases(found, loss, start, end, k > 0)
    periods.append(Period(index=k, start=start, end=end, complete=end < n, c=c, a=a, b=b,
                          stats=_stats(series, loss, x, start, end)))
  return Analysis(x=x, onsets=onsets, periods=periods, reason=reason)


def _period_phases(found: detector.Result, loss: np.ndarray, start: int, end: int,
                   spike: bool) -> tuple[tuple[int, int], ...]:
  """Phases C (onset to peak), A, B (first converged stretch to ``end``) of [start, end)."""
  converged = [e.index for e in found.events if e.kind == "converged" and start <= e.index < end]
  if not any(e.kind == "converged" for e in found.events):
    return (start, start), (start, start), (start, start)
  peak = start
  if spike:
    peaks = [e.index for e in found.events if e.kind == "peak" and start <= e.index < end]
    if peaks:
      peak = peaks[0] + 1
    else:
      spiking = np.nan_to_num(loss[start:end], nan=-np.inf)[:found.constants.window]
      peak = start + int(np.argmax(spiking)) + 1
  b_start = min([i for i in converged if i >= peak] or [end])
  return (start, peak), (peak, b_start), (b_start, end)


def _stats(series: dict[str, np.ndarray], loss: np.ndarray, x: np.ndarray, start: int,
           end: int) -> dict[str, float]:
  """Per-period statistics of samples [start, end): x range, minima, and metric ranges."""
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


CLASSES = data_lib.NUM_CLASSES  # classes per dataset name: ln(classes) is the chance loss


def read_config(workdir: str) -> dict | None:
  """A run's config.json as a dict (None where there is none; ValueError: not a JSON object)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    try:
      config = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not JSON ({e})") from None
  if not isinstance(config, dict):
    raise ValueError(f"{path}: a JSON {type(config).__name__}, not a config (an object)")
  for name, section in config.items():
    if name in ("data", "model", "optim", "train") and not isinstance(section, (dict, type(None))):
      raise ValueError(f"{path}: {name!r} is a {type(section).__name__}, not a section (an "
                       "object)")
  return config


def chance_loss(workdir: str) -> float | None:
  """ln(number of classes) of a run's dataset, from its config.json (None if unknown)."""
  return detector_options(read_config(workdir) or {})["reference"]


def detector_options(config: Mapping[str, Any]) -> dict[str, Any]:
  """The detector's arguments for a run of ``config`` (a ConfigDict or its JSON dict).

  Used by the loop and ``analyze_run`` alike: reference ln(classes), norm 'fixed' where the
  optimizer holds the SI norm, 'train_loss' where ``train.eval_every`` is 1."""
  data, optim, train = (config.get(k) or {} for k in ("data", "optim", "train"))
  classes = CLASSES.get(data.get("name"))
  fixed = bool(optim.get("fix_si_norm") or optim.get("fixed_effective_lr")
               or optim.get("sphere", "off") != "off")
  return {"reference": float(np.log(classes)) if classes else None,
          "norm": "fixed" if fixed else "auto",
          "loss_key": "train_loss" if train.get("eval_every", 1) == 1 else "loss"}


def analyze_run(workdir: str, steps: bool = False, series: dict[str, np.ndarray] | None = None,
                **kwargs) -> Analysis:
  """``analyze`` of a run directory's logs with its config's ``detector_options``; kwargs win."""
  series = load_series(workdir, steps=steps) if series is None else series
  return analyze_with_config(series, read_config(workdir) or {}, steps, **kwargs)


def analyze_with_config(series: dict[str, np.ndarray], config: Mapping[str, Any],
                        steps: bool = False, **kwargs) -> Analysis:
  """``analyze`` of logged ``series`` with ``config``'s ``detector_options``; kwargs win."""
  options = detector_options(config)
  if steps or options["loss_key"] not in series:
    del options["loss_key"]
  options["reference_loss"] = options.pop("reference")
  return analyze(series, **{**options, **kwargs})


def find_destabilizations(series: dict[str, np.ndarray], **kwargs) -> list[int]:
  """Epochs (or steps) of the destabilization onsets (``analyze``'s detector)."""
  return [int(v) for v in analyze(series, **kwargs).destabilizations]
