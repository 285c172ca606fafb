"""The reports the launchers print or write into docs/: the detector recount's claims, the
sphere bridge's regime boundaries, the reproduction report's claim lines and one period's
per-phase lines, on inputs built by hand."""

import itertools
import json
import os
import pathlib
import re
import types

import numpy as np
import pytest

from si_jax.analysis import (
  claims,
  period_claims,
  period_steps,
  phases,
  recount,
  reproduction,
  sphere_bridge,
  theory_claims,
)

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _found(periodic, lengths=(), onsets=None):
  onsets = list(range(len(lengths) + 2 if periodic else 0)) if onsets is None else onsets
  return types.SimpleNamespace(periodic=periodic, period_lengths=lambda: list(lengths),
                               onsets=onsets)


def _members(*names, **overrides):
  return [claims.Member(n, {k: v[i] for k, v in overrides.items()}, ()) for i, n in
          enumerate(names)]


def test_sweep_claims_need_every_seed():
  members = _members("a", "b", "c", "d", **{"optim.lr": [0.01, 0.1, 1.0, 3.0]})
  no, fast, slow = _found(False), _found(True, (20, 10)), _found(True, (40, 30))
  found = {"a": [no, no], "b": [slow, slow], "c": [fast, fast], "d": [no, no]}
  assert claims.MIDDLE_RANGE.test(members, found)
  assert claims.MORE_FREQUENT.test(members, found)  # means 35, 35 > 15, 15
  edge = {**found, "a": [no, slow]}  # the smallest value periodic in seed 1
  assert not claims.MIDDLE_RANGE.test(members, edge)
  gap = {**found, "c": [fast, no], "d": [no, fast]}  # seed 1 not contiguous
  assert not claims.MIDDLE_RANGE.test(members, gap)
  overlap = {**found, "c": [fast, _found(True, (50, 30))]}  # seed ranges 35-35 and 15-40
  assert not claims.MORE_FREQUENT.test(members, overlap)
  one_period = {**found, "c": [fast, _found(True, (20,))]}  # c leaves: one member remains
  assert not claims.MORE_FREQUENT.test(members, one_period)


def test_product_claims():
  members = _members("p1_ratio_0", "p1_ratio_1", "p3_ratio_0", "p3_ratio_1", "p3_rescaled_0",
                     **{"optim.lr": [0.1, 0.01, 0.1, 0.01, 0.1],
                        "optim.wd": [0.01, 0.1, 0.03, 0.3, 0.03]})
  found = {"p1_ratio_0": [_found(True, (60, 60))], "p1_ratio_1": [_found(True, (80, 80))],
           "p3_ratio_0": [_found(True, (30, 30))], "p3_ratio_1": [_found(True, (40, 40))],
           "p3_rescaled_0": [_found(False)]}  # not a ratio member: never judged
  assert claims.SIMILAR_PERIODS.test(members, found)  # 80 / 60 and 40 / 30 <= 1.5
  assert claims.LARGER_PRODUCT.test(members, found)  # 30, 40 < 60, 80
  wide = {**found, "p1_ratio_1": [_found(True, (91, 91))]}  # 91 / 60 > 1.5
  assert not claims.SIMILAR_PERIODS.test(members, wide)
  crossing = {**found, "p3_ratio_1": [_found(True, (61, 61))]}
  assert not claims.LARGER_PRODUCT.test(members, crossing)
  one_spike = {**found, "p1_ratio_0": [_found(False, onsets=[3])]}  # no period: infinite
  assert claims.LARGER_PRODUCT.test(members, one_spike)
  assert not claims.SIMILAR_PERIODS.test(members, one_spike)


def _run(seed, loss, elr=None):
  series = {"epoch": np.arange(1.0, len(loss) + 1), "train_loss": np.asarray(loss, float)}
  if elr is not None:
    series["effective_lr"] = np.asarray(elr, float)
  return recount.Run(f"r_s{seed}", seed, {}, series)


def test_rescaled_init_claim_compares_each_seed_with_its_reference_before_any_onset():
  elr = 0.002 * 1.02 ** np.arange(60.0)
  ref = claims.Member("p1_ratio_1", {"optim.lr": 0.1, "optim.wd": 0.01},
                      (_run(0, [1] * 60, elr), _run(1, [1] * 60, 1.1 * elr)))

  def rescaled(*factors):  # lr 0.4 at init x2: lr_ref = 0.4 / 4 = 0.1
    return claims.Member("p1_rescaled_0", {"optim.lr": 0.4, "optim.wd": 0.0025,
                                           "model.init_scale": 2.0},
                         tuple(_run(k, [1] * 60, f * (1.0 + k / 10) * elr)
                               for k, f in enumerate(factors)))

  onsets = {"p1_ratio_1": [_found(True, onsets=[40]), _found(True, onsets=[30])]}
  close = rescaled(1.009, 0.991)  # within 1% of its own seed's reference
  assert claims.RESCALED_INIT.test([ref, close], {**onsets, close.name: onsets["p1_ratio_1"]})
  off = rescaled(1.0, np.where(np.arange(60) < 25, 1.0, 1.02))  # seed 1 parts at epoch 26
  assert not claims.RESCALED_INIT.test([ref, off], {**onsets, off.name: onsets["p1_ratio_1"]})
  after = rescaled(1.0, np.where(np.arange(60) < 30, 1.0, 1.5))  # parts at seed 1's onset
  assert claims.RESCALED_INIT.test([ref, after], {**onsets, after.name: onsets["p1_ratio_1"]})
  early = {**onsets, close.name: [_found(True, onsets=[40]), _found(True, onsets=[9])]}
  assert not claims.RESCALED_INIT.test([ref, close], early)  # 9 epochs: too few to compare
  ref_early = {"p1_ratio_1": [_found(True, onsets=[40]), _found(True, onsets=[20])],
               after.name: [_found(True, onsets=[40]), _found(True, onsets=[50])]}
  assert claims.RESCALED_INIT.test([ref, after], ref_early)  # the reference's onset ends it
  ref_late = {"p1_ratio_1": [_found(True, onsets=[40]), _found(True, onsets=[50])],
              after.name: ref_early[after.name]}
  assert not claims.RESCALED_INIT.test([ref, after], ref_late)  # parts at 31 < 50
  other_seeds = claims.Member(close.name, close.overrides, (close.runs[0], recount.Run(
      "p1_rescaled_0_s2", 2, {}, close.runs[1].series)))
  assert not claims.RESCALED_INIT.test([ref, other_seeds], {
      **onsets, close.name: onsets["p1_ratio_1"]})  # seeds 0, 2 against 0, 1
  other_ref = claims.Member("p1_ratio_1", {"optim.lr": 0.2, "optim.wd": 0.005}, ref.runs)
  no_ref = {**onsets, close.name: onsets["p1_ratio_1"]}
  assert not claims.RESCALED_INIT.test([other_ref, close], no_ref)  # none at lr_ref 0.1


def test_effective_lr_and_last_layer_claims():
  elr = np.concatenate([np.full(101, 9.0), np.linspace(1.0, 2.0, 101)])  # 2nd half: 1..2
  a = claims.Member("p1_ratio_0", {"optim.lr": 0.1, "optim.wd": 0.01}, (_run(0, [1], elr),))
  b = claims.Member("p1_ratio_1", {"optim.lr": 0.01, "optim.wd": 0.1}, (_run(0, [1], 2 * elr),))
  assert claims.elr_quantiles(a) == pytest.approx((1.05, 1.95), rel=1e-3)
  assert claims.SIMILAR_ELR.test([a, b], {})  # ratios exactly 2
  c = claims.Member(b.name, b.overrides, (_run(0, [1], 2.1 * elr),))
  assert not claims.SIMILAR_ELR.test([a, c], {})
  small = claims.Member("norm_1", {}, (_run(0, [2.0, 0.3]),))
  large = claims.Member("norm_10", {}, (_run(0, [2.0, 0.03]),))
  found = {"norm_1": [_found(False, onsets=[5])], "norm_10": [_found(True, (20,))]}
  assert claims.SMALL_LAST_LAYER.test([small, large], found)  # 0.3 >= 10 x 0.03
  lower = claims.Member("norm_10", {}, (_run(0, [2.0, 0.031]),))
  assert not claims.SMALL_LAST_LAYER.test([small, lower], found)
  spiky = {**found, "norm_1": [_found(True, (20,))]}
  assert not claims.SMALL_LAST_LAYER.test([small, large], spiky)


def test_gd_claims():
  members = _members("lr_0p1", "lr_0p5", "fixed_init_x1", "regular_before",
                     **{"optim.lr": [0.1, 0.5, 0.5, 0.5],
                        "optim.fix_si_norm": [False, False, True, False]})
  found = {"lr_0p1": [_found(False)], "lr_0p5": [_found(True, (100,))],
           "fixed_init_x1": [_found(False, onsets=[])],
           "regular_before": [_found(False, onsets=[9])]}
  assert claims.GD_PERIODIC.test(members, found) and claims.FIXED_NORM.test(members, found)
  spiking = {**found, "fixed_init_x1": [_found(False, onsets=[7])]}
  calm = {**found, "regular_before": [_found(False, onsets=[])]}
  assert not claims.FIXED_NORM.test(members, spiking)
  assert not claims.FIXED_NORM.test(members, calm)
  assert not claims.GD_PERIODIC.test(members, {**found, "lr_0p5": [_found(False, onsets=[4])]})


def test_regime_claims(monkeypatch):
  monkeypatch.setattr(claims, "regime", lambda run: run.name)  # each run names its regime
  c, e, d = "convergence", "chaotic equilibrium", "divergence"

  def members(*by_elr):  # by_elr: one tuple of regimes (per seed) per ELR, in ELR order
    return [claims.Member(f"elr_{k}", {"optim.lr": 10.0 ** k},
                          tuple(types.SimpleNamespace(name=r) for r in seeds))
            for k, seeds in enumerate(by_elr)]

  good = members((c, c), (c, e), (e, e), (d, d))
  assert claims.THREE_REGIMES.test(good, {}) and claims.REGIMES_ORDERED.test(good, {})
  no_chaos = members((c, c), (c, e), (d, d), (d, d))  # seed 0 never chaotic
  assert not claims.THREE_REGIMES.test(no_chaos, {}) and claims.REGIMES_ORDERED.test(no_chaos, {})
  back = members((c, c), (e, e), (c, e), (d, d))  # seed 0 converges above a chaotic ELR
  assert claims.THREE_REGIMES.test(back, {}) and not claims.REGIMES_ORDERED.test(back, {})


def test_verdicts_name_the_variants_that_flip_them():
  members = _members("a", "b", "c", **{"optim.lr": [0.1, 1.0, 3.0]})
  middle = {"a": [_found(False)], "b": [_found(True, (9, 9))], "c": [_found(False)]}
  edge = {**middle, "a": [_found(True, (9, 9))]}
  by_variant = {"default": middle, "rise halved": middle, "rise doubled": edge}
  assert recount.verdict(claims.MIDDLE_RANGE, members, by_variant) == (
      "**held, fragile**: flips with rise doubled (1 of 2)")
  assert recount.verdict(claims.MIDDLE_RANGE, members, {"default": edge, "x": edge}) == (
      "**not shown** (under all 1 variants)")
  names = [name for name, _ in recount.variants()]
  assert len(names) == 15 and names[0] == "default" and names[1] == "rise halved"


def _family(tmp_path, losses_by_run):
  root = tmp_path / "lr_sweep"
  root.mkdir()
  members = []
  for name, (lr, losses) in losses_by_run.items():
    (root / name).mkdir()
    (root / name / "config.json").write_text(json.dumps({"data": {"name": "digits"},
                                                         "train": {"epochs": 40}}))
    (root / name / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e + 1, "train_loss": v, "weight_norm": 2.0 - 1e-3 * e,
                    "loss": None, "phase": "A"}) + "\n" for e, v in enumerate(losses)))
    members.append({"name": name, "overrides": {"optim.lr": lr, "seed": int(name[-1])}})
  members.append({"name": "lr_9_s0", "overrides": {"optim.lr": 9.0, "seed": 0}})  # untrained
  (root / "family.json").write_text(json.dumps({"members": members}))
  return str(root)


def test_export_keeps_what_the_recount_reads_and_renders_it(tmp_path):
  flat = [2.3, 1.0, 0.3] + [0.01 * (1 + 0.1 * (e % 2)) for e in range(37)]
  root = _family(tmp_path, {"lr_0p1_s0": (0.1, flat), "lr_0p1_s1": (0.1, flat[:30]),
                            "lr_1_s0": (1.0, [2.3] * 40), "lr_1_s1": (1.0, [2.3] * 39)})
  (pathlib.Path(root) / "lr_0p1_s1" / "diverged.json").write_text("{}")  # stopped: kept
  out = tmp_path / "data" / "lr_sweep.json.gz"
  out.parent.mkdir()
  assert recount.export(root, str(out)) == 3  # lr_1_s1, 39 of 40 epochs, is still training
  family, members = recount.load(str(out))
  assert family == "lr_sweep" and [m.name for m in members] == ["lr_0p1", "lr_1"]
  run = members[0].runs[1]
  assert (run.name, run.seed, sorted(run.series)) == ("lr_0p1_s1", 1, ["epoch", "train_loss",
                                                                       "weight_norm"])
  assert run.series["train_loss"][-2] == 0.011 and len(run.series["epoch"]) == 30
  assert run.options == {"reference": pytest.approx(np.log(10)), "norm": "auto",
                         "loss_key": "train_loss"}
  text = recount.render(str(out.parent))
  assert "| lr_0p1 | 0 of 2 | 0, 0 | - | 0-0 |" in text
  assert "| lr_1 | 0 of 1 | 0 | - | 0-0 |" in text
  assert "Periodic behavior for a middle range" in text and "**not shown** (under all 14" in text


def _report() -> str:
  with open(os.path.join(ROOT, "docs", "reproduction.md")) as f:
    return f.read()


def _report_block(tag: str) -> str:
  """The text between docs/reproduction.md's markers of ``tag`` (``logs.replace_doc_block``'s)."""
  return _report().split(f"<!-- {tag}:start -->\n", 1)[1].split(f"\n<!-- {tag}:end -->", 1)[0]


def test_the_report_recount_block_is_rendered_from_the_committed_data():
  assert _report_block("recount") == recount.render(os.path.join(ROOT, "docs", "data", "recount"))


def test_sphere_bridge_boundaries_and_rows(tmp_path, monkeypatch):
  regimes = [(0.01, "convergence"), (0.01, "convergence"), (0.03, "convergence"),
             (0.03, "chaotic equilibrium"), (0.1, "chaotic equilibrium"), (0.3, "divergence")]
  members = [{"overrides": {"optim.lr": lr}, "regime": r} for lr, r in regimes]
  (tmp_path / "summary.json").write_text(json.dumps({"members": members}))
  assert sphere_bridge.boundaries(str(tmp_path)) == {
      "convergence": [0.01], "mixed": [0.03], "chaotic equilibrium": [0.1], "divergence": [0.3]}
  monkeypatch.setattr(sphere_bridge, "run_levels", lambda run: ([0.005, 0.02], (0.001, 0.02)))
  lines = sphere_bridge.bridge_lines(str(tmp_path), ["runs/lr_0p1/"])
  assert lines[0] == (f"Sphere ({tmp_path}): convergence up to ELR 0.01, chaotic equilibrium "
                      "at 0.1, divergence from 0.3.")
  assert lines[-1] == "| lr_0p1 | 2 | 0.005, 0.02 | 1 of 2 | 0.001 .. 0.02 |"


def _write_run(path, losses):
  path.mkdir()
  path.joinpath("metrics.jsonl").write_text(
      "".join(json.dumps({"epoch": e + 1, "loss": v}) + "\n" for e, v in enumerate(losses)))
  return str(path)


def test_reproduction_claim_lines(tmp_path):
  members = [{"label": "lr 1", "periodic": False, "reason": "never converged", "periods": []},
             {"label": "lr 0.1", "periodic": True, "reason": "",
              "periods": [{"length": 30.0, "complete": True}, {"length": 20.0, "complete": True},
                          {"length": 5.0, "complete": False}]},
             {"label": "lr 0.01", "periodic": False, "reason": "converged", "periods": []}]
  s = {"members": members}
  assert reproduction.sweep_claim_lines(s) == [
      "  periodic members: ['lr 0.1']; contiguous middle range: True",
      "  lr 1: never converged", "  lr 0.01: converged"]
  assert reproduction.period_length_lines(s) == ["  lr 0.1: period lengths [20.0]"]
  a = _write_run(tmp_path / "a", [2.0, 1.1, 0.5])
  b = _write_run(tmp_path / "b", [1.0, 1.0])
  # |a / 2 - b| / |b| at epochs 1 and 2 (b stops there)
  assert reproduction.relative_differences(a, b, "loss", scale=2.0) == (
      "epoch 1: 0.0e+00, epoch 2: 4.5e-01")
  r = {k: [0.5, 1.0] for k in reproduction.MINIMA_KEYS}
  r["checkpoints"] = [{"run": "a", "period": 1, "epoch": 40, "test_error": 0.012345}]
  lines = reproduction.minima_lines(r)
  assert lines[1] == "  within_run_cosine: mean 0.7500, min 0.5000, max 1.0000 (2)"
  assert lines[-1] == "  single models: [('a', 1, 40, 0.0123)]"


def test_period_lines_per_phase():
  t = np.arange(40.0)
  steps = {"step": t, "epoch": t // 10 + 1, "loss": t / 100, "weight_norm": 1 + t,
           "effective_lr": 0.1 / (1 + t) ** 2, "cosine_distance": np.full(40, 2e-3)}
  p = phases.Period(index=1, start=1, end=4, complete=True, c=(1, 2), a=(2, 3), b=(3, 4),
                    stats={})
  lines = period_steps.phase_lines(steps, p, np.array([0, 10, 20, 30, 40]))
  assert lines[0] == ("phase C: steps 10..19: loss 0.145 (median), rho 11 -> 20, effective LR "
                      "0.000826 -> 0.00025, median 1-cos 0.002")
  assert [line[:22] for line in lines[1:]] == ["phase A: steps 20..29:", "phase B: steps 30..39:"]
  # angular updates 0.5x, 1x and 2x the equilibrium sqrt(2 eta lam) in C, A and B
  lr, wd = 0.1, 0.01
  angle = np.sqrt(2 * lr * wd) * np.repeat([0.5, 1.0, 2.0], [10, 10, 20])
  steps["cosine_distance"] = 1 - np.cos(angle)
  lines = period_steps.equilibrium_lines(steps, t0=0, b_start=20, b_end=39, lr=lr, wd=wd)
  head = "angular update / sqrt(2 eta lam) median"
  assert lines == [f"phase C (steps 0..9): {head} 0.5, range 0.5..0.5",  # the epoch of t0
                   f"phase A (steps 10..19): {head} 1, range 1..1",
                   f"phase B (steps 20..39): {head} 2, range 2..2"]


def test_phase_b_analysis_rejects_a_fit_fraction_outside_zero_one(tmp_path):
  with pytest.raises(ValueError, match="fit_fraction must be in"):
    period_steps.phase_b_analysis(str(tmp_path), fit_fraction=0.0)


def test_the_report_theory_claims_block_is_rendered_by_code():
  assert _report_block("theory_claims") == theory_claims.render()


def test_theory_claims_fail_where_their_criteria_do():
  fig9 = theory_claims.fig9_numbers()
  assert (fig9["enter"], fig9["bounded"]) == (18, True)
  assert fig9["low"] == pytest.approx(10 ** 0.5) and fig9["high"] == pytest.approx(10.0)
  assert not theory_claims.fig9_claim({**fig9, "enter": 50})[2]
  assert not theory_claims.fig9_claim({**fig9, "bounded": False})[2]
  toy = theory_claims.toy_numbers()
  assert toy["final_loss"] < 1e-18 and toy["elr_rises"] == 0 and toy["minima"] == 22
  assert not theory_claims.toy_claim({**toy, "elr_rises": 1})[2]
  assert not theory_claims.toy_claim({**toy, "gap_max": 34})[2]  # 34 > 1.2 x 28
  assert not theory_claims.toy_claim({**toy, "least_rise": 9.0})[2]
  assert theory_claims._rise(np.array([5.0, 1.0, 0.1, 0.3])) == pytest.approx(3.0)  # not 50


def test_theory_claims_that_never_settle_are_not_shown_rather_than_errors(monkeypatch):
  monkeypatch.setitem(theory_claims.FIG9, "x0", 1e30)  # far above: never inside by t = 150
  n = theory_claims.fig9_numbers()
  assert n["enter"] == 151 and np.isnan(n["min_after"])
  assert not theory_claims.fig9_claim(n)[2]


def test_the_report_periods_block_is_rendered_from_the_committed_data():
  assert _report_block("periods") == period_claims.render(
      os.path.join(ROOT, "docs", "data", "periods"))


def test_the_report_types_no_table_and_no_verdict_outside_its_blocks():
  """Every table and verdict of docs/reproduction.md is between a block's markers."""
  doc = _report()
  outside = re.sub(r"<!-- (\w+):start -->.*?<!-- \1:end -->", "", doc, flags=re.S)
  assert {"recount", "periods", "theory_claims"} <= set(re.findall(r"<!-- (\w+):start", doc))
  tables = [line for line in outside.splitlines() if line.lstrip().startswith("|")]
  verdicts = re.findall(r"\*\*\s*(held|not\s+shown|partly|no\s+verdict|cannot\s+be\s+decided)"
                        r"\b[^*]*\*\*", outside)
  assert not tables and not verdicts, (tables[:3], verdicts[:3])


def _period(phases_values, inside=0.9, cos_ratio=1.5):
  return {"phases": phases_values, "inside": inside, "cos_ratio": cos_ratio}


def test_period_claims_fail_where_their_criteria_do():
  good = {"C": {"rho": (1.0, 6.0), "elr": (0.05, 0.003), "cos": 6e-4},
          "A": {"rho": (6.0, 5.0), "elr": (0.003, 0.004), "cos": 2e-4},
          "B": {"rho": (5.0, 3.0), "elr": (0.004, 0.01), "cos": 3e-6}}
  assert period_claims.THREE_PHASES.holds([_period(good)] * 3)
  for phase, key, value in (("C", "rho", (6.0, 1.0)), ("C", "elr", (0.003, 0.05)),
                            ("B", "rho", (3.0, 5.0)), ("B", "elr", (0.01, 0.004)),
                            ("B", "cos", 3e-4)):
    bad = {**good, phase: {**good[phase], key: value}}
    assert not period_claims.THREE_PHASES.holds([_period(good), _period(bad)])
  assert not period_claims.THREE_PHASES.holds([_period({"C": good["C"], "B": good["B"]})])
  assert not period_claims.THREE_PHASES.holds([])
  assert period_claims.BOUNDS_HELD_OUT.holds([_period(good, inside=0.8)])
  assert not period_claims.BOUNDS_HELD_OUT.holds([_period(good), _period(good, inside=0.79)])
  assert not period_claims.COS_GROWS.holds([_period(good), _period(good, cos_ratio=0.99)])


def test_minima_claim_reads_the_reference_runs_periods():
  # the reference run's minima at periods 0-4, then the independent run's at 0-1
  runs = [("seed_2", k) for k in range(5)] + [("seed_0", 0), ("seed_0", 1)]
  n = len(runs)
  cosine = np.eye(n)
  for i, j in itertools.combinations(range(5), 2):
    cosine[i, j] = cosine[j, i] = 0.9 - 0.2 * abs(runs[i][1] - runs[j][1])
  result = {"checkpoints": [{"run": r, "period": k, "epoch": 10 * k, "test_error": 0.01}
                            for r, k in runs],
            "cosine": cosine.tolist(), "independent_cosine": [0.01, 0.02]}
  numbers = period_claims.minima_numbers(result)
  assert (numbers["reference"], numbers["other"], numbers["minima"]) == ("seed_2", "seed_0", 7)
  # periods 1-4 (the warm-up left out): adjacent pairs 3 at 0.7, three apart 1 at 0.3
  assert numbers["adjacent"] == pytest.approx([0.7] * 3)
  assert numbers["apart"] == pytest.approx([0.3])
  assert period_claims.MINIMA_APART.holds([numbers])
  assert not period_claims.MINIMA_APART.holds([{**numbers, "apart": [0.8]}])
  assert not period_claims.MINIMA_APART.holds([{**numbers, "independent": [0.01, 0.1]}])
  assert not period_claims.MINIMA_APART.holds([{**numbers, "apart": []}])


def _onsets(*epochs, last=300):
  return types.SimpleNamespace(x=np.arange(1.0, last + 1), destabilizations=list(epochs),
                               onsets=[int(e) - 1 for e in epochs], periodic=len(epochs) >= 2)


def test_schedules_claim_needs_a_late_constant_run_and_quiet_decaying_ones():
  members = _members("constant", "cosine", "linear", "step")
  found = {"constant": [_onsets(45, 120, 277), _onsets(50, 230)],
           "cosine": [_onsets(45, 81), _onsets(50)], "linear": [_onsets(45, 216), _onsets()],
           "step": [_onsets(45, 67), _onsets(50)]}
  assert claims.SCHEDULES_HIDE.test(members, found)
  # the constant run quiet after epoch 225 (0.75 of 300) in seed 1
  assert not claims.SCHEDULES_HIDE.test(members, {**found, "constant": [
      found["constant"][0], _onsets(50, 225)]})
  # a decaying schedule destabilizing in the last quarter, or as often as the constant one
  assert not claims.SCHEDULES_HIDE.test(members, {**found, "linear": [_onsets(45, 226),
                                                                      _onsets()]})
  assert not claims.SCHEDULES_HIDE.test(members, {**found, "cosine": [_onsets(1, 2, 3),
                                                                      _onsets(50)]})
  # a missing member or seed
  assert not claims.SCHEDULES_HIDE.test(members, {k: v for k, v in found.items() if k != "step"})
  assert not claims.SCHEDULES_HIDE.test(members, {**found, "step": [_onsets(45)]})


def test_transformer_variant_claims():
  members = [claims.Member("qk_norm", {"model.name": "transformer_qknorm"}, ()),
             claims.Member("fixed_norm", {"optim.fix_si_norm": True}, ())]
  found = {"qk_norm": [_onsets(100, 160), _onsets(110, 200)],
           "fixed_norm": [_onsets(), _onsets()]}
  assert claims.QK_NORM.test(members, found) and claims.FIXED_NORM.test(members, found)
  assert not claims.QK_NORM.test(members, {**found, "qk_norm": [_onsets(100, 160), _onsets(9)]})
  assert not claims.FIXED_NORM.test(members, {**found, "fixed_norm": [_onsets(), _onsets(50)]})


def test_small_product_columns_read_each_onsets_norm_jump():
  rho = np.array([4.0, 3.0, 2.0, 2.2, 2.1, 1.5, 1.0, 1.0, 1.01])
  run = recount.Run("p1em4", 0, {}, {"epoch": np.arange(1.0, 10.0), "weight_norm": rho})
  member = claims.Member("p1em4", {"optim.lr": 0.01, "optim.wd": 0.01}, (run,))
  found = [_onsets(3, 8)]
  found[0].onsets = [2, 7]  # the samples of epochs 3 and 8
  columns = dict(claims.FAMILIES["lr_wd_small_products"].columns)
  assert columns["lr x wd"](member, found) == "0.0001"
  assert columns["epochs run"](member, found) == "9"
  assert columns["first destabilization"](member, found) == "3"
  # epoch 3: max(2, 2.2, 2.1) / 3 - 1 = -27%; epoch 8: max(1, 1.01) / 1 - 1 = 1%
  assert columns["norm jump at each onset"](member, found) == "-27%, 1%"
