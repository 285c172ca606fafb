"""Period and phase detection on traces with known periods, on 'no periods' runs, and on
the toy SI function of appendix E."""

import json
import pathlib

import numpy as np
import pytest

from si_jax.analysis import phases, toy


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
  assert [p.stats["steps"] for p in a.periods[1:-1]] == [12 * n for n in (35, 45, 30, 60, 60)]
  assert [p.complete for p in a.periods] == [True] * 6 + [False]
  # phases tile each period: C from the onset to the loss peak, then A, then B
  for p in a.periods[1:]:
    assert p.c[0] == p.start and p.c[1] == p.a[0] and p.a[1] == p.b[0] and p.b[1] == p.end
    if noise == 0:
      # the loss is 1 at o, o + 1, o + 2 (C is the first of them: the peak), then 0.5**k at
      # o + 2 + k; A ends at the first sample within a decade of the floor 1e-4:
      # 0.5**k <= 1e-3 first at k = 10 (0.5**9 = 2.0e-3), i.e. at o + 12
      assert (p.c, p.a) == ((p.start, p.start + 1), (p.start + 1, p.start + 12))
    else:
      assert 1 <= p.c[1] - p.c[0] <= 3
      assert p.a[1] - p.a[0] == pytest.approx(11, abs=3)
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


def test_a_loss_bump_while_the_norm_grows_is_not_phase_c():
  """Phase C follows phase B, in which the norm falls: a bump while the norm still
  grows (here by 1% per sample until sample 50, a 4% rise across the bump's window,
  above the 1.5% jump threshold) is not a destabilization."""
  s = synthetic_run([100, 200], noise=0.0)
  i = np.arange(100)
  rho = s["weight_norm"]
  rho[100:] *= 1.01**50 * 0.99**49 * 5.0 / rho[99]
  rho[:100] = 5.0 * 1.01 ** np.minimum(i, 50) * 0.99 ** np.maximum(i - 50, 0)
  s["train_loss"][40] = 100 * s["train_loss"][39]
  assert phases.analyze(s).onsets == [100, 200]


def test_noise_scales_and_thresholds():
  """``robust_scale`` is the standard deviation of a change (sigma sqrt(2) for white
  noise of sigma) whatever the trend, at any lag; the thresholds are 6 of it clipped
  to [ln 2, ln 10] (rise), 5 of it or ln 5 (convergence), and 1.5 x the norm's per-
  sample relative change or 1% (jump)."""
  rng = np.random.default_rng(0)
  white = rng.standard_normal(20000)
  for sigma in (0.02, 0.1, 0.5):
    assert phases.robust_scale(sigma * white) == pytest.approx(sigma * np.sqrt(2), rel=0.03)
  trend = 0.1 * white - 0.05 * np.arange(20000)  # an exponential fall of the loss
  assert phases.robust_scale(trend) == pytest.approx(phases.robust_scale(0.1 * white), rel=1e-6)
  assert phases.robust_scale(0.1 * white, lag=8) == pytest.approx(0.1 * np.sqrt(2), rel=0.03)
  assert phases.robust_scale(np.repeat([0.0, -1.0, -3.0], 100)) == 0.0
  assert phases.robust_scale(0.1 * white[:20]) == 0.0  # 18 second differences: too few
  rho = 5.0 * 0.99 ** np.arange(20000)
  quiet, mid, loud = (phases.thresholds(np.exp(sigma * white), rho) for sigma in (0.02, 0.1, 0.5))
  assert quiet.rise == pytest.approx(np.log(2)) and loud.rise == pytest.approx(np.log(10))
  assert mid.rise == pytest.approx(6 * 0.1 * np.sqrt(2), rel=0.03)
  assert mid.converge == pytest.approx(np.log(5))
  assert loud.converge == pytest.approx(5 * 0.5 * np.sqrt(2), rel=0.03)
  assert mid.jump == pytest.approx(1.5 * np.log(1 / 0.99), rel=1e-9)
  jump = phases.thresholds(np.exp(0.1 * white), np.full(20000, 5.0)).jump
  assert jump == pytest.approx(np.log(1.01))


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
  converged once ``converge_ratio`` (5x) below chance, ln(10); its spikes then count."""
  s = synthetic_run([100, 200], noise=0.0, floor=0.1)
  s["train_loss"] = np.minimum(s["train_loss"], 0.3)  # never above 0.3: 0.1 is 3x below
  assert phases.analyze(s).onsets == []
  assert "never converged" in phases.analyze(s).reason
  assert phases.analyze(s, reference_loss=np.log(10)).onsets == [100, 200]  # 23x below
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text('{"data": {"name": "cifar100"}}')
  keys = ("epoch", "step", "train_loss", "loss", "weight_norm")
  (run / "metrics.jsonl").write_text("".join(
      json.dumps({k: float(s[k][i]) for k in keys}) + "\n" for i in range(len(s["epoch"]))))
  assert phases.chance_loss(str(run)) == pytest.approx(np.log(100))
  assert phases.analyze_run(str(run)).onsets == [100, 200]


def graded_run(onsets, floors, n):
  """Noise-free per-epoch traces whose phase boundaries follow in closed form.

  Period 0: loss 2 * 0.5**i down to floors[0]. Period k >= 1 (onset o, the floor before
  it f' = floors[k - 1], its own floor f = floors[k]): 4 f', sqrt(4 f') and the peak 1
  at o, o + 1, o + 2, then 0.5**j at o + 2 + j down to f. The weight norm shrinks by 1%
  per sample except at o + 1 and o + 2, where it grows by 2% (a 4% jump in all).
  """
  loss, rho = np.empty(n), np.empty(n)
  r, start, k = 5.0, 0, 0
  for i in range(n):
    if i in onsets:
      start, k = i, onsets.index(i) + 1
    since = i - start
    if k == 0:
      loss[i] = max(floors[0], 2.0 * 0.5**i)
    elif since < 3:
      loss[i] = (4 * floors[k - 1], (4 * floors[k - 1]) ** 0.5, 1.0)[since]
    else:
      loss[i] = max(floors[k], 0.5 ** (since - 2))
    r *= 1.02 if k and since in (1, 2) else 0.99
    rho[i] = r
  epoch = np.arange(1, n + 1, dtype=float)
  return {"train_loss": loss, "weight_norm": rho, "epoch": epoch, "effective_lr": 0.1 / rho**2}


def test_phase_bounds_are_exact_on_a_noise_free_trace():
  """Every boundary at the sample its rule gives (worked out by hand below), so moving
  a rule's threshold by a decade moves a boundary: the onset (a rise of 2x, the floor of
  ``rise`` on a noise-free trace: 4 f' counts, 20x would first be met a sample or more
  later), the end of C (the peak), the end of A (a decade above the period's floor),
  convergence (5x below the largest loss, 2, and 40% of the way in decades from it down
  to the run's floor 1e-4: period 0's floor 0.02 is 100x below and 46.5% of the way),
  and the norm's answer (a 4% jump against a 1.5% threshold, 1.5 x its 1% per-sample
  change)."""
  onsets, floors = [40, 70, 110], [0.02, 1e-3, 1e-4, 1e-2]
  a = phases.analyze(graded_run(onsets, floors, 150))
  assert a.periodic, a.reason
  assert a.onsets == onsets
  p0, p1, p2, p3 = a.periods
  # period 0 falls 100x (2 -> 0.02), so A ends within a decade (half its height is one
  # too) of the floor: 2 * 0.5**4 = 0.125 <= 0.2 (0.25 at i = 3 is not)
  assert (p0.c, p0.a, p0.b) == ((0, 0), (0, 4), (4, 40))
  # C: onset .. the peak at o + 2. A: from o + 3 until 0.5**j <= 10 f (at o + 2 + j):
  # f = 1e-3: j = 7 (0.0078; 0.5**6 = 0.0156); 1e-4: j = 10 (9.8e-4; 0.5**9 = 2.0e-3);
  # 1e-2: j = 4 (0.0625; 0.5**3 = 0.125)
  for p, o, j, end in ((p1, 40, 7, 70), (p2, 70, 10, 110), (p3, 110, 4, 150)):
    assert (p.c, p.a, p.b) == ((o, o + 3), (o + 3, o + 2 + j), (o + 2 + j, end))
  assert a.summary()["periods"][2]["phases"] == {"C": [71.0, 73.0], "A": [74.0, 82.0],
                                                 "B": [83.0, 110.0]}
  assert a.period_lengths() == [30.0, 40.0]


def test_a_plateau_not_far_below_the_top_is_not_convergence():
  """The same trace with period 0's floor at 0.1: 20x below the top, but only 30.2% of
  the way (in decades) from it to the run's floor 1e-4 (ln 20 / ln 2e4): the spike at
  epoch 40 rises from a loss that never converged, so only 70 and 110 count (0.02,
  46.5% of the way, counts above; a 30% rule would count 0.1 too)."""
  trace = graded_run([40, 70, 110], [0.1, 1e-3, 1e-4, 1e-2], 150)
  assert phases.analyze(trace).onsets == [70, 110]
  settled = phases.thresholds(trace["train_loss"], None).settled
  assert np.exp(settled) == pytest.approx(2.0 * (1e-4 / 2.0) ** 0.4, rel=1e-6)


def chaotic_then_periodic_run(seed, n=600, chaos=250, onsets=(400, 500)):
  """Per-step traces like full-batch GD at too large a learning rate (digits, lr 2): for
  ``chaos`` steps the loss jumps at random between 0.05 and 5 (log-uniform) and the norm
  grows 4% on every rise of more than 2x, else shrinks 1%; then the loss falls by 0.7
  a step to a floor of 1e-5, and spikes at ``onsets`` (4x the floor, its square root
  with 1, the peak 2) answered by a 2 x 3% norm jump, the norm shrinking 0.5% a step
  otherwise."""
  rng = np.random.default_rng(seed)
  loss, rho = np.empty(n), np.empty(n)
  r, start = 8.0, chaos
  for i in range(n):
    if i < chaos:
      loss[i] = np.exp(rng.uniform(np.log(0.05), np.log(5.0)))
      r *= 1.04 if i and loss[i] > 2 * loss[i - 1] else 0.99
    else:
      start = i if i in onsets else start
      since = i - start
      if i >= onsets[0] and since < 3:
        loss[i] = (4e-5, 2e-5**0.5 * 2, 2.0)[since]
      else:
        loss[i] = max(1e-5, (2.0 if start > chaos else 0.5) * 0.7 ** (since - 2))
      r *= 1.03 if start > chaos and since in (1, 2) else 0.995
    rho[i] = r
  return {"train_loss": loss, "weight_norm": rho, "epoch": np.arange(1, n + 1, dtype=float),
          "effective_lr": 0.1 / rho**2}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chaotic_bouncing_is_not_a_string_of_destabilizations(seed):
  """A loss that bounces between 0.05 and 5 for 250 steps, each rise answered by a
  norm growth, has not converged: only the two spikes from the 1e-5 floor count. (The
  rule without the 40%-of-the-way condition counted 70 spikes of digits GD at lr 2.)"""
  a = phases.analyze(chaotic_then_periodic_run(seed))
  assert a.onsets == [400, 500]


def cifar_like_run(seed, onsets=(55, 72, 90, 117, 138), jumps=(0.04, 0.08, 0.12, 0.2, 0.1),
                   n=150):
  """Per-epoch traces shaped like the CIFAR-10 ``:cpu`` run: loss floors of 0.03-0.3
  between spikes, spikes to 0.8-2.5 (8x-80x above the floor before them), 0.06 decades
  of log-normal loss noise, one-epoch SGD bumps of 3x without a norm answer, a noisy
  test error, a norm that shrinks by 1.2% per epoch and jumps by ``jumps`` over the
  two epochs after each onset."""
  rng = np.random.default_rng(seed)
  floors = (0.3, 0.08, 0.05, 0.03, 0.1, 0.05)
  peaks = (2.4, 1.5, 1.0, 2.5, 0.8)
  loss, rho = np.empty(n), np.empty(n)
  r, start, k = 7.0, 0, 0
  for i in range(n):
    if i in onsets:
      start, k = i, onsets.index(i) + 1
    since = i - start
    if k == 0:
      level = max(floors[0], 2.2 * 0.93**i)
    elif since == 0:  # half-way up (in log) at the onset, the peak the epoch after
      level = (peaks[k - 1] * floors[k - 1]) ** 0.5
    else:
      level = max(floors[k], peaks[k - 1] * 0.6 ** (since - 1))
    if k and since in (1, 2):
      r *= (1 + jumps[k - 1]) ** 0.5
    else:
      r *= 0.988 * (1 + 0.0005 * rng.standard_normal())
    loss[i], rho[i] = level * 10 ** (0.06 * rng.standard_normal()), r
  loss[[30, 66, 84, 105, 130]] *= 3  # SGD bumps in phase B, the norm does not answer
  epoch = np.arange(1, n + 1, dtype=float)
  return {"train_loss": loss, "weight_norm": rho, "epoch": epoch, "effective_lr": 0.1 / rho**2,
          "test_error": 0.55 + 0.1 * np.minimum(loss, 1) + 0.02 * rng.standard_normal(n)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cifar_shaped_traces(seed):
  """Floors of 0.03-0.3 (never 100x below chance): every spike is found at its onset or
  the epoch after (when the noise hides the onset's half-way rise), the SGD bumps are
  not; without the norm jumps there are no destabilizations at all."""
  s = cifar_like_run(seed)
  a = phases.analyze(s, reference_loss=np.log(10))
  assert a.periodic, a.reason
  assert len(a.onsets) == 5
  assert all(0 <= found - true <= 1 for found, true in zip(a.onsets, (55, 72, 90, 117, 138)))
  quiet = phases.analyze(cifar_like_run(seed, jumps=(0,) * 5), reference_loss=np.log(10))
  assert quiet.onsets == [] and "never destabilized" in quiet.reason


DATA = pathlib.Path(__file__).parent / "data"


def recorded_run(name):
  """A run's per-epoch log columns, from tests/data/NAME.json (written from the run's
  metrics.jsonl by the command in its "command" field; 6 significant digits)."""
  record = json.loads((DATA / f"{name}.json").read_text())
  return record, {k: np.asarray(v, np.float64) for k, v in record["series"].items()}


def weight_norm_jumps(rho, rise=0.02):
  """0-based epochs where the weight norm, after falling, turns up and gains more than
  ``rise`` within 3 epochs: rho[e - 2] >= rho[e - 1] < rho[e] and max(rho[e:e + 3]) >
  (1 + rise) rho[e - 1]. Independent of the loss and of phases.py; on the recorded
  runs it gives the same epochs for rise from 1% to 2% (5% drops only the CIFAR run's
  epoch 51, a rise of 2.3%)."""
  return [e for e in range(2, len(rho))
          if rho[e - 2] >= rho[e - 1] < rho[e] and rho[e:e + 3].max() > (1 + rise) * rho[e - 1]]


@pytest.mark.parametrize("name, epochs", [
    ("convnet_cifar10_cpu", [51, 60, 75, 94, 120, 142]),
    ("quickstart", [46, 68, 96, 124, 139, 156, 180, 191, 215, 249, 278]),
    ("convnet_cifar10_cpu_wd1e-3", [135]),  # lr x wd 10x smaller: the norm falls slower
    # seed 1, recorded after the detector's rules were set (held out)
    ("convnet_cifar10_cpu_seed1", [49, 67, 88, 114, 148]),
])
def test_recorded_runs_onsets_are_the_weight_norm_jumps(name, epochs):
  """Real logs: every destabilization the detector finds is one of the run's weight-norm
  jumps (within 3 epochs) and every jump is found, on CIFAR-10 (loss floors 0.02-0.08
  between spikes, never 100x below chance) as on digits (floors near 3e-4); the
  logged effective LR falls 4% or more below its peak at the onset within 3 epochs.
  With weight decay 1e-3 instead of 1e-2 the norm shrinks 10x slower and CIFAR's one
  destabilization in 150 epochs (at 134) is not periodic behavior."""
  record, s = recorded_run(name)
  rho = s["weight_norm"]
  jumps = weight_norm_jumps(rho)
  assert [int(s["epoch"][e]) for e in jumps] == epochs  # listed by hand from the log too
  a = phases.analyze(s, reference_loss=np.log(10))  # 10 classes: ln(10) is chance level
  assert len(a.onsets) == len(jumps)
  assert all(abs(o - e) <= 3 for o, e in zip(a.onsets, jumps)), (a.destabilizations, epochs)
  assert a.periodic == (len(epochs) >= 2)
  if not a.periodic:
    assert a.reason.startswith("only 1 destabilization")
  lr = s["effective_lr"]
  assert all(lr[o:o + 4].min() < 0.96 * lr[o - 2:o + 1].max() for o in a.onsets)


def test_cifar_phases_a_and_b_separate_small_spikes():
  """On the recorded CIFAR-10 run the spikes rise only 5-50x above the floor, so a fixed
  decade would put nearly every epoch after a spike into phase B; with half the spike's
  height, each period after the first two has a phase A (1-6 epochs) whose median loss
  is at least 5x phase B's, and the norm falls through every phase B. The quickstart's
  phases (spikes of 1e3x and more) are the decade rule's."""
  _, s = recorded_run("convnet_cifar10_cpu")
  a = phases.analyze(s, reference_loss=np.log(10))
  loss, rho = phases.loss_series(s), s["weight_norm"]
  assert [(p.a, p.b) for p in a.periods[2:5]] == [((60, 61), (61, 74)), ((75, 78), (78, 92)),
                                                  ((94, 97), (97, 119))]
  for p in a.periods[2:]:
    (a0, a1), (b0, b1) = p.a, p.b
    assert 1 <= a1 - a0 <= 6 and b1 - b0 >= 5
    assert np.median(loss[a0:a1]) > 5 * np.median(loss[b0:b1])
    assert rho[b1 - 1] < 0.95 * rho[b0]
  _, q = recorded_run("quickstart")
  p1 = phases.analyze(q, reference_loss=np.log(10)).periods[1]
  assert (p1.c, p1.a, p1.b) == ((44, 46), (46, 53), (53, 66))  # spike 1e-4 -> 5: a decade


def test_frequent_spikes_do_not_hide_convergence():
  """Digits at lr 0.3 (the lr sweep's member, recorded): a spike every ~12 epochs makes
  ln(loss)'s robust noise scale ~1.5, and 5 of those (1,900x below chance) would demand
  a floor the loss reaches only 3 times; capped at 100x below chance (the loss floors at
  1e-3-1e-2 between spikes), the detector counts the spikes a reader sees, each one a
  jump of the weight norm (23 of them; the earlier absolute rule counted 26)."""
  _, s = recorded_run("digits_lr0p3")
  t = phases.thresholds(s["train_loss"], s["weight_norm"], reference_loss=np.log(10))
  assert np.exp(t.converge) == pytest.approx(100.0)
  a = phases.analyze(s, reference_loss=np.log(10))
  assert a.periodic and len(a.onsets) == 23, a.destabilizations
  assert a.destabilizations[:6] == [14, 22, 37, 52, 65, 77]
  # every onset sits at a norm jump (within 4 epochs: 238 is 4 before 242's); not every
  # >2% jump is a counted spike (36 jumps: the smaller spikes ride on the last one's fall)
  jumps = weight_norm_jumps(s["weight_norm"])
  assert all(min(abs(o - j) for j in jumps) <= 4 for o in a.onsets)
  assert len(jumps) == 36
  lengths = a.period_lengths()
  assert 11 <= np.mean(lengths) <= 13.5  # vs 23 at lr 0.1: a larger lr, more frequent


def recorded_gd(name):
  """A recorded full-batch GD run's step columns and two analyses: today's rule and the
  same rule without the 40%-of-the-way condition (settle_fraction 0)."""
  _, s = recorded_run(name)
  return (s, phases.analyze(s, reference_loss=np.log(10)),
          phases.analyze(s, reference_loss=np.log(10), settle_fraction=0.0))


def test_held_out_gd_run_counts_the_spikes_from_a_converged_loss():
  """Digits GD at lr 1, run after settle_fraction was chosen (not looked at before): of
  the 16 spikes with a norm answer that the rule without the condition finds, the 9 it
  keeps are exactly those that rise from a loss that had fallen below 1e-3 (3e-6 to
  7e-4), the 7 it drops are bumps of phase A's recovery that never fell below 0.02."""
  s, today, loose = recorded_gd("digits_gd_lr1")
  assert today.destabilizations == [126, 311, 446, 693, 875, 1069, 1148, 1274, 1377]
  assert len(loose.onsets) == 16
  previous = 0
  for i in loose.onsets:
    low = np.nanmin(s["loss"][previous:i])
    assert (i in today.onsets) == (low < 1e-3), (s["epoch"][i], low)
    assert low < 1e-3 or low > 0.02
    previous = i + 1


def test_recorded_gd_runs_pin_the_settle_fraction():
  """The two GD runs settle_fraction 0.4 was chosen on (a pin, not a validation: the
  held-out check is the test above). Digits lr 2 bounces between 0.05 and 5 for
  hundreds of steps (70 onsets without the condition; its counted ones start 41-100% of
  the way down, the bounces at most 38%); CIFAR's spikes start 43-100% of the way, so
  0.45 would lose them and 0.35 would count digits bounces."""
  _, digits, loose = recorded_gd("digits_gd_lr2")
  assert digits.destabilizations == [99, 289, 324, 426, 508, 672, 969, 1080, 1285]
  assert len(loose.onsets) == 70
  _, cifar, _ = recorded_gd("cifar_gd_lr2")
  assert cifar.destabilizations == [253, 285, 341, 469]
  for fraction, name, count in ((0.45, "cifar_gd_lr2", 4), (0.35, "digits_gd_lr2", 9)):
    _, s = recorded_run(name)
    moved = phases.analyze(s, reference_loss=np.log(10), settle_fraction=fraction)
    assert len(moved.onsets) != count, fraction


def test_infinite_losses_do_not_make_a_run_converged():
  """A loss of +inf (logged under policy='record') is left out like NaN: it does not
  become the reference, which made every sample count as converged."""
  rng = np.random.default_rng(0)
  loss = np.exp(rng.uniform(np.log(0.8), np.log(3.0), 200))  # never converges
  rho = 5.0 * np.cumprod(np.where(rng.random(200) < 0.3, 1.05, 0.99))
  loss[[50, 51]] = np.inf  # two in a row survive the 3-sample running median
  a = phases.analyze({"train_loss": loss, "weight_norm": rho,
                      "epoch": np.arange(1.0, 201.0)}, reference_loss=np.log(10))
  assert a.onsets == [] and "never converged" in a.reason

