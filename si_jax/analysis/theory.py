"""The appendix's theory: Eqs. (3), (8)-(17), Propositions 1-3 and 5, Lemmas 1-2.

Also Corollary 2, Remark 3, appendices A.7 and D. Notation: eta, lam (Eq. (2)), rho_t =
||x_t||, g~_t = rho_t ||grad f(x_t)|| with l <= g~_t <= L, kappa = sqrt(eta / (2 lam)).
Numpy float64, broadcasting. Notes: docs/analysis_notes.md."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from si_jax.metrics import equilibrium_angular_update  # noqa: F401  (computed in-step too)


def _check_lr_wd(lr, wd):
  if not np.all(np.asarray(lr) > 0):
    raise ValueError(f"lr must be positive, got {lr!r}")
  if not np.all(np.asarray(wd) >= 0):
    raise ValueError(f"wd must be non-negative, got {wd!r}")


# --- Per-step identities (appendix A.2) -------------------------------------------


def next_norm_sq(rho, g_eff, lr, wd):
  """Eq. (3): rho_{t+1}^2 = (1 - eta lam)^2 rho_t^2 + eta^2 g~_t^2 / rho_t^2."""
  rho = np.asarray(rho, np.float64)
  return (1 - lr * wd) ** 2 * rho**2 + lr**2 * np.asarray(g_eff, np.float64) ** 2 / rho**2


def _jump_ratio(rho, g_eff, lr, wd):
  rho = np.asarray(rho, np.float64)
  return lr**2 * np.asarray(g_eff, np.float64) ** 2 / ((1 - lr * wd) ** 2 * rho**4)


def adjacent_cosine(rho, g_eff, lr, wd):
  """Eq. (8): cos(x_t, x_{t+1}) = (1 + eta^2 g~^2 / ((1 - eta lam)^2 rho^4))^(-1/2)."""
  return (1 + _jump_ratio(rho, g_eff, lr, wd)) ** -0.5


def cosine_distance(rho, g_eff, lr, wd):
  """1 - Eq. (8) without cancellation: r / (s (s + 1)), s = sqrt(1 + r), r Eq. (8)'s ratio."""
  r = _jump_ratio(rho, g_eff, lr, wd)
  s = np.sqrt(1 + r)
  return r / (s * (s + 1))


def delta_jump_threshold(g_eff, lr, wd, delta, exact: bool = False):
  """Eq. (9): the rho_t^2 below which a step is a delta-jump (``exact``: no small-delta form)."""
  if not 0 < delta < 1:
    raise ValueError(f"delta must be in (0, 1), got {delta!r}")
  denom = math.sqrt((1 - delta) ** -2 - 1) if exact else math.sqrt(2 * delta)
  return lr * np.asarray(g_eff, np.float64) / ((1 - lr * wd) * denom)


class StepResiduals(NamedTuple):
  """Measured / predicted - 1 per step pair (Eq. (3)) and per step (Eq. (8))."""
  norm_sq: np.ndarray
  cosine_distance: np.ndarray


def step_residuals(records: list[dict], lr: float, wd: float) -> StepResiduals:
  """Eqs. (3) and (8) against plain-SGD step records (``logs.read_run(..., steps=True)``)."""
  rho = np.array([r["weight_norm"] for r in records])
  g_eff = np.array([r["effective_grad_norm"] for r in records])
  measured_cd = np.array([r["cosine_distance"] for r in records])
  norm_sq = rho[1:] ** 2 / next_norm_sq(rho[:-1], g_eff[:-1], lr, wd) - 1
  cd = measured_cd / cosine_distance(rho, g_eff, lr, wd) - 1
  return StepResiduals(norm_sq, cd)


# --- Propositions 1-3 (appendix A.3, A.5, A.6) ------------------------------------


def kappa(lr, wd):
  """kappa = sqrt(eta / (2 lam))."""
  _check_lr_wd(lr, wd)
  return math.sqrt(lr / (2 * wd))


class JumpConditions(NamedTuple):
  """The rho^2 thresholds of a delta-jump, (4a) and (4b)."""

  necessary: float  # (4a): a delta-jump needs rho^2 < eta L / sqrt(2 delta)
  sufficient: float  # (4b): rho^2 < eta l / sqrt(2 delta) guarantees one


def jump_conditions(l, L, lr, delta) -> JumpConditions:
  """Proposition 1 with (1 - eta lam) ~ 1: the rho^2 thresholds (4a) and (4b)."""
  if not 0 < l <= L:
    raise ValueError(f"need 0 < l <= L, got l={l!r}, L={L!r}")
  return JumpConditions(lr * L / math.sqrt(2 * delta), lr * l / math.sqrt(2 * delta))


def t_min(rho0_sq, l, L, lr, wd, delta) -> float:
  """Proposition 2, Eq. (5): the fewest steps before a delta-jump can happen.

  From Corollary 2's lower bound; ``inf`` when delta >= eta lam L^2 / l^2, 0 below (4a)."""
  kl = kappa(lr, wd) * l
  threshold = jump_conditions(l, L, lr, delta).necessary
  if rho0_sq <= threshold:
    return 0.0
  if not delta < lr * wd * L**2 / l**2:
    return math.inf
  return math.log((threshold - kl) / (rho0_sq - kl)) / math.log(1 - 4 * lr * wd)


def t_max(rho0_sq, l, L, lr, wd, delta) -> float:
  """Proposition 2, Eq. (6): the most steps before a delta-jump must happen.

  ``nan`` unless rho_0^2 > kappa L and delta < eta lam l^2 / L^2; 0 below (4b) already."""
  kL = kappa(lr, wd) * L
  threshold = jump_conditions(l, L, lr, delta).sufficient
  if rho0_sq <= threshold:
    return 0.0
  if not (rho0_sq > kL and delta < lr * wd * l**2 / L**2):
    return math.nan
  return math.log((threshold - kL) / (rho0_sq - kL)) / math.log(1 - 2 * lr * wd)


class Interval(NamedTuple):
  """An interval of a proposition, and whether its condition holds."""

  low: float
  high: float
  valid: bool  # whether the proposition's condition holds


def equilibrium_norm_sq(l, L, lr, wd) -> Interval:
  """Proposition 3: rho_t^2 -> [kappa l, kappa L] for t >> 1 if 2 eta lam L <= l."""
  k = kappa(lr, wd)
  return Interval(k * l, k * L, 2 * lr * wd * L <= l)


def equilibrium_effective_lr(l, L, lr, wd) -> Interval:
  """Remark 3: eta~_t -> [sqrt(2 eta lam) / L, sqrt(2 eta lam) / l] if 2 eta lam L <= l."""
  _check_lr_wd(lr, wd)
  s = math.sqrt(2 * lr * wd)
  return Interval(s / L, s / l, 2 * lr * wd * L <= l)


# --- beta-undetermined sequences (appendix A.4) -------------------------------------


def _check_alpha(alpha):
  if not 0 < alpha < 0.5:
    raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")


def beta_sequence(x0: float, alpha: float, betas) -> np.ndarray:
  """Eq. (10): x_{t+1} = (1 - alpha) x_t + beta_t / x_t; returns x_0 .. x_T."""
  _check_alpha(alpha)
  if not x0 > 0:
    raise ValueError(f"x0 must be positive, got {x0!r}")
  betas = np.asarray(betas, np.float64)
  if np.any(betas < 0):
    raise ValueError("beta_t must be non-negative")
  x = np.empty(len(betas) + 1)
  x[0] = x0
  for t, beta in enumerate(betas):
    x[t + 1] = (1 - alpha) * x[t] + beta / x[t]
  return x


def phi(gamma, alpha):
  """Eq. (12): gamma_{t+1} = (1 - alpha) gamma_t + alpha / gamma_t, gamma = x / x*."""
  gamma = np.asarray(gamma, np.float64)
  return (1 - alpha) * gamma + alpha / gamma


def phi_landmarks(alpha) -> dict[str, float]:
  """Facts (13c), (13e-g): phi's pre-stationary point alpha / (1 - alpha), argmin and minimum."""
  _check_alpha(alpha)
  return {"pre_stationary": alpha / (1 - alpha), "argmin": math.sqrt(alpha / (1 - alpha)),
          "min": 2 * math.sqrt(alpha * (1 - alpha))}


def lemma1_bounds(x0, alpha, beta, t):
  """Lemma 1, Eq. (11): x* + (1 - 2 alpha)^t (x0 - x*), x* + (1 - alpha)^t (x0 - x*) for x0 > x*."""
  _check_alpha(alpha)
  star = math.sqrt(beta / alpha)
  t = np.asarray(t, np.float64)
  return star + (1 - 2 * alpha) ** t * (x0 - star), star + (1 - alpha) ** t * (x0 - star)


def lemma2_bounding_sequences(x0, alpha, a, b, steps):
  """Lemma 2: Eq. (11) with beta = a (below x_t) and beta = b (above, while x_t is large)."""
  return (beta_sequence(x0, alpha, np.full(steps, float(a))),
          beta_sequence(x0, alpha, np.full(steps, float(b))))


def corollary2_bounds(x0, alpha, a, b, t):
  """Corollary 2: Lemma 1's lower bound with beta = a, upper with beta = b (NaN where x0 < x*)."""
  _check_alpha(alpha)
  t = np.asarray(t, np.float64)
  sa, sb = math.sqrt(a / alpha), math.sqrt(b / alpha)
  lower = sa + (1 - 2 * alpha) ** t * (x0 - sa) if x0 > sa else np.full_like(t, np.nan)
  upper = sb + (1 - alpha) ** t * (x0 - sb) if x0 > sb else np.full_like(t, np.nan)
  return lower, upper


def proposition5_interval(alpha, a, b) -> Interval:
  """Proposition 5: x_t -> [sqrt(a/alpha), sqrt(b/alpha)] if alpha/(1-alpha) sqrt(b) <= sqrt(a)."""
  _check_alpha(alpha)
  if not 0 <= a <= b:
    raise ValueError(f"need 0 <= a <= b, got a={a!r}, b={b!r}")
  return Interval(math.sqrt(a / alpha), math.sqrt(b / alpha),
                  alpha / (1 - alpha) * math.sqrt(b) <= math.sqrt(a))


# --- Equilibrium predictions -------------------------------------------------------


def norm_ratio_from_cosine(cos, lr, wd):
  """The exact identity rho_{t+1} / rho_t = (1 - eta lam) / cos(x_t, x_{t+1}) (plain SGD)."""
  return (1 - lr * wd) / np.asarray(cos, np.float64)


def angular_update(cos_distance):
  """The angle between x_t and x_{t+1} from 1 - cos, stably: 2 asin(sqrt((1 - cos) / 2))."""
  return 2 * np.arcsin(np.sqrt(np.asarray(cos_distance, np.float64) / 2))


# --- Effective gradient bounds from a run (appendix D) -----------------------------


class EnvelopeFit(NamedTuple):
  """l(t) = c / (t - t0)^p and L(t) = C / (t - t0), valid for t >= t_valid."""
  c: float
  C: float
  t0: float
  t_valid: float
  lower_power: float

  def __call__(self, t):
    """(l(t), L(t))."""
    dt = np.asarray(t, np.float64) - self.t0
    return self.c / dt**self.lower_power, self.C / dt


def fit_gradient_envelopes(t, g_eff, t0: float, t_valid: float | None = None,
                           lower_power: float = 1.0) -> EnvelopeFit:
  """The tightest c, C with l(t) <= g~_t <= L(t) (Eq. (17)) for t >= t_valid (default t0 + 1).

  ``lower_power``: 1 for SGD, 2 for full-batch GD (appendix D); t0: the period's first step."""
  t = np.asarray(t, np.float64)
  g_eff = np.asarray(g_eff, np.float64)
  t_valid = t0 + 1 if t_valid is None else t_valid
  if not t_valid > t0:
    raise ValueError(f"t_valid must be after t0, got t_valid={t_valid!r}, t0={t0!r}")
  keep = (t >= t_valid) & np.isfinite(g_eff)
  if not keep.any():
    raise ValueError("no finite effective gradient norm at t >= t_valid")
  dt = t[keep] - t0
  return EnvelopeFit(float(np.min(g_eff[keep] * dt**lower_power)),
                     float(np.max(g_eff[keep] * dt)), float(t0), float(t_valid), lower_power)


def cosine_distance_bounds(rho, l, L, lr, wd):
  """The 1 - cos(x_t, x_{t+1}) that Eq. (8) gives with g~ = l and g~ = L (Fig. 13)."""
  return cosine_distance(rho, l, lr, wd), cosine_distance(rho, L, lr, wd)


class HeldOutBounds(NamedTuple):
  """Appendix D's envelopes fitted on the steps before ``t_split``, checked after it."""
  fit: EnvelopeFit
  t_split: float
  n_fit: int
  n_check: int
  gradient_inside: float  # fraction of checked steps with l(t) <= g~_t <= L(t), Eq. (17)
  cosine_inside: float  # fraction of checked steps with 1 - cos between Eq. (8)'s bounds


def held_out_bounds(t, g_eff, rho, cos_distance, lr, wd, t0: float, t_split: float,
                    t_valid: float | None = None, lower_power: float = 1.0,
                    rtol: float = 1e-3) -> HeldOutBounds:
  """Fits l(t), L(t) on t_valid <= t < t_split; checks Eqs. (17) and (8) on t >= t_split.

  ``rtol``: slack on the float32-logged 1 - cos. ValueError: no step to fit or to check."""
  t = np.asarray(t, np.float64)
  g_eff, rho, cd = (np.asarray(a, np.float64) for a in (g_eff, rho, cos_distance))
  t_valid = float(t.min()) if t_valid is None else t_valid
  fit_part, check = (t >= t_valid) & (t < t_split), t >= t_split
  if not fit_part.any() or not check.any():
    raise ValueError(f"t_split={t_split!r} leaves no steps to fit (from t_valid={t_valid!r}) "
                     f"or none to check (steps {t.min():g}..{t.max():g})")
  fit = fit_gradient_envelopes(t[fit_part], g_eff[fit_part], t0=t0, t_valid=t_valid,
                               lower_power=lower_power)
  low, high = fit(t[check])
  g = g_eff[check]
  cd_low, cd_high = cosine_distance_bounds(rho[check], low, high, lr, wd)
  inside_cd = (cd[check] >= cd_low * (1 - rtol)) & (cd[check] <= cd_high * (1 + rtol))
  return HeldOutBounds(fit, float(t_split), int(fit_part.sum()), int(check.sum()),
                       float(np.mean((g >= low) & (g <= high))), float(np.mean(inside_cd)))


class Trend(NamedTuple):
  """Whether a positive series grows from one part of phase B to the next (Fig. 13)."""
  median_ratio: float  # median over t >= t_split / median over t < t_split
  growth: float  # exp(slope x span) of a least-squares line through log(values), t >= t_split

  @property
  def verdict(self) -> str:
    """'grows', 'falls' or 'mixed' (the two numbers disagree)."""
    if self.median_ratio > 1 and self.growth > 1:
      return "grows"
    if self.median_ratio < 1 and self.growth < 1:
      return "falls"
    return "mixed"


def half_trend(t, values, t_split: float) -> Trend:
  """Appendix D's "growing in the second half of the phase" (positive finite values only)."""
  t, v = np.asarray(t, np.float64), np.asarray(values, np.float64)
  ok = np.isfinite(v) & (v > 0)
  first, second = ok & (t < t_split), ok & (t >= t_split)
  if first.sum() < 1 or second.sum() < 2:
    raise ValueError(f"t_split={t_split!r} leaves too few positive values on one side")
  slope = np.polyfit(t[second], np.log(v[second]), 1)[0]
  span = t[second].max() - t[second].min()
  return Trend(float(np.median(v[second]) / np.median(v[first])), float(np.exp(slope * span)))


# --- Appendix A.7: when 2 eta lam L <= l fails, and Eqs. (15)-(16) ------------------


def a7_norm_sq_bounds(l, L, lr, wd) -> Interval:
  """A.7: rho_t^2 in [kappa l, (1 - eta lam)^2 kappa l + eta^2 L^2 / (kappa l)] for t >> 1.

  For 0 < l < 2 eta lam L, where Proposition 3 does not apply; by (13e) (docs/analysis_notes.md)."""
  _check_lr_wd(lr, wd)
  if not (np.all(np.asarray(wd) > 0) and np.all(np.asarray(l) > 0)):
    raise ValueError(f"need wd > 0 and l > 0, got wd {wd!r}, l {l!r}")
  kl = kappa(lr, wd) * l
  return Interval(kl, (1 - lr * wd) ** 2 * kl + lr**2 * np.asarray(L) ** 2 / kl, True)


def norm_sq_unrolled(rho0_sq, grad_sq, lr, wd) -> np.ndarray:
  """Eq. (15): rho_t^2 = (1 - eta lam)^(2t) rho_0^2 + eta^2 sum_t' (1 - eta lam)^(2(t-t'-1)) g_t'^2.

  ``grad_sq``: plain (not effective) g_0^2 .. g_{T-1}^2; returns rho_1^2 .. rho_T^2."""
  _check_lr_wd(lr, wd)
  q = (1 - lr * wd) ** 2
  g = np.asarray(grad_sq, np.float64)
  t = np.arange(1, len(g) + 1)
  acc, out = 0.0, np.empty(len(g))
  for i, gi in enumerate(g):
    acc = q * acc + gi
    out[i] = acc
  return q**t * rho0_sq + lr**2 * out


def gradient_ema_sq(grad_sq, lr, wd) -> np.ndarray:
  """Eq. (16)'s g-bar_t^2 = sum_t' w_t' g_t'^2 / sum_t' w_t', w_t' = (1 - eta lam)^(2(t-t'-1))."""
  _check_lr_wd(lr, wd)
  q = (1 - lr * wd) ** 2
  t = np.arange(1, len(grad_sq) + 1)
  weights = (1 - q**t) / (1 - q)
  return norm_sq_unrolled(0.0, grad_sq, lr, wd) / lr**2 / weights


def norm_sq_from_ema(rho0_sq, ema_sq, t, lr, wd):
  """Eq. (16): rho_t^2 = (1 - eta lam)^(2t) rho_0^2 + eta^2 (1 - q^t) / (1 - q) g-bar_t^2.

  q = (1 - eta lam)^2. Why not the appendix's printed fraction: docs/analysis_notes.md."""
  _check_lr_wd(lr, wd)
  q = (1 - lr * wd) ** 2
  t = np.asarray(t, np.float64)
  return q**t * rho0_sq + lr**2 * (1 - q**t) / (1 - q) * np.asarray(ema_sq)
