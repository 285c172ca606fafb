"""Fig. 13 (appendix D) tested honestly: the effective-gradient envelopes are fitted on
the first half of phase B of a real per-step run and checked on the second half only.

One run of configs/one_period.py:cpu (the quickstart logged per step), cut to 85
epochs: its period 1 is complete by then (epochs 45-67 on one machine, 45-77 on another:
XLA:CPU's float results depend on the CPU, and the run is chaotic enough to show it). Every
number the library reports is recomputed here by hand from the logged steps. Whether
1 - cos actually grows in the second half (the paper's statement) is what the library
reports; it is not asserted.
"""

import importlib.util
import os

import numpy as np
import pytest

from si_jax.analysis import period_steps, phases, theory
from si_jax.engine import train
from si_jax.plots import period_steps as period_plots

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(path, name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  config = _load("configs/one_period.py", "one_period").get_config("cpu")
  config.train.epochs = 85
  config.checkpoint.every_epochs = 85
  workdir = str(tmp_path_factory.mktemp("fig13") / "run")
  train.train_and_evaluate(config, workdir, progress=False)
  return workdir


@pytest.fixture(scope="module")
def analysis(run):
  return period_steps.phase_b_analysis(run, period=1)


def _cosine_distance(rho, g, lr, wd):
  """1 - Eq. (8) by hand: 1 - (1 + r)^(-1/2) = -expm1(-log1p(r) / 2)."""
  return -np.expm1(-np.log1p(lr**2 * g**2 / ((1 - lr * wd) ** 2 * rho**4)) / 2)


def _by_hand(a, t_split):
  """(c, C, fraction of g~ inside on t >= t_split, same for 1 - cos, in-sample fraction)."""
  t, g, rho, cd, t0 = a["t"], a["g"], a["rho"], a["cd"], a["t0"]
  fit, check = t < t_split, t >= t_split
  c, C = np.min(g[fit] * (t[fit] - t0)), np.max(g[fit] * (t[fit] - t0))
  low, high = c / (t - t0), C / (t - t0)
  inside = (g >= low) & (g <= high)
  lo = _cosine_distance(rho, low, a["lr"], a["wd"])
  hi = _cosine_distance(rho, high, a["lr"], a["wd"])
  inside_cd = (cd >= lo * (1 - 1e-3)) & (cd <= hi * (1 + 1e-3))
  return c, C, inside[check].mean(), inside_cd[check].mean(), inside[fit].mean()


def test_phase_b_is_split_in_halves_of_the_logged_steps(run, analysis):
  steps = phases.load_series(run, steps=True)
  t = analysis["t"]
  # phase B is a contiguous run of logged steps, between the period's start and its end
  np.testing.assert_array_equal(t, np.arange(analysis["b_start"], analysis["b_end"] + 1))
  assert set(t) <= set(steps["step"]) and analysis["t0"] < analysis["b_start"]
  held = analysis["held"]
  assert held.t_split == analysis["b_start"] + round(len(t) / 2)
  assert held.n_fit == np.sum(t < held.t_split) and held.n_check == np.sum(t >= held.t_split)
  assert held.n_fit + held.n_check == len(t) and abs(held.n_fit - held.n_check) <= 1


def test_held_out_fraction_is_computed_on_held_out_steps_only(analysis):
  held = analysis["held"]
  c, C, g_inside, cd_inside, in_sample = _by_hand(analysis, held.t_split)
  assert (held.fit.c, held.fit.C) == pytest.approx((c, C), rel=1e-12)
  assert held.fit.t_valid == analysis["b_start"] and held.fit.t0 == analysis["t0"]
  assert held.gradient_inside == pytest.approx(g_inside, abs=1e-12)
  assert held.cosine_inside == pytest.approx(cd_inside, abs=1e-12)
  assert in_sample == 1.0  # on the fitted steps Eq. (17) holds by construction
  # another split: another fit, another held-out set, again as computed by hand
  other = theory.held_out_bounds(
      analysis["t"], analysis["g"], analysis["rho"], analysis["cd"], analysis["lr"],
      analysis["wd"], t0=analysis["t0"], t_split=analysis["b_start"] + 30)
  c2, C2, g2, cd2, _ = _by_hand(analysis, analysis["b_start"] + 30)
  assert other.n_fit == 30 and other.n_check == len(analysis["t"]) - 30
  assert (other.fit.c, other.fit.C, other.gradient_inside, other.cosine_inside) == pytest.approx(
      (c2, C2, g2, cd2), rel=1e-12)


def test_outliers_move_only_the_part_they_are_in(analysis):
  a, held = analysis, analysis["held"]

  def args(g):  # the run's steps with effective gradient norms g and their Eq. (8) 1 - cos
    return a["t"], g, a["rho"], _cosine_distance(a["rho"], g, a["lr"], a["wd"]), a["lr"], a["wd"]

  kw = dict(t0=a["t0"], t_split=held.t_split)
  base = theory.held_out_bounds(*args(a["g"]), **kw)
  low, high = held.fit(a["t"])
  inside = (a["g"] >= low) & (a["g"] <= high)
  # five held-out steps that were inside pushed far above L(t): the fit is unchanged and
  # the held-out fraction falls by exactly 5 / n_check
  victims = np.flatnonzero(inside & (a["t"] >= held.t_split))[:5]
  g = a["g"].copy()
  g[victims] = 1e3 * high[victims]
  bad = theory.held_out_bounds(*args(g), **kw)
  assert bad.fit == base.fit
  assert bad.gradient_inside == pytest.approx(base.gradient_inside - 5 / held.n_check, abs=1e-12)
  assert bad.cosine_inside == pytest.approx(base.cosine_inside - 5 / held.n_check, abs=1e-12)
  # one fitted step pushed 1000x up: C follows it, and no held-out step is above L(t)
  g = a["g"].copy()
  g[0] *= 1e3
  wide = theory.held_out_bounds(*args(g), **kw)
  assert wide.fit.c == held.fit.c
  assert wide.fit.C == pytest.approx(1e3 * a["g"][0] * (a["t"][0] - a["t0"]), rel=1e-12)
  check = a["t"] >= held.t_split
  assert wide.gradient_inside == pytest.approx(np.mean(a["g"][check] >= low[check]), abs=1e-12)


def test_growth_of_the_second_half_by_hand(analysis):
  a = analysis
  second = a["t"] >= a["held"].t_split
  for name, values in (("1 - cos", a["cd"]), ("bound with l(t)", a["cd_low"]),
                       ("bound with L(t)", a["cd_high"])):
    trend = a["trends"][name]
    ratio = np.median(values[second]) / np.median(values[~second])
    slope = np.polyfit(a["t"][second], np.log(values[second]), 1)[0]
    growth = np.exp(slope * (a["t"][second][-1] - a["t"][second][0]))
    assert (trend.median_ratio, trend.growth) == pytest.approx((ratio, growth), rel=1e-9)
    assert trend.verdict == ("grows" if ratio > 1 and growth > 1 else
                             "falls" if ratio < 1 and growth < 1 else "mixed")
  # on an exact exponential both numbers are known in closed form
  t = np.arange(100.0)
  up = theory.half_trend(t, np.exp(0.01 * t), 50.0)
  assert up.growth == pytest.approx(np.exp(0.01 * 49)) and up.verdict == "grows"
  assert up.median_ratio == pytest.approx(np.exp(0.01 * 50))
  assert theory.half_trend(t, np.exp(-0.01 * t), 50.0).verdict == "falls"


def test_figure_draws_and_reports_the_held_out_check(run, analysis, tmp_path, capsys):
  out = str(tmp_path / "fig13.png")
  a = period_plots.plot_delta_bounds(run, out, period=1)
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  printed = capsys.readouterr().out
  held = a["held"]
  assert f"inside [l, L] at {100 * held.gradient_inside:.1f}%" in printed
  assert f"({held.n_check})" in printed
  for name, trend in a["trends"].items():
    assert f"{name}: median after" in printed and trend.verdict in printed
  with pytest.raises(ValueError, match="fit_fraction"):
    period_steps.phase_b_analysis(run, fit_fraction=1.0)
  with pytest.raises(ValueError, match="no steps to fit"):
    theory.held_out_bounds(a["t"], a["g"], a["rho"], a["cd"], a["lr"], a["wd"], t0=a["t0"],
                           t_split=a["t"][0])


def test_live_phases_equal_the_offline_detector(run):
  """The loop's per-epoch phase, count and forecast are the detector's and forecaster's
  replay of the same log; the offline analysis has the same onsets."""
  from si_jax import logs
  from si_jax.analysis import forecast
  records = logs.read_run(run)
  config = phases.read_config(run)
  options = dict(phases.detector_options(config), x_key="epoch")
  replay = forecast.live_for_config(config, options)
  confirmed, forecasts = [], 0
  for r in records:
    fields = replay.update(r)
    assert {k: r[k] for k in fields} == fields
    assert not set(forecast.FIELDS) & (set(r) - set(fields))  # none the replay lacks
    confirmed += [r["onset_confirmed"]] if "onset_confirmed" in r else []
    forecasts += "forecast_onset" in r
  a = phases.analyze_run(run)
  assert confirmed == a.destabilizations and len(confirmed) >= 2  # 45 and 67 or 77
  assert records[-1]["destabilizations"] == len(a.onsets)
  assert {r["phase"] for r in records} == {None, "A", "B", "C"}
  # forecasts in phase B after the first destabilization, never before it
  first = next(i for i, r in enumerate(records) if r["destabilizations"])
  assert forecasts >= 5 and all("forecast_onset" not in r for r in records[:first])
  assert all(r["phase"] == "B" for r in records if "forecast_onset" in r)


def test_t0_is_the_first_step_of_the_epoch_the_period_starts_in(run, analysis):
  """Appendix D: t0 is 'the first iteration of the considered training period', the first
  step of the epoch whose destabilization starts period 1 (not the end of that epoch)."""
  epochs = phases.load_series(run)
  onset = phases.analyze_run(run, series=epochs).destabilizations[0]
  per_epoch = int(epochs["step"][0])
  assert analysis["t0"] == (onset - 1) * per_epoch
  steps = phases.load_series(run, steps=True)  # 0-based step and epoch indices
  at = {int(t): int(e) for t, e in zip(steps["step"], steps["epoch"])}
  assert at[analysis["t0"]] == onset - 1 and at[analysis["t0"] - 1] == onset - 2


def test_period_numbers_are_the_analysis_and_survive_the_export(run, analysis, tmp_path):
  from si_jax.analysis import period_claims
  numbers = period_steps.period_numbers(run, 1)
  held, steps = analysis["held"], phases.load_series(run, steps=True)
  c, C, g_inside, _, _ = _by_hand(analysis, held.t_split)  # the envelopes fitted by hand
  assert (numbers["c"], numbers["C"]) == pytest.approx((c, C), rel=1e-12)
  assert numbers["inside"] == pytest.approx(g_inside, abs=1e-12)
  b0, b1 = numbers["b"]
  assert numbers["n_check"] == b1 - numbers["split"] + 1 and numbers["split"] == b0 + round(
      (b1 - b0 + 1) / 2)
  in_b = (steps["step"] >= b0) & (steps["step"] <= b1)
  second = in_b & (steps["step"] >= numbers["split"])
  cd = steps["cosine_distance"]
  assert numbers["cos_ratio"] == pytest.approx(
      np.median(cd[second]) / np.median(cd[in_b & ~second]), rel=1e-12)
  b = numbers["phases"]["B"]  # phase B's first and last step and its rho there, as logged
  assert b["steps"] == (b0, b1)
  rho = steps["weight_norm"]
  assert b["rho"] == (rho[steps["step"] == b0][0], rho[steps["step"] == b1][0])
  assert b["cos"] == pytest.approx(np.median(cd[in_b]), rel=1e-12)
  # C, A, B tile the period's steps in order
  c, a = numbers["phases"]["C"], numbers["phases"]["A"]
  assert c["steps"][0] == analysis["t0"] and a["steps"][0] == c["steps"][1] + 1
  assert b["steps"][0] == a["steps"][1] + 1
  out = str(tmp_path / "one_period.json.gz")
  period_claims.export([run], out)
  (loaded,) = period_claims.load(out)
  again = period_steps.period_numbers(loaded, 1)
  assert again["b"] == numbers["b"] and again["n_check"] == numbers["n_check"]
  assert (again["c"], again["C"]) == pytest.approx((numbers["c"], numbers["C"]), rel=1e-5)
  assert abs(again["inside"] - numbers["inside"]) <= 1 / numbers["n_check"]
  text = "\n".join(period_claims.section_lines("one_period", [loaded]))
  assert f"| 0 | {b['steps'][0]}-{held.t_split - 1:.0f} / {held.t_split:.0f}-" in text
  assert text.count("Criterion:") == len(period_claims.CLAIMS)
