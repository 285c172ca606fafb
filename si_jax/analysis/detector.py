"""Destabilizations (phase C, Sec. 4) decided online, one record at a time.

A sharp rise of the train loss from a converged level (phase B), answered by a rise of
the SI norm where it is free (Eq. (3)), else by the loss alone. An onset is final W samples
after it. Entry points: ``OnlineDetector`` (live), ``detect`` (a whole run),
``sensitivity``. Definition, constants, validation: docs/detector.md."""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

ZERO_LOSS = float(np.finfo(np.float32).eps)  # what a logged loss of exactly 0 stands for
FIXED_NORM = 1e-5  # relative norm changes below this are rounding: the norm is fixed

# how the reasons for no destabilization start (the words of si_jax.analysis.phases.outcome)
TOO_FEW_FINITE = "too few finite loss values"
NEVER_CONVERGED = "the loss never converged"
NEVER_DESTABILIZED = "the loss converged and never destabilized"


@dataclasses.dataclass(frozen=True)
class Constants:
  """The definition's constants: meanings in docs/detector.md#the-constants."""
  rise: float = 1.25
  converge: float = 5.0
  window: int = 6
  noise: float = 3.0
  settle: float = 0.5
  smooth: int = 3
  hold: int = 2

  def __post_init__(self):
    if not (self.rise > 1 and self.converge > 1 and self.noise >= 0 and 0 <= self.settle <= 1):
      raise ValueError(f"need rise > 1, converge > 1, noise >= 0, 0 <= settle <= 1; got rise "
                       f"{self.rise}, converge {self.converge}, noise {self.noise}, settle "
                       f"{self.settle}")
    for name, low in (("window", 2), ("smooth", 1), ("hold", 1)):
      value = getattr(self, name)
      if not (isinstance(value, int) and low <= value <= 64):
        raise ValueError(f"need an integer {low} <= {name} <= 64, got {value!r}")
    if self.hold + 1 > self.window:
      raise ValueError(f"need hold + 1 <= window (a spike is confirmed within the window); "
                       f"got hold {self.hold}, window {self.window}")


@dataclasses.dataclass(frozen=True)
class Event:
  """A decision ('converged', 'onset', 'peak', 'rejected') at ``index``, final at ``decided``."""
  kind: str
  index: int
  x: float
  decided: int


class _Sample(NamedTuple):
  index: int
  x: float
  loss: float    # ln loss
  level: float   # running median of ln loss
  rho: float     # ln weight norm (NaN when not used)


class OnlineDetector:
  """Takes a run's records one at a time; ``update`` returns what each settles.

  Args:
    norm: 'auto' (the norm must answer once 'weight_norm' has moved by ``FIXED_NORM``),
      'free' (it must answer) or 'fixed' (loss only).
    reference: the untrained loss, e.g. ln(classes); None: the first finite loss.
    loss_key: 'loss' or 'train_loss'; None: 'train_loss' if the first record has it.
    x_key: 'epoch' or 'step'; None: 'epoch' if present, else 'step', else the position.
    **constants: fields of ``Constants``.

  Raises:
    ValueError: an unknown option, a non-positive ``reference``, a constant out of range."""

  def __init__(self, norm: str = "auto", reference: float | None = None,
               loss_key: str | None = None, x_key: str | None = None, **constants):
    for name, value, allowed in (("norm", norm, ("auto", "free", "fixed")),
                                 ("loss_key", loss_key, (None, "loss", "train_loss")),
                                 ("x_key", x_key, (None, "epoch", "step"))):
      if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if reference is not None and not (math.isfinite(_number(reference)) and reference > 0):
      raise ValueError(f"reference must be a positive loss, got {reference!r}")
    self.constants = c = Constants(**constants)
    self.norm, self.loss_key, self.x_key = norm, loss_key, x_key
    self._top = math.log(float(reference)) if reference is not None else None
    # the window, the change into it, a rise held over hold + 1 samples, the median
    self._recent: collections.deque = collections.deque(maxlen=c.window + c.hold + c.smooth + 3)
    self._records = 0             # records seen (the next record's index)
    self.finite = 0               # records with a usable loss
    self._zero = ZERO_LOSS        # smallest positive loss so far, or float32's epsilon
    self._rho0: float | None = None
    self._free = norm == "free"
    self._run_start = None        # first sample of the current converged run
    self._phase: str | None = None
    self._pending: dict | None = None  # a sharp rise awaiting the norm's answer
    self._spike: dict | None = None    # the latest onset's peak search
    self._last_peak = -1
    self.count = self.rejected = 0
    self.ever_converged = False
    self.lowest_level = self.lowest_held = math.inf

  @property
  def mode(self) -> str:
    """'loss and norm' once the norm must answer, else 'loss only'."""
    return "loss and norm" if self._free else "loss only"

  @property
  def top(self) -> float:
    """ln of the reference loss (NaN until known)."""
    return math.nan if self._top is None else self._top

  def state(self) -> dict[str, Any]:
    """{'phase' (final W samples later), 'destabilizations', 'mode', 'pending' (a rise's index)}."""
    return {"phase": self._phase, "destabilizations": self.count, "mode": self.mode,
            "pending": self._pending["index"] if self._pending else None}

  def update(self, record: Mapping[str, Any]) -> list[Event]:
    """Takes the next record (a mapping); returns the events it settles, in order."""
    if not isinstance(record, Mapping):
      raise TypeError(f"a record is a mapping, got {type(record).__name__}")
    index, self._records = self._records, self._records + 1
    loss = self._loss(record)
    if loss is None:
      return []
    key = self.x_key or ("epoch" if "epoch" in record else "step")
    self._push(index, _number(record.get(key, index + 1)), math.log(loss),
               self._log_norm(record))
    events: list[Event] = []
    self._resolve(events)
    self._advance_spike(events)
    self._track_convergence(events)
    if self._pending is None and self._spike is None:
      hold = self.constants.hold + (not self._free)
      if not any(self._try_onset(back, hold, events) for back in (hold, hold - 1)) and (
          self._free):
        self._try_norm_onset(hold, events)
    return events

  def _loss(self, record) -> float | None:
    """The record's loss; None when missing, non-finite or negative; 0 -> a floor below all."""
    if self.loss_key is None:
      self.loss_key = "train_loss" if "train_loss" in record else "loss"
    value = _number(record.get(self.loss_key))
    if not math.isfinite(value) or value < 0:
      return None
    if value == 0:
      return self._zero
    self._zero = min(self._zero, value)
    return value

  def _log_norm(self, record) -> float:
    """ln rho (NaN if absent or norm='fixed'); 'auto' frees the norm once rho moves."""
    rho = _number(record.get("weight_norm"))
    if self.norm == "fixed" or not (math.isfinite(rho) and rho > 0):
      return math.nan
    log_rho = math.log(rho)
    if self._rho0 is None:
      self._rho0 = log_rho
    if abs(log_rho - self._rho0) > FIXED_NORM:
      self._free = True
    return log_rho

  def _push(self, index: int, x: float, log_loss: float, log_rho: float) -> None:
    self.finite += 1
    if self._top is None:
      self._top = log_loss
    recent, c = self._recent, self.constants
    tail = [recent[-i].loss for i in range(1, min(c.smooth, len(recent) + 1))]
    level = _median(tail + [log_loss])
    recent.append(_Sample(index, x, log_loss, level, log_rho))
    self.lowest_level = min(self.lowest_level, level)
    if len(recent) >= c.window:
      self.lowest_held = min(self.lowest_held,
                             max(recent[-i].level for i in range(1, c.window + 1)))

  def _converged(self, sample: _Sample) -> bool:
    """Condition 1 for one sample: loss and level ``converge`` below T, level ``settle`` down."""
    c = self.constants
    deepest = min(self.lowest_held, sample.level)
    return (max(sample.loss, sample.level) <= self._top - math.log(c.converge) and
            sample.level <= self._top - c.settle * (self._top - deepest))

  def _track_convergence(self, events: list[Event]) -> None:
    """Phase B starts at the first of W consecutive converged samples after the last peak."""
    latest = self._recent[-1]
    if not self._converged(latest):
      self._run_start = None
      return
    if self._run_start is None:
      self._run_start = latest.index
    if self._phase in (None, "A") and self._spike is None:
      run = [s for s in self._recent if s.index >= max(self._run_start, self._last_peak + 1)]
      if len(run) >= self.constants.window:
        self._phase = "B"
        self.ever_converged = True
        events.append(Event("converged", run[0].index, run[0].x, latest.index))

  def _phase_b_before(self, t: int, samples: list[_Sample]):
    """Condition 1 for onset t: (window, top, J) if the W samples before t are phase B.

    ``top``: their highest level; J: ``noise`` x the median deviation of their level
    changes about the median change (phase B's jitter about its trend). None otherwise."""
    w = self.constants.window
    if t < w + 1:
      return None
    window = samples[t - w:t]
    if window[0].index <= self._last_peak or not all(map(self._converged, window)):
      return None
    changes = [b.level - a.level for a, b in zip(samples[t - w - 1:t - 1], window)]
    trend = _median(changes)
    jitter = _median([abs(d - trend) for d in changes])  # about the trend: noise
    return window, max(s.level for s in window), self.constants.noise * jitter

  def _above_window(self, t: int, samples: list[_Sample], held: list[_Sample]) -> bool:
    """Whether sample t stands above the W levels before t and ``held`` clears them by ln(rise).

    Condition 2 without its noise term: a necessary condition, checked before the costlier
    condition 1 (most samples fail it: a loss at its floor does not rise)."""
    w = self.constants.window
    if t < w + 1:
      return False
    top = max(s.level for s in samples[t - w:t])
    return samples[t].loss > top and min(s.loss for s in held) >= top + math.log(
        self.constants.rise)

  def _try_onset(self, back: int, hold: int, events: list[Event]) -> bool:
    """Conditions 1-2 for onset t = ``back`` samples ago (3 ends in ``_resolve``); decided?"""
    samples = list(self._recent)
    t = len(samples) - 1 - back
    if not self._above_window(t, samples, samples[t + back - hold + 1:]):
      return False
    before = self._phase_b_before(t, samples)
    if before is None:
      return False
    window, top, noise = before
    onset, held = samples[t], samples[t + back - hold + 1:]
    rise = top + max(math.log(self.constants.rise), noise)
    if not (onset.loss > top + noise and min(s.loss for s in held) >= rise
            and (back < hold or onset.loss < rise)):
      return False
    rise_at = {"index": onset.index, "x": onset.x, "rho_before": window[-1].rho,
               "left": self.constants.window - back}
    if not self._free:
      self._confirm(rise_at, events)
    elif not all(b.rho < a.rho for a, b in zip(window, window[1:])):  # NaN, or a rise
      self._reject(rise_at, events)
    elif max(s.rho for s in samples[t:]) > rise_at["rho_before"]:
      self._confirm(rise_at, events)
    else:
      self._pending = rise_at
    return True

  def _try_norm_onset(self, back: int, events: list[Event]) -> bool:
    """Condition 2' (free norm): a rise the loss did not hold, confirmed by the norm.

    Sample t = ``back`` samples ago clears phase B's top by ln(``rise``) and J on its own,
    and by now ln rho stands above its value before t by more than ``noise`` x its median
    per-sample move in phase B (Eq. (3): the effective-gradient term beat weight decay by
    more than phase B's own moves). Decided at t + ``hold``, as condition 2."""
    samples = list(self._recent)
    t = len(samples) - 1 - back
    if not self._above_window(t, samples, samples[t:t + 1]):
      return False
    before = self._phase_b_before(t, samples)
    if before is None:
      return False
    window, top, noise = before
    onset, w = samples[t], self.constants.window
    moves = [abs(b.rho - a.rho) for a, b in zip(samples[t - w - 1:t - 1], window)]
    answer = max(s.rho for s in samples[t + 1:]) - window[-1].rho
    if not (onset.loss > top + max(math.log(self.constants.rise), noise)
            and all(b.rho < a.rho for a, b in zip(window, window[1:]))
            and answer > self.constants.noise * _median(moves)):
      return False
    self._confirm({"index": onset.index, "x": onset.x, "rho_before": window[-1].rho,
                   "left": 0}, events)
    return True

  def _resolve(self, events: list[Event]) -> None:
    """Condition 3: the pending rise is confirmed once rho rises, rejected after W samples."""
    p = self._pending
    if p is None:
      return
    p["left"] -= 1
    if self._recent[-1].rho > p["rho_before"]:
      self._pending = None
      self._confirm(p, events)
    elif p["left"] <= 0:
      self._pending = None
      self._reject(p, events)

  def _reject(self, rise_at: dict, events: list[Event]) -> None:
    self.rejected += 1
    events.append(Event("rejected", rise_at["index"], rise_at["x"], self._recent[-1].index))

  def _confirm(self, rise_at: dict, events: list[Event]) -> None:
    """The onset counts; its peak is sought over the W samples after it."""
    latest = self._recent[-1].index
    self.count += 1
    self._phase = "C"
    events.append(Event("onset", rise_at["index"], rise_at["x"], latest))
    after = [s for s in self._recent if s.index >= rise_at["index"]]
    peak = max(after, key=lambda s: s.loss)
    self._spike = {"onset": rise_at["index"], "opened": latest, "peak": peak,
                   "left": self.constants.window - (len(after) - 1)}
    if self._spike["left"] <= 0:
      self._close_spike(events)

  def _advance_spike(self, events: list[Event]) -> None:
    s = self._spike
    if s is None or s["opened"] == self._recent[-1].index:
      return
    if self._recent[-1].loss > s["peak"].loss:
      s["peak"] = self._recent[-1]
    s["left"] -= 1
    if s["left"] <= 0:
      self._close_spike(events)

  def _close_spike(self, events: list[Event]) -> None:
    """The peak is final: phase A starts after it; phase B may start again."""
    peak, self._spike = self._spike["peak"], None
    self._last_peak = peak.index
    self._phase = "A"
    self._run_start = None if self._run_start is None else max(self._run_start, peak.index + 1)
    events.append(Event("peak", peak.index, peak.x, self._recent[-1].index))


def _median(values: list[float]) -> float:
  values = sorted(values)
  mid = len(values) // 2
  return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def _number(value) -> float:
  """``value`` as a float; NaN for None or anything that is not a real number."""
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


@dataclasses.dataclass(frozen=True)
class Result:
  """``detect``'s answer (``phases`` of the last W samples are provisional)."""
  onsets: list[int]
  peaks: list[int]
  phases: list[str | None]
  reason: str
  mode: str
  x: np.ndarray
  events: list[Event]
  pending: int | None
  constants: Constants

  @property
  def count(self) -> int:
    """The number of onsets."""
    return len(self.onsets)

  @property
  def destabilizations(self) -> list[float]:
    """x values (epochs or steps) of the onsets."""
    return [float(self.x[i]) for i in self.onsets]


def detect(series: Mapping[str, Any], *, norm: str = "auto", reference: float | None = None,
           loss_key: str | None = None, **constants) -> Result:
  """Feeds a whole run through one ``OnlineDetector``: offline = online by construction.

  ``series``: {name: one value per sample} (``phases.load_series``); x is 'step' where
  epochs repeat; ``loss_key`` None: ``loss_key(series)``; the rest as ``OnlineDetector``.
  The result's onsets older than W samples are those of any longer run."""
  columns, chosen, x_key = _columns(series)
  if loss_key is None:
    loss_key = chosen
  elif loss_key not in columns:
    raise ValueError(f"loss_key {loss_key!r} is not in the series (keys: {sorted(series)})")
  n = len(columns[loss_key])
  detector = OnlineDetector(norm=norm, reference=reference, loss_key=loss_key, x_key=x_key,
                            **constants)
  names = [k for k in (loss_key, "weight_norm", x_key) if k in columns]
  rows = zip(*(columns[k].tolist() for k in names))
  events = [e for row in rows for e in detector.update(dict(zip(names, row)))]
  onsets = [e.index for e in events if e.kind == "onset"]
  return Result(onsets=onsets, peaks=[e.index for e in events if e.kind == "peak"],
                phases=_phases(events, n), reason=_reason(detector, bool(onsets), n),
                mode=detector.mode,
                x=columns[x_key] if x_key in columns else np.arange(1.0, n + 1.0),
                events=events, pending=detector.state()["pending"],
                constants=detector.constants)


COLUMNS = ("loss", "train_loss", "weight_norm", "epoch", "step")  # what ``detect`` reads


def loss_key(series: Mapping[str, Any]) -> str:
  """'train_loss' where finite for over half the samples (or alone), else 'loss' (or ValueError)."""
  if "loss" not in series and "train_loss" not in series:
    raise ValueError(f"series has no 'loss' nor 'train_loss' (keys: {sorted(series)})")
  train = series.get("train_loss")
  if train is not None and ("loss" not in series or
                            np.isfinite(np.asarray(train, np.float64)).sum() > len(train) // 2):
    return "train_loss"
  return "loss"


def columns(series: Mapping[str, Any], keys=COLUMNS) -> tuple[dict[str, np.ndarray], str]:
  """``keys`` of ``series`` (those present) as 1-D float arrays of the loss's length; the loss key.

  Raises TypeError for a non-mapping, ValueError (naming the column) for a bad column."""
  if not isinstance(series, Mapping):
    raise TypeError(f"series must be a mapping {{name: values}}, got {type(series).__name__}")
  out = {}
  for key in keys:
    if key in series:
      try:
        out[key] = np.asarray(series[key], np.float64)
      except (TypeError, ValueError):
        raise ValueError(f"series[{key!r}] is not a sequence of numbers") from None
      if out[key].ndim != 1:
        raise ValueError(f"series[{key!r}] must be 1-D (one value per sample), has shape "
                         f"{out[key].shape}")
  chosen = loss_key(out)
  n = len(out[chosen])
  for key, values in out.items():
    if len(values) != n:
      raise ValueError(f"series[{key!r}] has {len(values)} values but series[{chosen!r}] "
                       f"has {n}: one value per sample each")
  return out, chosen


def _columns(series) -> tuple[dict[str, np.ndarray], str, str]:
  """The columns ``detect`` reads; the loss key; the x key (steps where epochs repeat)."""
  out, chosen = columns(series)
  per_step = "step" in out and "epoch" in out and len(np.unique(out["epoch"])) < len(out[chosen])
  return out, chosen, "step" if per_step or "epoch" not in out else "epoch"


def _phases(events: Iterable[Event], n: int) -> list[str | None]:
  """Per-sample phases: B from 'converged', C from 'onset', A after 'peak', until the next."""
  starts = {}
  for e in events:
    if e.kind in ("converged", "onset", "peak"):
      starts[e.index + (e.kind == "peak")] = {"converged": "B", "onset": "C", "peak": "A"}[e.kind]
  phases, current = [], None
  for i in range(n):
    current = starts.get(i, current)
    phases.append(current)
  return phases


def _reason(detector: OnlineDetector, found: bool, n: int) -> str:
  """Why there are no onsets ('' if there are), starting with one of the reasons above."""
  c = detector.constants
  if detector.finite < c.window + c.hold + 3:
    return (f"{TOO_FEW_FINITE} ({detector.finite} of {n}; {c.window + c.hold + 3} needed for "
            f"a phase B of {c.window} samples and a rise): the run diverged or is too short")
  if found:
    return ""
  if not detector.ever_converged:
    return (f"{NEVER_CONVERGED}: it never stayed {c.converge:g}x below the reference loss "
            f"{math.exp(detector.top):.3g} for {c.window} samples (lowest level "
            f"{math.exp(detector.lowest_level):.3g}): learning rate or weight decay too "
            "large, or a network that cannot fit the data")
  noise = (f"; {detector.rejected} sharp rises without the weight norm's answer were noise"
           if detector.rejected else "")
  only = ("; loss only: the weight norm is fixed or not logged" if detector.mode == "loss only"
          else "")
  return (f"{NEVER_DESTABILIZED} (learning rate or weight decay too small, or the run too "
          f"short){noise}{only}")


SCALINGS = {"rise": "ln", "converge": "ln", "window": "int", "noise": "linear",
            "settle": "linear", "smooth": "int", "hold": "int"}  # how each is halved


@dataclasses.dataclass(frozen=True)
class Sensitivity:
  """A run's onset count with one constant at its value (``base``), halved and doubled."""
  name: str
  value: float
  halved_value: float
  doubled_value: float
  base: int
  halved: int
  doubled: int


def halved_and_doubled(c: Constants) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
  """Per constant of ``c``: (name, overrides halved, doubled) as ``SCALINGS`` says, kept valid."""
  out = []
  for name, how in SCALINGS.items():
    value = getattr(c, name)
    if how == "ln":
      half, double = value ** 0.5, value ** 2
    elif how == "linear":
      half, double = value / 2, min(value * 2, 1.0) if name == "settle" else value * 2
    else:
      half, double = max(2 if name == "window" else 1, round(value / 2)), value * 2
    if name == "hold":
      double = min(double, c.window - 1)
    pair = [{**({"hold": min(c.hold, v - 1)} if name == "window" else {}), name: v}
            for v in (half, double)]
    out.append((name, *pair))
  return out


def sensitivity(series: Mapping[str, Any], **kwargs) -> list[Sensitivity]:
  """``detect(series, **kwargs)``'s onset count with each constant halved and doubled in turn."""
  base = detect(series, **kwargs)
  rows = []
  for name, half, double in halved_and_doubled(base.constants):
    counts = [detect(series, **{**kwargs, **v}).count for v in (half, double)]
    rows.append(Sensitivity(name, getattr(base.constants, name), half[name], double[name],
                            base.count, *counts))
  return rows
