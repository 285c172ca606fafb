"""Period and phase detection on traces with known periods, on 'no periods' runs, and on
the toy SI function of appendix E."""

import json

import numpy as np
import pytest

from si_jax import phases, toy


def synthetic_run(onsets, n=400, noise=0.0, seed=0, floor=1e-4):
  """Per-epoch traces with destabilizations at the given 0-based sample indices.

  After each onset: 2 samples of spike (phase C: the loss jumps to ~1, the norm up by
  60%), an exponential fall of the loss (A) to ``floor`` where it stays (B) while the
  norm decays by 1% per sample. Multiplicative log-normal noise of ``noise`` decades.
  """
  rng = np.random.default_rng(seed)
  loss, rho = np.empty(n), np.empty(n)
  starts = [0, *onsets]
  level, r = 2.0, 5.0
  for i in range(n):
    if i in onsets:
      r *= 1.6
      since = 0
    else:
      since = i - max(s for s in starts if s <= i)
      r *= 0.99
    peak = 2.0 if i < (onsets[0] if onsets else n) else 1.0
    spike = 2 if i >= (onsets[0] if onsets else n) else 0
    if since < spike:
      level = peak
    else:
      level = max(floor, peak * 0.5 ** (since - spike))
    loss[i] = level * 10 ** (noise * rng.standard_normal())
    rho[i] = r
  epoch = np.arange(1, n + 1, dtype=float)
  return {"train_loss": loss, "loss": loss, "weight_norm": rho, "epoch": epoch,
          "step": epoch * 12, "effective_lr": 0.1 / rho**2,
          "effective_grad_norm": np.sqrt(loss) * 3, "test_error": 0.1 + 0.2 * loss / 2}


@pytest.mark.parametrize("noise", [0.0, 0.15])
def test_known_periods_are_found_exactly(noise):
  onsets = [60, 95, 140, 170, 230, 290]
  s = synthetic_run(onsets, noise=noise, seed=1)
  a = phases.analyze(s)
  assert a.periodic, a.reason
  assert a.onsets == onsets
  assert a.destabilizations == [o + 1.0 for o in onsets]  # epochs are 1-based
  assert a.period_lengths() == [35.0, 45.0, 30.0, 60.0, 60.0]
  assert [p.stats["steps"] for p in a.periods[1:-1]] == [12 * 35, 12 * 45, 12 * 30, 12 * 60, 12 * 60]
  assert [p.complete for p in a.periods] == [True] * 6 + [False]
  # phases tile each period: C from the onset to the loss peak, then A, then B
  for p in a.periods[1:]:
    assert p.c[0] == p.start and p.c[1] == p.a[0] and p.a[1] == p.b[0] and p.b[1] == p.end
    assert 1 <= p.c[1] - p.c[0] <= 3
    # the loss halves per sample from ~1 to 1e-4: A ends within a decade of the floor
    assert p.a[1] - p.a[0] == pytest.approx(10, abs=3)
  p = a.periods[2]
  bounds = a.summary()["periods"][2]["phases"]
  assert bounds["C"][0] == 96.0 and bounds["B"][1] == 140.0  # epochs: onset .. before the next
  assert bounds["C"][1] + 1 == bounds["A"][0] and bounds["A"][1] + 1 == bounds["B"][0]
  assert p.stats["weight_norm_max"] == pytest.approx(s["weight_norm"][95], rel=1e-12)
  assert p.stats["weight_norm_min"] == pytest.approx(s["weight_norm"][139], rel=1e-12)
  assert p.stats["effective_lr_max"] == pytest.approx(0.1 / s["weight_norm"][139] ** 2)
  assert p.stats["min_loss"] == pytest.approx(s["train_loss"][95:140].min())
  assert p.stats["min_test_error"] == pytest.approx(0.1 + 0.1 * s["train_loss"][95:140].min())


def test_too_small_learning_rate_has_no_periods():
  s = synthetic_run([], noise=0.1)
  a = phases.analyze(s)
  assert not a.periodic and a.onsets == []
  assert "never destabilized" in a.reason
  assert "no periodic behavior" in a.describe()
  assert len(a.periods) == 1 and not a.periods[0].complete


def test_too_large_learning_rate_has_no_periods():
  """A loss that never converges, however noisy (a third of a decade of noise here,
  with jumps of 10x and more between neighbours), has no destabilizations."""
  rng = np.random.default_rng(0)
  n = 300
  loss = 0.8 * 10 ** (0.33 * rng.standard_normal(n))
  assert (loss[1:] / loss[:-1]).max() > 10 and loss.max() / loss.min() > 100
  rho = 2 + rng.random(n)  # jumpy norm too
  a = phases.analyze({"loss": loss, "weight_norm": rho})
  assert not a.periodic and a.onsets == []
  assert "never converged" in a.reason
  p = a.periods[0]
  assert p.c[1] == p.c[0] and p.a[1] == p.a[0] and p.b[1] == p.b[0]  # no phases to shade


def test_loss_bumps_without_a_norm_jump_are_noise():
  s = synthetic_run([100, 200], noise=0.0)
  s["train_loss"][150] = 100 * s["train_loss"][149]  # a bump while the norm keeps decaying
  a = phases.analyze(s)
  assert a.onsets == [100, 200]
  bare = phases.analyze({"loss": s["train_loss"]})  # no norm: the bump counts
  assert bare.onsets == [100, 150, 200]


def test_one_destabilization_is_not_called_periodic():
  a = phases.analyze(synthetic_run([150]))
  assert a.onsets == [150] and not a.periodic and "only 1" in a.reason


def test_a_double_humped_spike_counts_once():
  loss = np.array([2.0, 0.5, 0.1, 0.01, 0.001, 0.5, 0.8, 0.05, 0.001, 0.0005, 0.2, 0.01])
  assert phases.find_destabilizations({"loss": loss}) == [6, 11]
  humped = np.array([2.0, 0.1, 1e-3, 1e-4, 0.05, 0.03, 0.6, 0.5, 1e-2, 1e-3, 1e-4])
  assert phases.find_destabilizations({"loss": humped}) == [5]


def test_toy_function_periods_match_its_norm_jumps():
  """GD on f(x, y) = x^2 / (x^2 + y^2) with weight decay (Fig. 14): one destabilization
  per jump of the weight norm, periods of ~28 steps, none without weight decay."""
  trace = toy.gradient_descent(wd=0.01, steps=2000)
  s = {k: v for k, v in trace.items() if k != "w"}
  a = phases.analyze(s)
  rho = s["weight_norm"]
  # norm-jump episodes: maximal runs of increasing rho
  rising = rho[1:] > rho[:-1]
  episodes = np.flatnonzero(rising & ~np.r_[False, rising[:-1]])
  assert len(a.onsets) == len(episodes) == 72
  # every onset sits inside its rise of the norm (before the norm has peaked)
  for onset, start in zip(a.onsets, episodes):
    assert start - 10 <= onset <= start + 10
  lengths = np.array(a.period_lengths())
  assert lengths.min() >= 27 and lengths.max() <= 28
  plain = phases.analyze({k: v for k, v in toy.gradient_descent(wd=0.0, steps=2000).items()
                          if k != "w"})
  assert not plain.periodic and "never destabilized" in plain.reason


def test_per_step_traces_need_smoothing_and_get_it():
  """Per-step batch losses: with a median over an epoch's steps the per-step trace
  gives the same destabilizations (in steps) as the per-epoch one."""
  s = synthetic_run([80, 160, 240], n=320, noise=0.0)
  steps_per_epoch = 8
  loss = np.repeat(s["loss"], steps_per_epoch)
  rng = np.random.default_rng(3)
  step_series = {"loss": loss * 10 ** (0.3 * rng.standard_normal(len(loss))),
                 "weight_norm": np.repeat(s["weight_norm"], steps_per_epoch),
                 "step": np.arange(len(loss), dtype=float),
                 "epoch": np.repeat(np.arange(320.0), steps_per_epoch)}
  a = phases.analyze(step_series, smooth=steps_per_epoch, confirm=2 * steps_per_epoch)
  assert a.periodic
  assert [o // steps_per_epoch for o in a.onsets] == [80, 160, 240]
  assert all(abs(o - steps_per_epoch * e) <= steps_per_epoch // 2
             for o, e in zip(a.onsets, [80, 160, 240]))


def test_bad_parameters_are_refused():
  with pytest.raises(ValueError, match="ratio"):
    phases.analyze(synthetic_run([50, 100]), ratio=1.0)


def test_chance_level_reference_for_runs_that_learn_fast(tmp_path):
  """A run whose first logged loss is already low (it learned most in epoch 1) still
  converged once 100x below chance, ln(10); its spikes then count."""
  s = synthetic_run([100, 200], noise=0.0, floor=5e-3)
  s["train_loss"] = np.minimum(s["train_loss"], 0.3)  # never above 0.3: 5e-3 is < 100x below
  assert phases.analyze(s).onsets == []
  assert phases.analyze(s, reference_loss=np.log(10)).onsets == [100, 200]
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text('{"data": {"name": "cifar100"}}')
  keys = ("epoch", "step", "train_loss", "loss", "weight_norm")
  (run / "metrics.jsonl").write_text("".join(
      json.dumps({k: float(s[k][i]) for k in keys}) + "\n" for i in range(len(s["epoch"]))))
  assert phases.chance_loss(str(run)) == pytest.approx(np.log(100))
  assert phases.analyze_run(str(run)).onsets == [100, 200]
