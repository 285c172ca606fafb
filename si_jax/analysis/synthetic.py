"""Synthetic runs with planted destabilizations, shaped by the SI dynamics (detector validation).

Per step the SI norm follows Eq. (3) written relative to rho_t^2: rho_{t+1}^2 =
rho_t^2 [(1 - eta lambda)^2 + q_t], q_t = eta^2 g~_t^2 / rho_t^4. Entry points:
``periodic_run``, ``no_destabilization_run``, ``grid`` (the validation set). Nothing here
reads the detector. The model, noises and grid:
docs/detector.md#synthetic-runs-with-planted-onsets-si_jaxanalysissynthetic."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

CHANCE = float(np.log(10))  # the untrained loss of the 10-class runs (the reference)
MIN_B = 10  # samples: the shortest planted phase B (the loss within 1% of its floor)


@dataclasses.dataclass(frozen=True)
class Noise:
  """Per-sample noise of ln(loss): Gaussian ``sigma``, plus 2-10x outliers at rate ``outliers``."""
  sigma: float
  outliers: float = 0.0


# per-sample noise of ln(loss) in phase B of the recorded runs (docs/detector.md), and
# how those runs are sampled: full-batch GD per step, SGD per epoch
NOISE = {"digits GD": Noise(0.002), "CIFAR GD": Noise(0.06), "CIFAR SGD": Noise(0.065),
         "digits SGD": Noise(0.14, 0.05)}
SOURCE_SAMPLING = {"digits GD": "step", "CIFAR GD": "step", "CIFAR SGD": "epoch",
                   "digits SGD": "epoch"}


@dataclasses.dataclass(frozen=True)
class Trace:
  """A synthetic run: its log columns, the planted onsets and the condition it was drawn under."""
  series: dict[str, np.ndarray]
  onsets: list[int]
  condition: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Dynamics:
  """One run's parameters, in steps unless named per sample.

  ``height``: a spike's peak / ``floor``; ``relax``: phase A's e-fold time; ``decay``: eta
  lambda; ``steps_per_sample``: 1 or an epoch's steps; ``wd_share``: the share of
  weight decay the phase-B effective gradient offsets at the stability threshold;
  ``periods``: planted period lengths (samples); ``threshold``: False never reaches it."""
  floor: float
  height: float
  rise_steps: int
  relax: float
  steps_per_sample: int
  decay: float
  wd_share: float
  periods: tuple[int, ...]
  threshold: bool = True


def _spike_profile(dyn: Dynamics, start_excess: float = 0.0) -> np.ndarray:
  """A spike's log-excess per step: a linear climb, then relaxation to within 1% of the floor."""
  def profile(peak, climb_steps):
    climb = peak * np.arange(1, climb_steps + 1) / climb_steps
    n_relax = int(np.ceil(dyn.relax * np.log(max(peak, 0.02) / 0.01))) + 1
    return np.concatenate([climb, peak * np.exp(-np.arange(1, n_relax + 1) / dyn.relax)])

  if start_excess > 0:
    return profile(start_excess, 0)
  k, target = dyn.steps_per_sample, np.log(dyn.height)
  lo, hi = target, target + 8.0
  for _ in range(50):  # the sampled peak grows with the step peak: bisection
    mid = (lo + hi) / 2
    steps = profile(mid, dyn.rise_steps)
    sampled = np.log(np.exp(steps[:len(steps) // k * k]).reshape(-1, k).mean(axis=1).max())
    lo, hi = (mid, hi) if sampled < target else (lo, mid)
  return profile(hi, dyn.rise_steps)


def _jump_scale(dyn: Dynamics, excess: np.ndarray, target: float) -> float:
  """Q such that q_t = Q (e^excess - 1) / (e^max - 1) raises ln rho by ``target`` (Eq. (3))."""
  shape = np.expm1(excess) / max(np.expm1(excess.max()), 1e-12)
  base = (1 - dyn.decay) ** 2

  def gain(q):
    return 0.5 * np.sum(np.log(base + q * shape)) - 0.5 * len(excess) * np.log(base)

  lo, hi = 0.0, 1.0
  while gain(hi) < target:
    hi *= 2
  for _ in range(60):
    lo, hi = (lo, (lo + hi) / 2) if gain((lo + hi) / 2) >= target else ((lo + hi) / 2, hi)
  return hi


def simulate(dyn: Dynamics, n: int, rng: np.random.Generator) -> tuple[dict, list[int]]:
  """Noise-free per-step 'log_loss', 'log_rho', 'q' for ``n`` samples, and the planted onsets.

  The effective LR is in units of its stability threshold (the norm's scale is free:
  Proposition 4)."""
  k, steps = dyn.steps_per_sample, n * dyn.steps_per_sample
  log_floor = np.log(dyn.floor)
  excess = np.zeros(steps)
  log_rho = np.zeros(steps)
  q = np.zeros(steps)
  start = np.log(CHANCE * rng.uniform(0.8, 1.5)) - log_floor
  profile, spike = _spike_profile(dyn, start), _spike_profile(dyn)
  b_rate = -np.log(1 - dyn.decay) * (1 - dyn.wd_share)  # ln rho per step at the threshold
  first = len(profile) + k * max(dyn.periods[0], MIN_B) if dyn.periods else steps
  log_rho[0] = b_rate * first  # reaches the threshold (ln rho = 0) after the period
  onsets, t, spike_at, spike_q, ready = [], 0, 0, 0.0, 0
  plan = list(dyn.periods[1:]) + [10**9]
  while t < steps:
    if t - spike_at < len(profile):
      excess[t] = profile[t - spike_at]
    elif (log_rho[t] < 0 and dyn.threshold and max(first, ready) <= t < steps - k * MIN_B
          and t % k == 0):  # past the threshold; per-epoch logs see it from an epoch start
      profile = spike
      target = b_rate * (len(profile) + k * plan.pop(0)) - log_rho[t]
      spike_q = _jump_scale(dyn, profile, target)
      spike_at, excess[t] = t, profile[0]
      ready = t + len(profile) + k * MIN_B
      onsets.append(t // k)
    lr_eff = np.exp(-2 * log_rho[t])
    q_b = (1 - (1 - dyn.decay) ** 2) * dyn.wd_share * min(lr_eff, 4.0)
    q_s = spike_q * np.expm1(excess[t]) / np.expm1(spike.max()) if onsets and (
        t - spike_at < len(profile)) else 0.0
    q[t] = q_b + q_s
    if t + 1 < steps:
      log_rho[t + 1] = log_rho[t] + 0.5 * np.log((1 - dyn.decay) ** 2 + q[t])
    t += 1
  return {"log_loss": log_floor + excess, "log_rho": log_rho, "q": q}, onsets


def _observe(steps: dict, dyn: Dynamics, noise: Noise, rng: np.random.Generator,
             norm: str, scale: float) -> dict[str, np.ndarray]:
  """Per-sample columns: each sample's mean loss times the noise; the norm at its last step."""
  k = dyn.steps_per_sample
  loss = np.exp(steps["log_loss"]).reshape(-1, k).mean(axis=1)
  n = len(loss)
  log_noise = noise.sigma * rng.standard_normal(n)
  bumps = rng.random(n) < noise.outliers
  log_noise[bumps] += rng.uniform(np.log(2), np.log(10), bumps.sum())
  rho = scale * np.exp(steps["log_rho"][k - 1::k]) * np.exp(1e-4 * rng.standard_normal(n))
  lr_eff = np.exp(-2 * steps["log_rho"][k - 1::k])
  x = np.arange(1.0, n + 1.0)
  series = {"loss": loss * np.exp(log_noise), "effective_lr": lr_eff,
            "effective_grad_norm": np.sqrt(steps["q"][k - 1::k]) / lr_eff}
  series.update({"epoch": x, "step": x * k} if k > 1 else {"step": x})
  if norm == "free":
    series["weight_norm"] = rho
  elif norm == "fixed":
    series["weight_norm"] = np.full(n, scale)
  return series


SAMPLING = {  # samples per run, steps per sample, eta lambda, relax (samples), periods
    "epoch": dict(n=240, k=10, decay=0.0015, relax=(1.0, 3.0), periods=(12, 40)),
    "step": dict(n=900, k=1, decay=0.03, relax=(3.0, 10.0), periods=(15, 120)),
}


def periodic_run(seed: int, *, floor: float, height: float, noise: str = "CIFAR SGD",
                 sampling: str | None = None, norm: str = "free") -> Trace:
  """A run with destabilizations: ``height`` = spike peak / ``floor``, ``noise`` of ``NOISE``.

  ``sampling`` None: as the noise's recorded runs; ``norm``: 'free', 'fixed' (logged
  constant, same spikes) or 'absent'. Raises KeyError for an unknown noise or sampling."""
  rng = np.random.default_rng(seed)
  sampling = sampling or SOURCE_SAMPLING[noise]
  spec = SAMPLING[sampling]
  k = spec["k"]
  relax = rng.uniform(*spec["relax"]) * k
  rise_steps = int(rng.integers(1, 4)) if k == 1 else int(rng.integers(1, k // 2 + 1))
  lo, hi = spec["periods"]
  dyn0 = Dynamics(floor, height, rise_steps, relax, k, spec["decay"], rng.uniform(0.1, 0.5),
                  ())
  recover = len(_spike_profile(dyn0)) // k + 1
  periods = tuple(int(p) for p in rng.integers(recover + lo, recover + hi, size=40))
  dyn = dataclasses.replace(dyn0, periods=periods)
  steps, onsets = simulate(dyn, spec["n"], rng)
  series = _observe(steps, dyn, NOISE[noise], rng, norm, scale=rng.uniform(0.5, 50))
  cond = dict(kind="periodic", floor=floor, height=height, noise=noise, sampling=sampling,
              norm=norm)
  return Trace(series, onsets, cond)


def no_destabilization_run(seed: int, *, kind: str, noise: str = "CIFAR SGD",
                           sampling: str | None = None, norm: str = "free") -> Trace:
  """A run without destabilizations: ``kind`` 'converging', 'never', 'oscillating', 'bouncing'.

  The kinds are described in docs/detector.md; 'converging' settles where the effective
  gradient offsets weight decay (Proposition 2). Other arguments as ``periodic_run``.
  Raises ValueError for an unknown ``kind``."""
  rng = np.random.default_rng(seed)
  sampling = sampling or ("step" if kind in ("oscillating", "bouncing") else
                          SOURCE_SAMPLING[noise])
  if kind == "converging":
    spec = SAMPLING[sampling]
    dyn = Dynamics(10 ** rng.uniform(-5, np.log10(0.3)), 10.0, 1, rng.uniform(*spec["relax"])
                   * spec["k"], spec["k"], spec["decay"], rng.uniform(0.1, 0.5), (),
                   threshold=False)
    steps, _ = simulate(dyn, spec["n"], rng)
    series = _observe(steps, dyn, NOISE[noise], rng, norm, scale=rng.uniform(0.5, 50))
  elif kind in ("never", "bouncing", "oscillating"):
    series = _unconverged(kind, rng, NOISE[noise], sampling, norm)
  else:
    raise ValueError(f"unknown kind {kind!r}: 'converging', 'never', 'oscillating' or "
                     "'bouncing'")
  return Trace(series, [], dict(kind=kind, noise=noise, sampling=sampling, norm=norm))


def _unconverged(kind: str, rng: np.random.Generator, noise: Noise, sampling: str,
                 norm: str) -> dict[str, np.ndarray]:
  """The loss and norm columns of the 'never', 'bouncing' and 'oscillating' runs."""
  n = SAMPLING[sampling]["n"]
  if kind == "never":
    log_loss = np.log(CHANCE / rng.uniform(1.5, 3)) + rng.uniform(0.1, 0.33) * np.log(
        10) * rng.standard_normal(n)
  elif kind == "bouncing":
    log_loss = rng.uniform(np.log(0.05), np.log(5.0), n)
  else:
    lo, hi = np.log(rng.uniform(0.15, 0.3)), np.log(rng.uniform(4, 8))
    phase = 2 * np.pi * np.arange(n) / rng.uniform(12, 18) + rng.uniform(0, 2 * np.pi)
    log_loss = lo + (hi - lo) * (1 - np.cos(phase)) / 2 + noise.sigma * rng.standard_normal(n)
  change = np.diff(log_loss, prepend=log_loss[0])
  if kind == "oscillating":
    growth = np.where(change > 0, 0.05, -0.04)
  else:
    growth = np.where(change > np.log(2), np.log(1.04), np.log(0.99))
  x = np.arange(1.0, n + 1.0)
  series = {"loss": np.exp(log_loss), "epoch": x}
  if norm == "free":
    series["weight_norm"] = 5.0 * np.exp(np.cumsum(growth))
  elif norm == "fixed":
    series["weight_norm"] = np.full(n, 5.0)
  return series


FLOORS = (1e-5, 1e-3, 0.03, 0.3)
HEIGHTS = (2.0, 10.0, 100.0, 1000.0)
MAX_PEAK = 5 * CHANCE  # spikes stay below this (the recorded peaks: up to 3x chance)
MAX_OUTLIER_FLOOR = 0.03  # the digits SGD noise is used up to this floor (its runs: 1e-4)
NORMS = ("free", "fixed", "absent")


def grid(seeds: int = 4) -> Iterator[Trace]:
  """The validation set (docs/detector.md), ``seeds`` seeds per cell: the same on every call."""
  seed = 0
  for floor in FLOORS:
    for height in HEIGHTS:
      for noise in NOISE:
        if floor * height > MAX_PEAK or noise == "digits SGD" and floor > MAX_OUTLIER_FLOOR:
          continue
        for norm in NORMS:
          for _ in range(seeds):
            seed += 1
            yield periodic_run(seed, floor=floor, height=height, noise=noise, norm=norm)
  for noise in NOISE:
    for norm in NORMS:
      for _ in range(2 * seeds):
        seed += 1
        yield no_destabilization_run(seed, kind="converging", noise=noise, norm=norm)
  for kind in ("never", "oscillating", "bouncing"):
    for norm in ("free", "fixed"):
      for _ in range(5 * seeds):
        seed += 1
        yield no_destabilization_run(seed, kind=kind, noise="CIFAR GD", norm=norm)
