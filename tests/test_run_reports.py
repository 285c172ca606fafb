"""The reports the launchers print or write into docs/: the detector recount's claims, the
sphere bridge's regime boundaries, the reproduction report's claim lines and one period's
per-phase lines, on inputs built by hand."""

import json
import types

import numpy as np
import pytest

from si_jax.analysis import period_steps, phases, recount, reproduction, sphere_bridge


def _found(periodic, lengths=()):
  return types.SimpleNamespace(periodic=periodic, period_lengths=lambda: list(lengths))


def test_recount_claims_and_their_fragility():
  values = [0.01, 0.1, 1.0, 3.0]
  middle = [_found(False), _found(True, (40, 30)), _found(True, (20, 10)), _found(False)]
  assert recount.periodic_middle_range(values, middle)
  assert recount.more_frequent_when_larger(values, middle)  # means 35 > 15
  edge = [_found(True, (40, 30))] + middle[1:]  # the smallest value periodic too
  assert not recount.periodic_middle_range(values, edge)
  gap = [middle[0], middle[1], _found(False), _found(True)]  # not contiguous
  assert not recount.periodic_middle_range(values, gap)
  slower = [middle[0], _found(True, (10, 10)), _found(True, (20, 30)), middle[3]]
  assert not recount.more_frequent_when_larger(values, slower)
  names = [name for name, _ in recount.variants()]
  assert len(names) == 15 and names[0] == "default" and names[1].endswith(" halved")
  by_variant = {"default": middle, "rise halved": middle, "rise doubled": edge}
  assert recount.verdict(recount.periodic_middle_range, values, by_variant) == (
      "**held, fragile**: flips with rise doubled (1 of 14)")
  line = recount.claim_line(recount.periodic_middle_range, values, {"default": middle})
  assert line.startswith("* periodic behavior for a middle range of the swept value (F.2, "
                         "F.3). Criterion: at least one member is periodic")
  assert line.endswith("**held** (under all 14 variants)")


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
