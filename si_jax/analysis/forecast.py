"""The next destabilization, forecast online from the SI norm's dynamics (Eq. (3)).

The time for Eq. (3), iterated from the current rho, to carry the effective LR to the
next *critical level* (log-t over the levels at the onsets so far, lowered by the loss's
climb in phase B, truncated at Eq. (3)'s equilibrium), unless it settles first (Remark
3); the level is the effective LR's or, where the run's own onsets agree better on it,
the angular step's (effective LR x g~, Proposition 1), widened then by g~'s own spread in
phase B. Entry points:
``OnlineForecaster``, ``Live`` (the loop's), ``replay``, ``score``, ``score_run``.
Method and measured scores: docs/forecast.md."""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from scipy import stats

from si_jax import logs
from si_jax.analysis import detector as detector_lib
from si_jax.analysis import phases

FIELDS = ("forecast_onset", "forecast_low", "forecast_high")
PRIOR_SPREAD = 0.25  # since revision 3; revisions 1 and 2 had 0.5 (docs/forecast.md)


@dataclasses.dataclass(frozen=True)
class Forecast:
  """A forecast made at sample ``made_at`` (x): the next onset's x and its interval."""
  made_at: float
  onset: float
  low: float
  high: float
  levels: int  # critical levels it rests on

  def fields(self) -> dict[str, float]:
    """The epoch record's fields (``FIELDS``)."""
    return dict(zip(FIELDS, (self.onset, self.low, self.high)))


class OnlineForecaster:
  """Takes a run's records one at a time, with its detector's events; returns forecasts.

  Args:
    wd: lambda (``optim.wd``); None: the growth rate of the effective LR is measured.
    steps_per_sample: optimizer steps between records (None: from 'step', else 1).
    coverage: the interval's probability.
    prior_spread: the spread of ln(critical level) before the run shows its own (one
      pseudo-level).
    horizon: samples beyond which a level is out of reach.
    x_key: 'epoch' or 'step'; None: 'epoch' if present.
    loss_key: the loss the detector reads ('train_loss' or 'loss'); None: 'train_loss'
      if the first record has it, else 'loss'.
    climb: lower the level by the loss's climb in phase B (revision 2); False: revision 1.
    angular: where the levels of effective LR x g~ are tighter than the effective LR's, the
      next level is theirs over today's g~ (revision 4); False: revision 3.
    equilibrium: truncate the level's distribution at Eq. (3)'s equilibrium effective LR
      (revision 4); False: revision 3.
    g_spread: with the angular level, widen the level's distribution by the spread of ln g~
      over phase B so far (revision 5); False: revision 4.

  Raises:
    ValueError: ``coverage`` outside (0, 1), or a non-positive number."""

  def __init__(self, wd: float | None = None, steps_per_sample: float | None = None,
               coverage: float = 0.8, prior_spread: float = PRIOR_SPREAD, horizon: int = 10_000,
               x_key: str | None = None, loss_key: str | None = None, climb: bool = True,
               angular: bool = True, equilibrium: bool = True, g_spread: bool = True):
    if not 0 < coverage < 1:
      raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
    for name, value in (("prior_spread", prior_spread), ("wd", wd),
                        ("steps_per_sample", steps_per_sample)):
      if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    self.wd, self.steps_per_sample = wd, steps_per_sample
    self.coverage, self.prior_spread, self.horizon = coverage, prior_spread, horizon
    self.x_key, self.loss_key, self.climb = x_key, loss_key, climb
    self.angular, self.equilibrium, self.g_spread = angular, equilibrium, g_spread
    self.levels: list[float] = []        # ln of the critical levels
    self.angular_levels: list[float] = []  # ln(level x the phase-B g~ then); nan: unknown
    self._g_history: collections.deque = collections.deque(maxlen=64)  # (index, g~ then)
    self._last_onset = -1                # the sample index of the latest onset
    self._recent: collections.deque = collections.deque(maxlen=64)  # (index, record)
    self._index = 0
    self._phase_b: list[dict] = []       # the current phase B's records
    self._last_step: float | None = None
    self._per_sample = 1.0               # steps between records, learned from 'step'
    self._last_x: float | None = None
    self._x_per_sample = 1.0             # x between records (1 for epochs, 1 per-step)
    self._floor = math.inf               # the lowest ln(loss) since the last onset

  def update(self, record: Mapping[str, Any], events: list[detector_lib.Event],
             phase: str | None) -> Forecast | None:
    """Takes the next record, the events its detector returned for it and its phase."""
    index, self._index = self._index, self._index + 1
    self._recent.append((index, record))
    self._learn_steps(record)
    for e in events:
      if e.kind == "onset":
        self._add_level(e.index)
        self._floor = min((self._log_loss(r) for i, r in self._recent if i >= e.index),
                          default=math.inf)
    self._floor = min(self._floor, self._log_loss(record))
    if phase != "B" or any(e.kind in ("onset", "peak") for e in events):
      self._phase_b = [] if phase != "B" else self._phase_b
      return None
    self._phase_b.append(record)
    self._g_history.append((index, self._phase_b_g()))
    if not self.levels:
      return None
    return self._forecast(record)

  def _log_loss(self, record: Mapping[str, Any]) -> float:
    """ln of the record's train loss (``loss_key``); inf where missing or not positive."""
    if self.loss_key is None:  # the detector's choice: from the first record
      self.loss_key = "train_loss" if "train_loss" in record else "loss"
    loss = _number(record.get(self.loss_key))
    return math.log(loss) if math.isfinite(loss) and loss > 0 else math.inf

  def _learn_steps(self, record) -> None:
    """Steps and x between records, from consecutive records."""
    x = _number(record.get(self.x_key or ("epoch" if "epoch" in record else "step")))
    if math.isfinite(x):
      if self._last_x is not None and x > self._last_x:
        self._x_per_sample = x - self._last_x
      self._last_x = x
    step = _number(record.get("step"))
    if self.steps_per_sample is None and math.isfinite(step):
      if self._last_step is not None and step > self._last_step:
        self._per_sample = step - self._last_step
      self._last_step = step

  def _add_level(self, onset: int) -> None:
    """The effective LR of the sample before ``onset``, if it is still held and valid.

    With it, its angular level: times the median g~ of phase B as of that sample (nan
    where this period logged no phase-B g~ before its onset)."""
    before = [r for i, r in self._recent if i == onset - 1]
    lr = _number(before[0].get("effective_lr")) if before else math.nan
    if math.isfinite(lr) and lr > 0:
      self.levels.append(math.log(lr))
      g = [g for i, g in self._g_history if self._last_onset <= i < onset]
      ok = g and math.isfinite(g[-1]) and g[-1] > 0
      self.angular_levels.append(math.log(lr * g[-1]) if ok else math.nan)
    self._last_onset = max(self._last_onset, onset)

  def _distribution(self, levels: list[float]) -> tuple[float, float]:
    """(mean, spread) of ln(critical level): the spread shrunk towards the prior."""
    k = len(levels)
    mean = sum(levels) / k
    squares = sum((v - mean) ** 2 for v in levels)
    return mean, math.sqrt((self.prior_spread ** 2 + squares) / k)

  def _predictive(self, rise: float = 0.0, g: float = math.nan, eta: float = math.nan,
                  now: float = math.nan):
    """The predictive distribution of the next level's ln, from the k levels so far.

    Student's t with k degrees of freedom (k - 1 from the levels, 1 from the prior) and
    scale spread x sqrt(1 + 1/k) (the mean's own uncertainty); a plug-in normal makes the
    interval too narrow while there are few levels. Its centre is lowered by ``rise``,
    the ln of the factor the loss has climbed above its lowest value since the last onset:
    a loss that climbs in phase B is the instability beginning, below the usual level.

    Revision 4, with today's phase-B g~ ``g``, lr ``eta`` and effective LR ``now``:
    (1) where the angular levels (effective LR x g~ at each onset: the angular step that
    Proposition 1's delta-jump needs) have the smaller shrunk spread, they are this run's
    critical quantity, and the level is theirs over ``g``; (2) the distribution is
    truncated at Eq. (3)'s equilibrium effective LR sqrt(1 - (1 - eta lambda)^2) / g
    (Remark 3, Proposition 3): the effective LR approaches it and does not pass it while
    g~ holds, so a level above it cannot be the next one. Where today's effective LR is
    already above it (g~ has fallen below phase B's median) the estimate is off, and the
    distribution is not truncated.

    Revision 5: the angular level is an effective-LR level only over g~ *at the onset*,
    which today's median g~ stands for; where g~ moves within phase B that is uncertain,
    so the variance of ln g~ over phase B so far is added to the scale's square."""
    levels, shift, g_variance = self.levels, 0.0, 0.0
    usable = (g > 0 and len(self.angular_levels) == len(levels)
              and all(math.isfinite(v) for v in self.angular_levels))
    if self.angular and usable and (self._distribution(self.angular_levels)[1]
                                    < self._distribution(self.levels)[1]):
      levels, shift = self.angular_levels, -math.log(g)
      g_variance = self._phase_b_log_g_variance() if self.g_spread else 0.0
    mean, spread = self._distribution(levels)
    k = len(levels)
    dist = stats.t(df=k, loc=mean + shift - rise,
                   scale=math.sqrt(spread ** 2 * (1 + 1 / k) + g_variance))
    if self.equilibrium and self.wd is not None and g > 0 and 0 < eta * self.wd < 1:
      top = math.log(math.sqrt(1 - (1 - eta * self.wd) ** 2) / g)
      if not now > 0 or top > math.log(now):
        return _Truncated(dist, top)
    return dist

  def _phase_b_log_g_variance(self) -> float:
    """The variance of ln g~ over phase B's records so far (0 with fewer than two)."""
    logs_g = [math.log(g) for g in (_number(r.get("effective_grad_norm")) for r in self._phase_b)
              if math.isfinite(g) and g > 0]
    if len(logs_g) < 2:
      return 0.0
    mean = sum(logs_g) / len(logs_g)
    return sum((v - mean) ** 2 for v in logs_g) / len(logs_g)

  def _phase_b_g(self) -> float:
    """The median effective gradient norm g~ of phase B so far (nan: none logged)."""
    return _median([_number(r.get("effective_grad_norm")) for r in self._phase_b])

  def _forecast(self, record) -> Forecast | None:
    key = self.x_key or ("epoch" if "epoch" in record else "step")
    x = _number(record.get(key, self._index))
    now = _number(record.get("effective_lr"))
    rho = _number(record.get("weight_norm"))
    if not (math.isfinite(now) and now > 0 and math.isfinite(rho) and rho > 0):
      return None
    rise = self._log_loss(record) - self._floor if self.climb else 0.0
    dist = self._predictive(rise if math.isfinite(rise) and rise > 0 else 0.0,
                            self._phase_b_g(), now * rho ** 2, now)
    survived = float(dist.cdf(math.log(now)))
    tail = (1 - self.coverage) / 2
    targets = [math.exp(float(dist.ppf(min(1 - 1e-12, survived + p * (1 - survived)))))
               for p in (0.5, tail, 1 - tail)]
    times = self._samples_to_reach(targets, now, rho)
    if times[0] is None:
      return None
    onset, low, high = (x + max(1.0, t if t is not None else math.inf) * self._x_per_sample
                        for t in times)
    return Forecast(made_at=x, onset=onset, low=low, high=high, levels=len(self.levels))

  def _samples_to_reach(self, levels: list[float], now: float,
                        rho: float) -> list[float | None]:
    """Samples until the effective LR reaches each of ``levels`` (None: not within the horizon)."""
    if self.wd is None:
      return [self._by_growth_rate(level, now) for level in levels]
    steps = self.steps_per_sample or self._per_sample
    eta = now * rho ** 2
    g = self._phase_b_g()
    g = g if math.isfinite(g) else 0.0
    decay = (1 - eta * self.wd) ** 2
    found: dict[int, float] = {i: 0.0 for i, level in enumerate(levels) if now >= level}
    sq, count = rho ** 2, 0
    while len(found) < len(levels) and 0 < decay < 1 and count < self.horizon * steps:
      new = decay * sq + eta ** 2 * g ** 2 / sq  # Eq. (3), one step
      if new >= sq:  # the norm has stopped shrinking: higher levels are out of reach
        break
      sq, count = new, count + 1
      for i, level in enumerate(levels):
        if i not in found and eta / sq >= level:
          found[i] = count / steps
    return [found.get(i) for i in range(len(levels))]

  def _by_growth_rate(self, level: float, now: float) -> float | None:
    """Samples to ``level`` at the growth rate of ln(effective LR) over phase B so far."""
    if now >= level:
      return 0.0
    values = [math.log(v) for v in (_number(r.get("effective_lr")) for r in self._phase_b)
              if math.isfinite(v) and v > 0]
    if len(values) < 3:
      return None
    n = len(values)
    mean_t, mean_v = (n - 1) / 2, sum(values) / n
    slope = (sum((t - mean_t) * (v - mean_v) for t, v in enumerate(values))
             / sum((t - mean_t) ** 2 for t in range(n)))
    if slope <= 0:
      return None
    samples = (math.log(level) - math.log(now)) / slope
    return samples if samples <= self.horizon else None


class _Truncated:
  """A distribution of ln(level) truncated to (-inf, top]: its cdf and ppf, renormalized."""

  def __init__(self, dist, top: float):
    self.dist, self.top, self.mass = dist, top, float(dist.cdf(top))

  def cdf(self, value: float) -> float:
    return min(1.0, float(self.dist.cdf(value)) / self.mass) if self.mass > 0 else 1.0

  def ppf(self, p: float) -> float:
    return float(self.dist.ppf(p * self.mass)) if self.mass > 0 else self.top


def _number(value) -> float:
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


def _median(values: list[float]) -> float:
  values = sorted(v for v in values if math.isfinite(v))
  if not values:
    return math.nan
  mid = len(values) // 2
  return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


@dataclasses.dataclass(frozen=True)
class Replay:
  """A run replayed causally: per sample its x, live phase and forecast; the onsets found."""
  x: list[float]
  phases: list[str | None]
  forecasts: list[Forecast | None]
  onsets: list[int]


def replay(records: list[Mapping[str, Any]], *, wd: float | None = None,
           detector_options: Mapping[str, Any] | None = None, **kwargs) -> Replay:
  """Feeds ``records`` through a detector and an ``OnlineForecaster``, as the loop does."""
  detector = detector_lib.OnlineDetector(**(detector_options or {}))
  options = detector_options or {}
  forecaster = OnlineForecaster(wd=wd, x_key=options.get("x_key"),
                                loss_key=options.get("loss_key"), **kwargs)
  x, phases, forecasts, onsets = [], [], [], []
  for i, record in enumerate(records):
    events = detector.update(record)
    onsets += [e.index for e in events if e.kind == "onset"]
    phase = detector.state()["phase"]
    forecasts.append(forecaster.update(record, events, phase))
    phases.append(phase)
    key = forecaster.x_key or ("epoch" if "epoch" in record else "step")
    x.append(_number(record.get(key, i + 1)))
  return Replay(x=x, phases=phases, forecasts=forecasts, onsets=onsets)


POINTS = (0.25, 0.5, 0.75)


@dataclasses.dataclass(frozen=True)
class Score:
  """One forecast of one destabilization against its actual onset (x units)."""
  destabilization: int   # 0-based; the first two are not scored
  point: float           # made at this fraction of the live phase B before it
  actual: float
  period: float          # actual - the previous onset
  predicted: float       # nan: no forecast at that point
  low: float
  high: float
  naive: float           # the previous onset + the previous period

  @property
  def error(self) -> float:
    """Forecast minus actual onset (NaN without a forecast)."""
    return self.predicted - self.actual

  @property
  def naive_error(self) -> float:
    """The naive forecast minus the actual onset."""
    return self.naive - self.actual

  @property
  def covered(self) -> bool:
    """Whether the interval held the onset."""
    return self.low <= self.actual <= self.high


def phase_b_start(run: Replay, k: int) -> int:
  """The first sample of the live phase B before onset k (the onset itself without one).

  Its last unbroken stretch after the previous onset."""
  onset, previous = run.onsets[k], (run.onsets[k - 1] if k else -1)
  first = onset
  while first > previous + 1 and run.phases[first - 1] == "B":
    first -= 1
  return first


def score(run: Replay) -> list[Score]:
  """Forecasts made at ``POINTS`` of each phase B against the onset ending it (from the third)."""
  out = []
  xs = run.x
  for k in range(2, len(run.onsets)):
    onset, previous = run.onsets[k], run.onsets[k - 1]
    first = phase_b_start(run, k)
    if first == onset:
      continue
    naive = 2 * xs[previous] - xs[run.onsets[k - 2]]
    for point in POINTS:
      f = run.forecasts[first + int(point * (onset - first))]
      values = (f.onset, f.low, f.high) if f is not None else (math.nan,) * 3
      out.append(Score(k, point, xs[onset], xs[onset] - xs[previous], *values, naive))
  return out


class Live:
  """A run's live analysis: the detector, and the forecaster where ``forecast``.

  ``wd``: lambda for Eq. (3), None to measure the growth rate; the record fields it adds:
  docs/forecast.md#live-and-offline."""

  def __init__(self, detector_options: Mapping[str, Any], wd: float | None,
               forecast: bool = True):
    self.detector = detector_lib.OnlineDetector(**detector_options)
    self.forecaster = (OnlineForecaster(wd=wd, x_key=detector_options.get("x_key"),
                                        loss_key=detector_options.get("loss_key"))
                       if forecast else None)

  def update(self, record: Mapping[str, Any]) -> dict[str, Any]:
    """Takes the next record; returns the fields to add to it."""
    events = self.detector.update(record)
    state = self.detector.state()
    fields: dict[str, Any] = {"phase": state["phase"],
                              "destabilizations": state["destabilizations"]}
    onsets = [e.x for e in events if e.kind == "onset"]
    if onsets:
      fields["onset_confirmed"] = onsets[-1]
    if self.forecaster is not None:
      made = self.forecaster.update(record, events, state["phase"])
      if made is not None:
        fields.update({k: v if math.isfinite(v) else None for k, v in made.fields().items()})
    return fields


def live_for_config(config: Mapping[str, Any], detector_options: Mapping[str, Any]) -> Live:
  """The ``Live`` analysis of a run of ``config``; Eq. (3) only for plain SGD with coupled wd."""
  optim = config.get("optim") or {}
  free = detector_options.get("norm") != "fixed"
  wd = _number(optim.get("wd"))
  plain = (not _number(optim.get("momentum", 0.0)) and optim.get("name", "sgd") == "sgd"
           and optim.get("wd_mode", "coupled") == "coupled")
  return Live(detector_options, wd=wd if plain and wd > 0 else None, forecast=free)


@dataclasses.dataclass(frozen=True)
class RunScores:
  """A run directory's scores, with what a reader needs when there are none."""
  scores: list[Score]
  records: int
  destabilizations: int  # onsets the causal detector confirmed
  fixed_norm: bool       # no forecaster: the SI norm is held
  config: bool           # whether a config.json was read (else the defaults)


def score_run(workdir: str, steps: bool = False, **kwargs) -> RunScores:
  """A finished run directory replayed causally with its config and scored.

  ``kwargs``: ``OnlineForecaster``'s (e.g. ``climb=False``, revision 1).

  Raises:
    FileNotFoundError: no log. ValueError: a damaged log or config, or a record whose x
      ('epoch', or 'step' with ``steps``) is missing or does not increase."""
  config = phases.read_config(workdir)
  options = dict(phases.detector_options(config or {}), x_key="step" if steps else "epoch")
  records = logs.read_run(workdir, steps=steps)
  if steps or not any(options["loss_key"] in r for r in records):
    options.pop("loss_key")  # the detector's own choice, as phases.analyze_with_config
  _check_x(records, options["x_key"], workdir)
  live = live_for_config(config or {}, options)
  if live.forecaster is None:
    return RunScores([], len(records), 0, True, config is not None)
  run = replay(records, wd=live.forecaster.wd, detector_options=options, **kwargs)
  return RunScores(score(run), len(records), len(run.onsets), False, config is not None)


def _check_x(records: list[Mapping[str, Any]], key: str, workdir: str) -> None:
  """ValueError at the first record whose ``key`` is not finite or does not increase."""
  previous = -math.inf
  for number, record in enumerate(records, 1):
    x = _number(record.get(key))
    if not math.isfinite(x):
      raise ValueError(f"{workdir}: record {number} has no finite {key!r} "
                       f"({record.get(key)!r}): it cannot be placed in time")
    if x <= previous:
      raise ValueError(f"{workdir}: record {number} has {key} {x:g} after {previous:g} (a "
                       "log re-written after a resume?): the records must increase in "
                       f"{key}")
    previous = x


def score_workdir(workdir: str, steps: bool = False, **kwargs) -> list[Score]:
  """``score_run``'s scores ([]: a fixed norm, or too few periods); raises as it does."""
  return score_run(workdir, steps, **kwargs).scores


def summary(scores: list[Score]) -> dict[str, Any]:
  """Per point ('25%', ...): forecasts, median |error| / period (ours, naive), coverage."""
  out: dict[str, Any] = {}
  for point in POINTS:
    rows = [s for s in scores if s.point == point and math.isfinite(s.predicted)]
    if rows:
      out[f"{point:.0%}"] = {
          "forecasts": len(rows),
          "median_error_fraction": _median([abs(s.error) / s.period for s in rows]),
          "naive_median_error_fraction": _median([abs(s.naive_error) / s.period for s in rows]),
          "coverage": sum(s.covered for s in rows) / len(rows)}
  out["at_50%"] = [{"actual": s.actual, "predicted": s.predicted, "low": s.low,
                    "high": s.high if math.isfinite(s.high) else None, "naive": s.naive}
                   for s in scores if s.point == 0.5 and math.isfinite(s.predicted)]
  return out
