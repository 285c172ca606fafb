"""The appendix's theory against independent simulation (never the formula re-typed).

Measured worst cases are in the assertions' comments.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from si_jax.analysis import theory, toy


def simulate_si_sgd(n=50, steps=300, lr=0.1, wd=0.01, g_eff=1.0, seed=0, momentum=0.0,
                    rho0=None):
  """SGD with WD on an abstract SI function: each gradient is a random direction
  orthogonal to x_t of norm g~ / rho_t (properties (1a), (1b)); returns x_t, grads."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(n)
  if rho0 is not None:
    x *= rho0 / np.linalg.norm(x)
  xs, gs, m = [x], [], np.zeros(n)
  for _ in range(steps):
    d = rng.standard_normal(n)
    d -= d @ x / (x @ x) * x
    ge = g_eff(rng) if callable(g_eff) else g_eff
    g = d / np.linalg.norm(d) * ge / np.linalg.norm(x)
    m = momentum * m + g + wd * x
    x = x - lr * m
    xs.append(x)
    gs.append(g)
  return np.array(xs), np.array(gs)


def test_eq3_and_eq8_against_simulation():
  lr, wd = 0.3, 0.02
  xs, gs = simulate_si_sgd(lr=lr, wd=wd, g_eff=lambda r: r.uniform(0.5, 3.0))
  rho = np.linalg.norm(xs, axis=1)
  g_eff = rho[:-1] * np.linalg.norm(gs, axis=1)
  np.testing.assert_allclose(theory.next_norm_sq(rho[:-1], g_eff, lr, wd), rho[1:] ** 2, rtol=1e-12)
  cos = np.sum(xs[1:] * xs[:-1], axis=1) / (rho[1:] * rho[:-1])
  np.testing.assert_allclose(theory.adjacent_cosine(rho[:-1], g_eff, lr, wd), cos, rtol=1e-12)
  np.testing.assert_allclose(theory.cosine_distance(rho[:-1], g_eff, lr, wd), 1 - cos,
                             rtol=1e-6, atol=1e-15)
  np.testing.assert_allclose(theory.norm_ratio_from_cosine(cos, lr, wd), rho[1:] / rho[:-1],
                             rtol=1e-12)


def test_step_residuals_from_logs_are_zero_on_exact_data_and_catch_a_wrong_lr():
  lr, wd = 0.1, 0.01
  xs, gs = simulate_si_sgd(lr=lr, wd=wd, steps=50)
  rho = np.linalg.norm(xs, axis=1)
  unit = xs / rho[:, None]
  records = [{"weight_norm": rho[t], "effective_grad_norm": rho[t] * np.linalg.norm(gs[t]),
              "cosine_distance": np.sum((unit[t + 1] - unit[t]) ** 2) / 2} for t in range(50)]
  res = theory.step_residuals(records, lr, wd)
  assert np.abs(res.norm_sq).max() < 1e-12 and np.abs(res.cosine_distance).max() < 1e-8
  wrong = theory.step_residuals(records, 1.1 * lr, wd)
  assert np.abs(wrong.cosine_distance).max() > 0.1


@given(st.floats(0.05, 20), st.floats(0.01, 10), st.floats(1e-4, 1.0), st.floats(0, 0.1),
       st.floats(1e-6, 0.5))
@settings(max_examples=200, deadline=None)
def test_delta_jump_threshold_exact_and_small_delta(rho, g_eff, lr, wd, delta):
  # exact: a delta-jump  <=>  rho^2 < the exact threshold (cosine computed directly)
  below = rho**2 < theory.delta_jump_threshold(g_eff, lr, wd, delta, exact=True)
  x = np.array([rho, 0.0])
  step = np.array([0.0, -lr * g_eff / rho])  # orthogonal gradient of norm g~/rho
  nxt = (1 - lr * wd) * x + step
  cos = x @ nxt / (np.linalg.norm(x) * np.linalg.norm(nxt))
  if abs((1 - cos) - delta) > 1e-9 * delta + 1e-14:  # away from the boundary
    assert below == (1 - cos > delta)
  approx = theory.delta_jump_threshold(g_eff, lr, wd, delta)
  exact = theory.delta_jump_threshold(g_eff, lr, wd, delta, exact=True)
  # sqrt((1-d)^-2 - 1) = sqrt(2 d) (1 + 3d/4 + O(d^2)): the small-delta form is larger
  assert approx >= exact
  if delta <= 0.1:
    assert approx / exact - 1 < delta


def first_jump(rho0_sq, l, L, lr, wd, delta, seed, steps=200_000):
  """Steps until the simulated Eq. (3) dynamics make a delta-jump (g~ ~ U[l, L])."""
  rng = np.random.default_rng(seed)
  rho_sq = rho0_sq
  for t in range(steps):
    g = rng.uniform(l, L)
    if theory.cosine_distance(math.sqrt(rho_sq), g, lr, wd) > delta:
      return t
    rho_sq = (1 - lr * wd) ** 2 * rho_sq + lr**2 * g**2 / rho_sq
  return math.inf


@pytest.mark.parametrize("seed", range(6))
def test_proposition2_jump_time_between_t_min_and_t_max(seed):
  rng = np.random.default_rng(100 + seed)
  lr, wd = rng.uniform(0.05, 0.5), rng.uniform(1e-4, 2e-3)
  l = rng.uniform(0.5, 2.0)
  L = l * rng.uniform(1.0, 1.5)
  kL = theory.kappa(lr, wd) * L
  rho0_sq = kL * rng.uniform(3, 30)
  delta = lr * wd * l**2 / L**2 * rng.uniform(0.2, 0.9)  # t_max exists
  tmin = theory.t_min(rho0_sq, l, L, lr, wd, delta)
  tmax = theory.t_max(rho0_sq, l, L, lr, wd, delta)
  t = first_jump(rho0_sq, l, L, lr, wd, delta, seed)
  assert 0 < tmin <= tmax < math.inf
  # the paper drops O((eta lam)^2) and O(delta^2) terms: allow 1% on each side
  assert 0.99 * tmin <= t <= 1.01 * tmax + 1, (tmin, t, tmax)


def test_proposition2_no_jump_when_delta_too_large():
  lr, wd, l, L = 0.1, 1e-3, 1.0, 1.2
  delta = 1.5 * lr * wd * L**2 / l**2
  assert theory.t_min(100.0, l, L, lr, wd, delta) == math.inf
  assert math.isnan(theory.t_max(100.0, l, L, lr, wd, delta))
  assert first_jump(100.0, l, L, lr, wd, delta, 0, steps=20_000) == math.inf
  assert theory.t_min(1e-6, l, L, lr, wd, delta) == 0.0  # already below (4a)


@pytest.mark.parametrize("seed", range(4))
def test_proposition3_and_remark3_equilibrium(seed):
  rng = np.random.default_rng(seed)
  lr, wd = rng.uniform(0.01, 0.5), rng.uniform(1e-4, 1e-2)
  l = rng.uniform(0.1, 2)
  L = l * rng.uniform(1, 3)
  norm_band = theory.equilibrium_norm_sq(l, L, lr, wd)
  elr_band = theory.equilibrium_effective_lr(l, L, lr, wd)
  assert norm_band.valid and elr_band.valid
  rho_sq, tail = 50 * norm_band.high, []
  steps = int(20 / (lr * wd))
  for t in range(steps):
    g = rng.uniform(l, L)
    rho_sq = (1 - lr * wd) ** 2 * rho_sq + lr**2 * g**2 / rho_sq
    if t > steps // 2:
      tail.append(rho_sq)
  tail = np.array(tail)
  # O(eta lam) corrections: kappa uses 2 eta lam for 1 - (1 - eta lam)^2
  assert tail.min() >= norm_band.low * (1 - 2 * lr * wd)
  assert tail.max() <= norm_band.high * (1 + 2 * lr * wd)
  elr = lr / tail
  assert elr.min() >= elr_band.low * (1 - 2 * lr * wd)
  assert elr.max() <= elr_band.high * (1 + 2 * lr * wd)


def eq3_fixed_point(g_eff, lr, wd):
  """rho^2 with rho^2 = (1 - eta lam)^2 rho^2 + eta^2 g~^2 / rho^2 (Eq. (3), constant g~):
  rho^4 (1 - (1 - eta lam)^2) = eta^2 g~^2, i.e. rho^2 = eta g~ / sqrt(2 eta lam - eta^2 lam^2)."""
  return lr * g_eff / np.sqrt(2 * lr * wd - (lr * wd) ** 2)


def test_proposition3_band_is_tight_at_both_ends():
  """With a constant g~ = l (or L) the norm converges to the Eq. (3) fixed point, which
  Proposition 3's band end kappa l (kappa L) must match up to O(eta lam): the band is
  the exact set of limits, not merely a region that contains them."""
  rng = np.random.default_rng(7)
  n = 12
  lr, wd = rng.uniform(0.05, 1.0, n), rng.uniform(1e-3, 1e-2, n)
  l = rng.uniform(0.2, 2.0, n)
  L = l * rng.uniform(1.5, 3.0, n)
  eta_lam = lr * wd
  for g_eff, end in ((l, "low"), (L, "high")):
    rho_sq = 30 * eq3_fixed_point(g_eff, lr, wd)  # far above the equilibrium
    for _ in range(int(25 / eta_lam.min())):  # Eq. (3), vectorized over the 12 settings
      rho_sq = (1 - eta_lam) ** 2 * rho_sq + lr**2 * g_eff**2 / rho_sq
    limit = eq3_fixed_point(g_eff, lr, wd)
    np.testing.assert_allclose(rho_sq, limit, rtol=1e-9)  # the tail has converged
    for i in range(n):
      band = theory.equilibrium_norm_sq(l[i], L[i], lr[i], wd[i])
      elr_band = theory.equilibrium_effective_lr(l[i], L[i], lr[i], wd[i])
      assert band.valid and elr_band.valid
      # kappa g / limit = sqrt(1 - eta lam / 2): off by eta lam / 4 (measured), not more
      assert abs(getattr(band, end) / limit[i] - 1) <= 0.3 * eta_lam[i], (end, i)
      elr_end = "high" if end == "low" else "low"  # eta~ = eta / rho^2
      assert abs(getattr(elr_band, elr_end) / (lr[i] / limit[i]) - 1) <= 0.3 * eta_lam[i]


def test_proposition3_condition():
  # 2 eta lam L <= l, with eta lam = 0.01: L = 40 l holds, L = 60 l does not
  assert theory.equilibrium_norm_sq(1.0, 40.0, 0.5, 0.02).valid
  assert not theory.equilibrium_norm_sq(1.0, 60.0, 0.5, 0.02).valid
  assert theory.equilibrium_effective_lr(1.0, 40.0, 0.5, 0.02).valid
  assert not theory.equilibrium_effective_lr(1.0, 60.0, 0.5, 0.02).valid
  # and the ends by hand: kappa = sqrt(0.5 / 0.04) = 3.5355..., sqrt(2 eta lam) = 0.1414...
  assert theory.equilibrium_norm_sq(1.0, 40.0, 0.5, 0.02)[:2] == pytest.approx(
      (3.5355339, 141.42136))
  assert theory.equilibrium_effective_lr(1.0, 40.0, 0.5, 0.02)[:2] == pytest.approx(
      (0.0035355339, 0.14142136))


def test_equilibrium_angular_update_sgd_and_momentum():
  lr, wd = 0.1, 5e-3
  for mu in (0.0, 0.9):
    rho0 = math.sqrt(theory.kappa(lr, wd))  # start near the equilibrium norm
    xs, _ = simulate_si_sgd(n=2000, steps=6000, lr=lr, wd=wd, g_eff=1.0, momentum=mu, seed=1,
                            rho0=rho0)
    unit = xs / np.linalg.norm(xs, axis=1)[:, None]
    cd = np.sum((unit[1:] - unit[:-1]) ** 2, axis=1) / 2
    measured = theory.angular_update(cd[-2000:]).mean()
    predicted = theory.equilibrium_angular_update(lr, wd, mu)
    assert measured == pytest.approx(predicted, rel=0.05), mu  # measured within ~2%


# --- beta-undetermined sequences -------------------------------------------------

alphas = st.floats(0.01, 0.45)


@given(alphas, st.floats(1e-3, 20))
@settings(max_examples=300, deadline=None)
def test_phi_facts_13(alpha, gamma):
  lm = theory.phi_landmarks(alpha)
  nxt = float(theory.phi(gamma, alpha))
  if gamma < 1:
    assert nxt > gamma  # (13a)
  if gamma > 1:
    assert 1 < nxt < gamma  # (13b)
  assert float(theory.phi(lm["pre_stationary"], alpha)) == pytest.approx(1.0)  # (13c)
  assert (nxt < 1) == (lm["pre_stationary"] < gamma < 1) or abs(nxt - 1) < 1e-12  # (13d)
  eps = 1e-6
  if gamma + eps < lm["argmin"]:
    assert theory.phi(gamma + eps, alpha) < nxt  # (13e) decreasing
  if gamma > lm["argmin"]:
    assert theory.phi(gamma + eps, alpha) > nxt  # (13f) increasing
  assert nxt >= lm["min"] - 1e-12  # (13g)
  assert float(theory.phi(lm["argmin"], alpha)) == pytest.approx(lm["min"])
  assert lm["pre_stationary"] < lm["argmin"] < lm["min"] < 1


@given(alphas, st.floats(0, 10), st.floats(1.01, 20))
@settings(max_examples=150, deadline=None)
def test_lemma1(alpha, beta, x0_factor):
  star = math.sqrt(beta / alpha)
  x0 = star * x0_factor + 1e-3
  x = theory.beta_sequence(x0, alpha, np.full(200, beta))
  lower, upper = theory.lemma1_bounds(x0, alpha, beta, np.arange(201))
  assert np.all(x >= lower - 1e-9 * x0) and np.all(x <= upper + 1e-9 * x0)


@given(alphas, st.floats(0.01, 5), st.floats(1.0, 10), st.floats(0.01, 50), st.integers(0, 10_000))
@settings(max_examples=150, deadline=None)
def test_lemma2_corollary2_proposition5(alpha, a, b_factor, x0, seed):
  b = a * b_factor
  betas = np.random.default_rng(seed).uniform(a, b, 400)
  x = theory.beta_sequence(x0, alpha, betas)
  xa, xb = theory.lemma2_bounding_sequences(x0, alpha, a, b, 400)
  tol = 1e-9 * max(x0, 1)
  assert np.all(xa <= x + tol)  # Lemma 2.1, for all t
  above = x > math.sqrt(b / (1 - alpha))
  T = len(x) if above.all() else int(np.argmin(above))  # x_t > sqrt(b/(1-alpha)) for t < T
  assert np.all(x[:T + 1] <= xb[:T + 1] + tol)  # Lemma 2.2
  t = np.arange(len(x))
  lower, upper = theory.corollary2_bounds(x0, alpha, a, b, t)
  if x0 > math.sqrt(a / alpha):
    assert np.all(x >= lower - tol)
  if x0 > math.sqrt(b / alpha):
    valid = np.cumprod(x >= math.sqrt(alpha * b) / (1 - alpha)).astype(bool)
    assert np.all(x[valid] <= upper[valid] + tol)
  interval = theory.proposition5_interval(alpha, a, b)
  if interval.valid:
    x_long = theory.beta_sequence(x[-1], alpha, np.random.default_rng(seed + 1).uniform(a, b, 4000))
    tail = x_long[int(40 / alpha):]
    assert tail.min() >= interval.low * (1 - 1e-6) and tail.max() <= interval.high * (1 + 1e-6)


def test_bad_sequence_inputs():
  # An error path: the message naming the offending argument is the behaviour under test.
  with pytest.raises(ValueError, match="alpha"):
    theory.beta_sequence(1.0, 0.5, [1.0])
  with pytest.raises(ValueError, match="x0"):
    theory.beta_sequence(0.0, 0.1, [1.0])
  with pytest.raises(ValueError, match="delta"):
    theory.delta_jump_threshold(1.0, 0.1, 0.01, 1.5)


# --- the toy function (appendix E) ---------------------------------------------------


def test_toy_gradient_is_right_and_scale_invariant():
  rng = np.random.default_rng(0)
  for _ in range(20):
    w = rng.standard_normal(2)
    e = 1e-6
    fd = np.array([(toy.loss(w + e * d) - toy.loss(w - e * d)) / (2 * e) for d in np.eye(2)])
    np.testing.assert_allclose(toy.grad(w), fd, rtol=1e-6, atol=1e-9)
    assert abs(toy.grad(w) @ w) < 1e-12  # (1a)
    np.testing.assert_allclose(toy.grad(3 * w), toy.grad(w) / 3, rtol=1e-12)  # (1b)
    assert toy.loss(3 * w) == pytest.approx(toy.loss(w))


def test_toy_without_wd_converges_with_wd_is_periodic():
  plain = toy.gradient_descent(wd=0.0, steps=2000)
  assert plain["loss"][-1] < 1e-8
  assert np.all(np.diff(plain["effective_lr"]) <= 0)  # the effective LR only decays
  periodic = toy.gradient_descent(wd=0.01, steps=2000)
  # Each period: loss climbs back by > 10x from its minimum (phase C) while the
  # weight norm jumps up; count the norm jumps.
  jumps = np.flatnonzero(np.diff(periodic["weight_norm"]) > 0.02)
  periods = np.flatnonzero(np.diff(jumps) > 5)
  assert len(periods) >= 50  # a period of ~28 steps
  assert periodic["loss"][1000:].max() > 100 * periodic["loss"][1000:].min()
  # Eq. (3): rho_{t+1} >= (1 - eta lam) rho_t, with near-equality in phase B where
  # the norm shrinks geometrically
  ratio = periodic["weight_norm"][1:] / periodic["weight_norm"][:-1]
  assert ratio.min() >= 1 - 0.01 - 1e-12
  assert np.percentile(ratio, 10) < 1 - 0.01 + 5e-4


@pytest.mark.parametrize("lower_power", [1.0, 2.0])
def test_envelope_fit_predicts_held_out_steps(lower_power):
  """Appendix D's envelopes l(t) = c / (t - t0)^p, L(t) = C / (t - t0), fitted on the
  first 1,000 steps of a period that starts at t0 = 700 and checked on the next 2,000.

  Synthetic g~_t log-uniform between the true envelopes c = 2, C = 5 (so both are
  approached): the fit must recover c and C, and the bounds must hold on the held-out
  steps (up to the few points the finite fit sample could not have seen) and be tight
  there.
  """
  t0, c_true, C_true = 700.0, 2.0, 5.0
  t = np.arange(-200, 3001) + t0
  dt = t - t0
  rng = np.random.default_rng(3)
  g = np.full(t.shape, 50.0)  # the previous period (dt <= 0), far off both envelopes
  after = dt > 0
  low_true, high_true = c_true / dt[after]**lower_power, C_true / dt[after]
  g[after] = np.exp(rng.uniform(np.log(low_true), np.log(high_true)))
  g[after & (dt < 10)] *= 100  # the jump's transient, before t_valid: to be left out
  fit_part, held_out = dt <= 1000, dt > 1000
  fit = theory.fit_gradient_envelopes(t[fit_part], g[fit_part], t0=t0, t_valid=t0 + 10,
                                      lower_power=lower_power)
  assert (fit.t0, fit.t_valid, fit.lower_power) == (t0, t0 + 10, lower_power)
  assert fit.c == pytest.approx(c_true, rel=0.02) and fit.c >= c_true
  assert fit.C == pytest.approx(C_true, rel=0.02) and fit.C <= C_true
  low, high = fit(t[held_out])
  np.testing.assert_allclose(low, c_true / dt[held_out]**lower_power, rtol=0.02)
  np.testing.assert_allclose(high, C_true / dt[held_out], rtol=0.02)
  gh = g[held_out]
  outside = np.mean((gh < low) | (gh > high))
  assert outside < 0.01  # measured 0.1-0.2%
  assert (gh / low).min() < 1.02 and (gh / high).max() > 0.98  # tight, not just valid
  # Fig. 13's bounds on 1 - cos: Eq. (8) at g~ = l(t) and g~ = L(t), by hand
  rho, lr, wd = 0.3, 0.1, 0.01
  lo, hi = theory.cosine_distance_bounds(rho, low, high, lr, wd)
  # 1 - (1 + r)^(-1/2) as -expm1(-log1p(r) / 2), exact in float64 for tiny r too
  by_hand = lambda g_: -np.expm1(-np.log1p(lr**2 * g_**2 / ((1 - lr * wd) ** 2 * rho**4)) / 2)
  np.testing.assert_allclose(lo, by_hand(low), rtol=1e-6)
  np.testing.assert_allclose(hi, by_hand(high), rtol=1e-6)


def test_envelope_fit_rejects_bad_windows():
  t = np.arange(10.0)
  with pytest.raises(ValueError, match="t_valid must be after t0"):
    theory.fit_gradient_envelopes(t, np.ones(10), t0=5.0, t_valid=5.0)
  with pytest.raises(ValueError, match="no finite"):
    theory.fit_gradient_envelopes(t, np.full(10, np.nan), t0=0.0)


def test_theory_figures_are_pngs(tmp_path):
  # A smoke test of the figures (they draw, they are PNGs): the numbers they plot come
  # from theory.py and toy.py, checked on their values above.
  from si_jax.plots import theory_figures
  names = ("fig8_phi.png", "fig9_beta_sequence.png", "fig14_toy.png")
  assert theory_figures.write_all(str(tmp_path / "figures")) == [
      str(tmp_path / "figures" / name) for name in names]
  for name in names:
    with open(tmp_path / "figures" / name, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# --- appendix A.7 and Eqs. (15)-(16) --------------------------------------------------


def test_eq15_is_eq3_unrolled_and_eq16_needs_the_average_s_weights():
  """Eq. (15) equals Eq. (3) iterated (g~ = rho g) to 1e-12; Eq. (16) with an average
  g-bar equals it with the coefficient eta^2 (1 - q^t) / (1 - q) -> eta / (2 lam), not the
  printed (1 - q) / (1 - q^t) -> 2 eta^3 lam (off by a factor 1 / (1 - q)^2 ~ 100 here)."""
  rng = np.random.default_rng(0)
  lr, wd, rho0_sq = 0.1, 0.05, 4.0
  g_sq = rng.uniform(0.5, 2.0, 3000)
  rho_sq, iterated = rho0_sq, []
  for g in g_sq:
    rho_sq = theory.next_norm_sq(np.sqrt(rho_sq), np.sqrt(rho_sq * g), lr, wd)
    iterated.append(rho_sq)
  unrolled = theory.norm_sq_unrolled(rho0_sq, g_sq, lr, wd)
  np.testing.assert_allclose(unrolled, iterated, rtol=1e-12)
  ema = theory.gradient_ema_sq(g_sq, lr, wd)
  t = np.arange(1, len(g_sq) + 1)
  np.testing.assert_allclose(theory.norm_sq_from_ema(rho0_sq, ema, t, lr, wd), unrolled,
                             rtol=1e-12)
  assert ema.min() >= 0.5 and ema.max() <= 2.0  # an average of the g^2
  q = (1 - lr * wd) ** 2
  printed = q ** t * rho0_sq + lr**2 * (1 - q) / (1 - q ** t) * ema
  assert unrolled[-1] / printed[-1] == pytest.approx(1 / (1 - q) ** 2, rel=1e-3)
  assert lr**2 / (1 - q) == pytest.approx(lr / (2 * wd), rel=lr * wd)


def test_a7_bounds_hold_where_proposition_3_does_not():
  """eta lam = 0.05, L = 1, l = 0.05 < 2 eta lam L = 0.1: a norm falling to kappa l hops
  over Proposition 3's kappa L, but stays within A.7's [kappa l, (1 - eta lam)^2 kappa l +
  eta^2 L^2 / (kappa l)] after the transient."""
  lr, wd, l, L = 0.5, 0.1, 0.05, 1.0
  assert not theory.equilibrium_norm_sq(l, L, lr, wd).valid
  bounds = theory.a7_norm_sq_bounds(l, L, lr, wd)
  rng = np.random.default_rng(1)
  g = np.where(rng.random(20000) < 0.9, l, L) * rng.uniform(1.0, 1.0001, 20000)
  rho_sq, trace = 10.0, []
  for gi in g:
    rho_sq = theory.next_norm_sq(np.sqrt(rho_sq), gi, lr, wd)
    trace.append(rho_sq)
  late = np.array(trace[500:])
  assert late.min() >= bounds.low * (1 - 1e-9) and late.max() <= bounds.high * (1 + 1e-9)
  assert late.max() > theory.kappa(lr, wd) * L  # the hop over Proposition 3's bound
  assert bounds.high == pytest.approx(0.95**2 * np.sqrt(2.5) * l + 0.25 / (np.sqrt(2.5) * l))
  with pytest.raises(ValueError, match="l > 0"):
    theory.a7_norm_sq_bounds(0.0, L, lr, wd)
