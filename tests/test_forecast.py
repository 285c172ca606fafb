"""The forecast of the next destabilization: Eq. (3)'s projection by hand, the conditioning
on survival, exact answers on a run whose critical level is fixed, and the scoring."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from si_jax.analysis import detector as detector_lib
from si_jax.analysis import forecast

LR, WD, STEPS = 0.1, 0.03, 12  # the quickstart's: 12 steps an epoch


def periodic_records(level=0.04, jump=4.0, periods=6, g=0.0, noise=0.0, seed=0,
                     per_step=False):
  """Per-epoch records of an SI run whose destabilizations start exactly when the effective
  LR reaches ``level``: rho^2 follows Eq. (3) step by step with effective gradient norm
  ``g``; at a destabilization the loss spikes 1000x for 2 epochs and rho^2 grows ``jump``x
  (the effective LR falls by that factor). ``per_step``: one record per step instead (the
  epoch's loss, that step's norm). Returns the records and the onset epochs."""
  rng = np.random.default_rng(seed)
  rho2, records, onsets, spike = LR / 0.005, [], [], 0
  epoch = 0

  def steps(sq, grow=1.0):
    out = []
    for _ in range(STEPS):
      sq = grow * ((1 - LR * WD) ** 2 * sq + LR**2 * g**2 / sq)
      out.append(sq)
    return out

  while (len(onsets) < periods or epoch < onsets[-1] + 10) and epoch < 2000:
    epoch += 1
    loss = 1e-3 * math.exp(noise * rng.standard_normal())
    norms = steps(rho2)
    if spike:
      loss, spike = 1.0, spike - 1
    elif LR / norms[-1] >= level * math.exp(noise * rng.standard_normal()) and (
        len(onsets) < periods):
      onsets.append(epoch)  # the epoch in which the effective LR reaches the level
      loss, spike = 1.0, 1
      norms = steps(rho2, jump ** (1 / STEPS))  # the norm answers within the epoch
    rho2 = norms[-1]
    loss = max(loss, 1e-4) if epoch >= 5 else 2.0 * 0.3 ** epoch
    for k, sq in enumerate(norms if per_step else norms[-1:]):
      step = (epoch - 1) * STEPS + k + 1 if per_step else epoch * STEPS
      records.append({"epoch": epoch, "step": step, "train_loss": loss,
                      "weight_norm": math.sqrt(sq), "effective_lr": LR / sq,
                      "effective_grad_norm": g})
  return records, onsets


def test_eq3_projection_matches_the_closed_form_without_gradient():
  """g~ = 0: rho^2 shrinks by (1 - eta lambda)^2 a step, so the effective LR reaches L from
  E after ceil(ln(L / E) / -2 ln(1 - eta lambda)) steps."""
  f = forecast.OnlineForecaster(wd=WD, steps_per_sample=STEPS)
  f._phase_b = [{"effective_grad_norm": 0.0}]
  now, rho = 0.01, math.sqrt(LR / 0.01)
  levels = [0.02, 0.05, 0.01 * 0.999]
  got = f._samples_to_reach(levels, now, rho)
  expected = [math.ceil(math.log(L / now) / -(2 * math.log(1 - LR * WD))) / STEPS
              for L in levels[:2]]
  assert got[:2] == pytest.approx(expected, abs=1e-12)
  assert got[2] == 0.0  # already above it
  # with a gradient, the norm shrinks slower: later, and never where Eq. (3) balances
  f._phase_b = [{"effective_grad_norm": 0.5}]
  slower = f._samples_to_reach(levels, now, rho)
  assert slower[0] > got[0] and slower[1] > got[1]
  # the fixed point of Eq. (3): rho^4 = eta^2 g^2 / (1 - (1 - eta lambda)^2)
  g_balance = math.sqrt((1 - (1 - LR * WD) ** 2) * rho**4) / LR
  f._phase_b = [{"effective_grad_norm": 1.01 * g_balance}]
  assert f._samples_to_reach(levels, now, rho)[:2] == [None, None]


def test_a_fixed_critical_level_is_forecast_to_the_epoch():
  """Every destabilization at the same effective LR: from the second period on the point
  forecast is inside the interval at every point of phase B, within 1.5 epochs of the
  onset; the naive previous-period forecast is right here too (periods are equal). With
  revisions 1-2's prior spread of 0.5, two levels leave the predictive t wide and its
  survival-conditioned median later: over 1.5 epochs late (within 3)."""
  records, onsets = periodic_records()
  assert len(onsets) == 6 and len(set(np.diff(onsets))) <= 2  # periods of equal length
  run = forecast.replay(records, wd=WD, detector_options={"reference": math.log(10)})
  assert [run.x[i] for i in run.onsets] == onsets
  scores = forecast.score(run)
  assert len(scores) == 3 * 4 and all(math.isfinite(s.predicted) for s in scores)
  # a level is read a sample before the crossing (a sample's worth below the true one)
  assert all(abs(s.error) <= 1.5 and s.covered for s in scores)
  wide = forecast.score(forecast.replay(records, wd=WD, prior_spread=0.5,
                                        detector_options={"reference": math.log(10)}))
  assert all(abs(s.error) <= (1.5 if s.destabilization >= 3 else 3.0) for s in wide)
  assert max(abs(s.error) for s in wide if s.destabilization == 2) > 1.5  # two levels
  assert max(abs(s.error) for s in scores if s.destabilization == 2) < 1.0
  first = next(i for i, f in enumerate(run.forecasts) if f is not None)
  assert run.x[first] > onsets[0] and run.phases[first] == "B"


def test_the_forecast_beats_the_naive_one_when_levels_vary_and_periods_do_not_repeat():
  """Critical levels drawn log-normally (spread 0.3 in ln): periods vary, the last one
  says little about the next, the projection from the current norm says more."""
  records, onsets = periodic_records(periods=12, noise=0.3, seed=3)
  run = forecast.replay(records, wd=WD, detector_options={"reference": math.log(10)})
  scores = [s for s in forecast.score(run) if s.point == 0.5]
  assert len(scores) >= 8
  ours = np.median([abs(s.error) / s.period for s in scores])
  naive = np.median([abs(s.naive_error) / s.period for s in scores])
  assert ours < naive, (ours, naive)
  assert 0.6 <= np.mean([s.covered for s in scores]) <= 1.0


def test_survival_moves_the_forecast_past_the_levels_already_crossed():
  """Levels 0.01 and 0.04 (ln mean at 0.02): at an effective LR of 0.03, above the median,
  the conditional median is above 0.03 and the forecast is later than 'now'."""
  f = forecast.OnlineForecaster(wd=WD, steps_per_sample=STEPS)
  f.levels = [math.log(0.01), math.log(0.04)]
  f._phase_b = [{"effective_grad_norm": 0.0}]
  made = f._forecast({"epoch": 100, "effective_lr": 0.03, "weight_norm": math.sqrt(LR / 0.03)})
  assert made.low >= 101 and made.onset > made.low and made.high > made.onset
  mean, spread = f._distribution(f.levels)
  assert spread == pytest.approx(math.sqrt((0.25**2 + 2 * (math.log(2)) ** 2) / 2))


def test_a_loss_climbing_in_phase_b_lowers_the_level_by_its_factor():
  """Three levels at 0.04 (a prior spread of 0.001: no survival conditioning at the
  effective LR of 0.005 the forecasts are made at); the loss 4x above its lowest value
  since the onset lowers the level 4x: with g~ = 0 the effective LR grows by
  (1 - eta lambda)^-2 a step, so the forecast comes ln(4) / -2 ln(1 - eta lambda) steps
  (19.2 epochs) earlier."""
  def forecast_at(losses):
    f = forecast.OnlineForecaster(wd=WD, steps_per_sample=STEPS, prior_spread=1e-3)
    f.levels = [math.log(0.04)] * 3
    made = None
    for epoch, loss in enumerate(losses, start=100):
      made = f.update({"epoch": epoch, "train_loss": loss, "effective_lr": 0.005,
                       "weight_norm": math.sqrt(LR / 0.005), "effective_grad_norm": 0.0},
                      [], "B")
    return made
  flat = forecast_at([1e-3, 1e-3, 1e-3])
  risen = forecast_at([1e-3, 2e-3, 4e-3])
  earlier = math.log(4) / -(2 * math.log(1 - LR * WD)) / STEPS
  assert flat.onset - risen.onset == pytest.approx(earlier, abs=1 / STEPS + 1e-9)
  # the detector's loss throughout: 'loss' (the first record's), not the eval epochs' train_loss
  f = forecast.OnlineForecaster(wd=WD, steps_per_sample=STEPS, prior_spread=1e-3)
  f.levels = [math.log(0.04)] * 3
  for epoch in range(100, 103):
    record = {"epoch": epoch, "loss": 1.5e-3, "effective_lr": 0.005,
              "weight_norm": math.sqrt(LR / 0.005), "effective_grad_norm": 0.0}
    made = f.update(record if epoch % 2 == 0 else {**record, "train_loss": 1e-4}, [], "B")
  assert made.onset == flat.onset


def test_an_onset_resets_the_loss_floor_to_the_lowest_loss_from_the_onset_on():
  """An onset confirmed 3 samples late (its level, 0.04, the third): the floor becomes the
  lowest loss from the onset sample on (2e-3, logged before the confirmation), not the 1e-3
  of the phase B before it, so 4e-3 in the next phase B is a 2x climb (not 4x, nor 1x)."""
  def run(losses, phases, levels, events=None):
    f = forecast.OnlineForecaster(wd=WD, steps_per_sample=STEPS, prior_spread=1e-3)
    f.levels = [math.log(0.04)] * levels
    for i, (loss, phase) in enumerate(zip(losses, phases)):
      elr = 0.04 if i == 1 else 0.005
      made = f.update({"epoch": 100 + i, "train_loss": loss, "effective_lr": elr,
                       "weight_norm": math.sqrt(LR / elr), "effective_grad_norm": 0.0},
                      (events or {}).get(i, []), phase)
    return made
  onset = detector_lib.Event("onset", index=2, x=102.0, decided=5)
  reset = run([1e-3, 1e-3, 0.5, 2e-3, 3e-3, 4e-3, 4e-3], "BBAAAAB", 2, {5: [onset]})
  assert reset.levels == 3
  assert reset.onset == run([2e-3] * 6 + [4e-3], "AAAAAAB", 3).onset
  assert reset.onset < run([4e-3] * 7, "AAAAAAB", 3).onset


def test_no_forecast_without_a_destabilization_or_with_a_fixed_norm():
  # Eq. (3)'s equilibrium effective LR is ~sqrt(2 eta lambda) / g = 0.15: never at 10
  records, _ = periodic_records(level=10.0, periods=1, g=0.5)
  run = forecast.replay(records[:300], wd=WD, detector_options={"reference": math.log(10)})
  assert run.onsets == [] and all(f is None for f in run.forecasts)
  live = forecast.live_for_config({"optim": {"wd": WD, "fix_si_norm": True}},
                                  {"norm": "fixed"})
  assert live.forecaster is None
  momentum = forecast.live_for_config({"optim": {"wd": WD, "momentum": 0.9}}, {})
  assert momentum.forecaster.wd is None  # Eq. (3) is plain SGD's: the growth rate instead


def test_bad_arguments_are_refused():
  with pytest.raises(ValueError, match="coverage"):
    forecast.OnlineForecaster(coverage=1.0)
  with pytest.raises(ValueError, match="prior_spread"):
    forecast.OnlineForecaster(prior_spread=0.0)
  with pytest.raises(ValueError, match="wd"):
    forecast.OnlineForecaster(wd=-0.1)


def _write_run(path, records, wd=WD):
  path.mkdir()
  (path / "config.json").write_text(json.dumps(
      {"data": {"name": "digits"}, "optim": {"wd": wd, "lr": LR}, "train": {"eval_every": 1}}))
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_program_scores_runs_and_says_when_there_are_too_few_periods(tmp_path, capsys):
  from si_jax.programs import forecast as program
  records, onsets = periodic_records()
  _write_run(tmp_path / "long", records)
  _write_run(tmp_path / "short", records[:onsets[1] + 8])
  program.main([str(tmp_path / "long"), str(tmp_path / "short")])
  out = capsys.readouterr().out
  assert f"destabilization 3 at {onsets[2]:g} (period {onsets[2] - onsets[1]:g})" in out
  assert "at 50% of phase B: 4 forecasts" in out and "80% interval held 100%" in out
  short = f"{tmp_path / 'short'}: 2 destabilizations in {onsets[1] + 8} epochs: too few periods"
  assert short in out
  assert "all 2 directories (1 scored):" in out
  summary = forecast.summary(forecast.score_workdir(str(tmp_path / "long")))
  assert summary["50%"]["forecasts"] == 4 and summary["50%"]["coverage"] == 1.0
  assert [r["actual"] for r in summary["at_50%"]] == onsets[2:]


def test_the_program_scores_every_good_directory_and_fails_at_the_end_on_bad_ones(
    tmp_path, capsys):
  """A bad directory gets its one-line reason on stderr and exit status 1 after the others
  were scored; a log re-written after a resume (an epoch repeated) is refused, not scored;
  a family's directory stands for its members, each directory is scored once."""
  from si_jax.programs import forecast as program
  records, onsets = periodic_records()
  family = tmp_path / "family"
  family.mkdir()
  (family / "family.json").write_text("{}")
  _write_run(family / "a", records)
  _write_run(tmp_path / "resumed", records[:60] + records[59:])
  _write_run(tmp_path / "listed", records)
  (tmp_path / "listed" / "metrics.jsonl").write_text("[1, 2]\n")
  _write_run(tmp_path / "held", records)
  (tmp_path / "held" / "config.json").write_text(json.dumps({"optim": {"fix_si_norm": True}}))
  args = [str(family), str(tmp_path / "resumed"), str(tmp_path / "missing"),
          str(tmp_path / "listed"), str(family / "a"), str(tmp_path / "held")]
  with pytest.raises(SystemExit) as stop:
    program.main(args)
  assert stop.value.code == 1
  out, err = capsys.readouterr()
  assert out.count(f"{family / 'a'}:") == 1 and "at 50% of phase B: 4 forecasts" in out
  assert f"{tmp_path / 'held'}: the SI norm is held" in out
  assert "all 5 directories (1 scored, 3 failed):" in out
  lines = err.strip().splitlines()
  assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
  assert "record 61 has epoch 60 after 60" in lines[0]
  assert f"{tmp_path / 'missing'}" in lines[1] and "not found" in lines[1]
  assert "line 1: a JSON list, not a record" in lines[2]


@pytest.mark.parametrize("text, reason", [
    ("[1]", "a JSON list, not a config"), ('{"optim": "sgd"}', "'optim' is a str, not a section"),
    ("{'optim': 1}", "config.json: not JSON")])
def test_a_damaged_config_is_named_not_scored_with_defaults(tmp_path, text, reason):
  records, _ = periodic_records()
  _write_run(tmp_path / "run", records)
  (tmp_path / "run" / "config.json").write_text(text)
  with pytest.raises(ValueError, match=reason):
    forecast.score_run(str(tmp_path / "run"))


def test_a_run_logging_only_loss_is_scored_on_it_and_a_record_without_epoch_is_refused(
    tmp_path):
  """'loss' where 'train_loss' was never logged: the same destabilizations (the detector's
  own choice, as phases.analyze_with_config); a record with epoch null: a ValueError."""
  records, onsets = periodic_records()
  renamed = [{("loss" if k == "train_loss" else k): v for k, v in r.items()} for r in records]
  _write_run(tmp_path / "loss", renamed)
  run = forecast.score_run(str(tmp_path / "loss"))
  assert run.destabilizations == len(onsets) and [s.actual for s in run.scores[::3]] == onsets[2:]
  records[40] = {**records[40], "epoch": None}
  _write_run(tmp_path / "gap", records)
  with pytest.raises(ValueError, match="record 41 has no finite 'epoch'"):
    forecast.score_run(str(tmp_path / "gap"))


def test_per_step_logs_forecast_in_steps():
  """The same run logged per step (x = step, one record per optimizer step, the norm of each
  step): the onsets are found in steps, and the forecasts too, within an epoch's steps of
  the onsets from the fourth on (two epochs' from the third)."""
  records, onsets = periodic_records(per_step=True)
  options = {"reference": math.log(10), "x_key": "step"}
  run = forecast.replay(records, wd=WD, detector_options=options)
  found = [run.x[i] for i in run.onsets]
  assert len(found) == len(onsets)
  assert all(abs(f - (o - 1) * STEPS) <= STEPS for f, o in zip(found, onsets))
  scores = forecast.score(run)
  assert scores and all(math.isfinite(s.predicted) for s in scores)
  assert all(abs(s.error) <= (2 if s.destabilization >= 3 else 3) * STEPS for s in scores)


def test_revision_4_truncates_the_level_at_eq3s_equilibrium():
  """Levels at 0.1 and 0.2; with g~ = 1.6 Eq. (3) settles at an effective LR of
  sqrt(1 - (1 - eta lambda)^2) / g~ = 0.0484: every quantile of the truncated level lies
  below it, so the forecast exists; revision 3 puts the median level out of reach."""
  rho = math.sqrt(LR / 0.01)  # an effective LR of 0.01 now
  record = {"epoch": 100, "effective_lr": 0.01, "weight_norm": rho}
  top = math.sqrt(1 - (1 - LR * WD) ** 2) / 1.6
  assert top == pytest.approx(0.0484, abs=1e-4)
  made = {}
  for revision, kwargs in ((4, {}), (3, {"angular": False, "equilibrium": False})):
    f = forecast.OnlineForecaster(wd=WD, steps_per_sample=STEPS, **kwargs)
    f.levels = [math.log(0.1), math.log(0.2)]
    f._phase_b = [{"effective_grad_norm": 1.6}] * 3
    dist = f._predictive(0.0, 1.6, LR, 0.01)
    made[revision] = (f._forecast(record), [math.exp(dist.ppf(p)) for p in (0.1, 0.5, 0.9)])
  forecast_4, quantiles_4 = made[4]
  assert forecast_4 is not None and all(q <= top * (1 + 1e-9) for q in quantiles_4)
  assert quantiles_4 == sorted(quantiles_4) and quantiles_4[0] < quantiles_4[2]
  forecast_3, quantiles_3 = made[3]
  assert forecast_3 is None and quantiles_3[1] > top


def test_revision_4_takes_the_angular_level_where_the_runs_onsets_agree_on_it():
  """Effective-LR levels 0.01 and 0.09 (ln mean: 0.03) at onsets where the phase-B g~ was
  5 and 5/9: their angular levels (effective LR x g~) are both 0.05, the tighter set, so
  with today's g~ = 2 the level's centre is 0.05 / 2 = 0.025 (revision 3: 0.03)."""
  for angular, centre in ((True, 0.025), (False, 0.03)):
    f = forecast.OnlineForecaster(wd=None, angular=angular, equilibrium=False)
    f.levels = [math.log(0.01), math.log(0.09)]
    f.angular_levels = [math.log(0.05), math.log(0.05)]
    assert math.exp(f._predictive(0.0, 2.0).ppf(0.5)) == pytest.approx(centre, rel=1e-9)
  # an unknown g~ at one onset, or none today: the effective LR's levels
  f.angular, f.angular_levels = True, [math.log(0.05), math.nan]
  assert math.exp(f._predictive(0.0, 2.0).ppf(0.5)) == pytest.approx(0.03, rel=1e-9)
  f.angular_levels = [math.log(0.05)] * 2
  assert math.exp(f._predictive(0.0, math.nan).ppf(0.5)) == pytest.approx(0.03, rel=1e-9)
  # effective-LR levels that agree (0.03 twice) and angular ones that do not: the former
  f.levels, f.angular_levels = [math.log(0.03)] * 2, [math.log(0.01), math.log(0.09)]
  assert math.exp(f._predictive(0.0, 2.0).ppf(0.5)) == pytest.approx(0.03, rel=1e-9)


def test_revision_5_widens_the_angular_level_by_the_spread_of_ln_g_in_phase_b():
  """Angular levels 0.05 twice (shrunk spread sqrt(0.25^2 / 2)), phase B's g~ at e^-0.3 and
  e^0.3 (variance of ln g~ 0.09): the t's scale is sqrt(0.25^2 / 2 x 1.5 + 0.09), revision
  4's without the 0.09; the effective LR's levels, where chosen, are not widened."""
  q = 0.9
  for g_spread, scale in ((True, math.sqrt(0.0625 / 2 * 1.5 + 0.09)),
                          (False, math.sqrt(0.0625 / 2 * 1.5))):
    f = forecast.OnlineForecaster(wd=None, equilibrium=False, g_spread=g_spread)
    f.levels = [math.log(0.01), math.log(0.09)]
    f.angular_levels = [math.log(0.05)] * 2
    f._phase_b = [{"effective_grad_norm": math.exp(v)} for v in (-0.3, 0.3)]
    dist = f._predictive(0.0, 2.0)
    width = dist.ppf(q) - dist.ppf(0.5)
    assert width == pytest.approx(scale * stats.t(df=2).ppf(q), rel=1e-9)
  f.levels, f.angular_levels = [math.log(0.03)] * 2, [math.log(0.01), math.log(0.09)]
  dist = f._predictive(0.0, 2.0)
  f.g_spread = True
  assert f._predictive(0.0, 2.0).ppf(q) == pytest.approx(dist.ppf(q), rel=1e-12)


def test_an_onsets_angular_level_uses_the_phase_b_g_of_the_sample_before_it():
  """Phase B's median g~ over its records up to the sample before the onset (not after)."""
  f = forecast.OnlineForecaster(wd=WD)
  gs = [1.0, 3.0, 2.0, 8.0]  # phase-B medians as of samples 0-3: 1, 2, 2, 2.5
  for i, g in enumerate(gs):
    f.update({"epoch": i + 1, "effective_lr": 0.01 * (i + 1), "weight_norm": 1.0,
              "effective_grad_norm": g, "train_loss": 1e-3}, [], "B")
  f._add_level(3)  # the onset at sample 3: the level is sample 2's effective LR and g~
  assert f.levels == [pytest.approx(math.log(0.03))]
  assert f.angular_levels == [pytest.approx(math.log(0.03 * 2.0))]


def test_revision_4_does_not_truncate_below_todays_effective_lr():
  """g~ = 20 puts the equilibrium (0.0039) below today's effective LR of 0.006: the estimate
  is off (g~ has fallen), so the level is not truncated and the forecast is revision 3's,
  not a zero-width interval at the next sample."""
  record = {"epoch": 100, "effective_lr": 0.006, "weight_norm": math.sqrt(LR / 0.006)}
  assert math.sqrt(1 - (1 - LR * WD) ** 2) / 20 < 0.006
  made = []
  for kwargs in ({}, {"angular": False, "equilibrium": False}):
    f = forecast.OnlineForecaster(wd=WD, steps_per_sample=STEPS, **kwargs)
    f.levels = [math.log(0.01), math.log(0.02)]
    f._phase_b = [{"effective_grad_norm": 20.0}] * 3
    made.append(f._forecast(record))
  assert made[0] == made[1]
  assert made[0] is None or made[0].high > made[0].low


def test_an_onsets_angular_level_needs_a_phase_b_g_of_its_own_period():
  """An onset whose period logged no phase-B sample before it gets no angular level (nan),
  rather than the previous period's g~."""
  f = forecast.OnlineForecaster(wd=WD)
  for i in range(3):
    f.update({"epoch": i + 1, "effective_lr": 0.01, "weight_norm": 1.0,
              "effective_grad_norm": 2.0, "train_loss": 1e-3}, [], "B")
  f._add_level(3)
  assert f.angular_levels == [pytest.approx(math.log(0.01 * 2.0))]
  for i in range(3, 6):  # the next period: no phase B before its onset at sample 5
    f.update({"epoch": i + 1, "effective_lr": 0.02, "weight_norm": 1.0,
              "effective_grad_norm": 4.0, "train_loss": 1e-3}, [], "A")
  f._add_level(5)
  assert len(f.levels) == 2 and math.isnan(f.angular_levels[1])
