"""The online destabilization detector (si_jax.analysis.detector): planted onsets of
synthetic SI runs found at their samples, runs without destabilization left alone,
the recorded runs' onsets unchanged by any prefix, the online API and its refusals."""

import json
import math
import pathlib

import numpy as np
import pytest

from si_jax.analysis import detector, synthetic

DATA = pathlib.Path(__file__).parent / "data"
RECORDED = sorted(p.stem for p in DATA.glob("*.json"))
CHANCE = math.log(10)  # the reference loss of the recorded 10-class runs


def recorded(name):
  return {k: np.asarray(v, np.float64)
          for k, v in json.loads((DATA / f"{name}.json").read_text())["series"].items()}


@pytest.mark.parametrize("seed, kwargs, found, mode", [
    (1, dict(floor=1e-3, height=100.0, noise="CIFAR SGD", norm="free"),
     [66, 123, 184, 227], "loss and norm"),
    (2, dict(floor=1e-5, height=1000.0, noise="digits GD", norm="free"),
     [117, 202, 265, 343, 436, 543, 646, 764, 833], "loss and norm"),
    (5, dict(floor=1e-4, height=30.0, noise="digits SGD", norm="free"),
     [69, 120, 166, 226], "loss and norm"),
    # the SI norm held fixed (logged constant) or not logged: the loss alone decides
    (3, dict(floor=0.03, height=10.0, noise="CIFAR GD", norm="fixed"),
     [84, 182, 261, 308, 357, 421, 491, 573, 646, 706, 759, 845], "loss only"),
    (4, dict(floor=0.3, height=2.0, noise="CIFAR GD", norm="absent"),
     [166, 285, 357, 448, 547, 630, 716, 817], "loss only"),
])
def test_planted_onsets_are_found_at_their_samples(seed, kwargs, found, mode):
  """Per-epoch SGD-like and per-step GD-like runs, floors 1e-5 to 0.3, spikes of 2x to
  1000x: every planted onset is found, none else, each within a sample (the rise is
  seen a sample early or late when the spike starts mid-sample)."""
  trace = synthetic.periodic_run(seed, **kwargs)
  result = detector.detect(trace.series, reference=synthetic.CHANCE)
  assert result.onsets == found and result.mode == mode and not result.reason
  assert len(found) == len(trace.onsets)
  assert all(abs(f - p) <= 1 for f, p in zip(found, trace.onsets))
  assert sum(f == p for f, p in zip(found, trace.onsets)) >= len(found) // 2


def _one_sample_spike(norm_jump):
  """Phase B at 1e-3 with a 1% jitter and rho falling 1% a sample, a one-sample 3x rise at
  sample 40, then rho x ``norm_jump`` at sample 41 (falling again after)."""
  n = 60
  loss = 1e-3 * np.exp(0.01 * np.sin(np.arange(n)))
  loss[40] *= 3.0
  log_rho = -0.01 * np.arange(n)
  log_rho[41:] += math.log(norm_jump) + 0.01
  return {"epoch": np.arange(1.0, n + 1), "loss": loss, "weight_norm": np.exp(log_rho)}


@pytest.mark.parametrize("norm_jump, onsets", [(1.10, [40]), (1.02, []), (0.99, [])])
def test_a_rise_the_loss_does_not_hold_counts_when_the_norm_answers_sharply(norm_jump, onsets):
  """Condition 2': a one-sample 3x rise (the loss does not hold it) is an onset when rho
  then jumps 10%, more than noise (3) x its 1% move per sample; not for a 2% rise of rho
  (under 3 moves) nor when rho keeps falling. In loss-only mode never."""
  series = _one_sample_spike(norm_jump)
  assert detector.detect(series, reference=CHANCE).onsets == onsets
  assert detector.detect(series, reference=CHANCE, norm="fixed").onsets == []


@pytest.mark.parametrize("kind, noise, norm, reason", [
    ("converging", "digits SGD", "free", detector.NEVER_DESTABILIZED),
    ("converging", "CIFAR SGD", "fixed", detector.NEVER_DESTABILIZED),
    ("never", "CIFAR SGD", "free", detector.NEVER_CONVERGED),
    ("never", "CIFAR SGD", "fixed", detector.NEVER_CONVERGED),
    ("oscillating", "CIFAR GD", "free", detector.NEVER_CONVERGED),
])
def test_runs_without_destabilization_have_no_onsets(kind, noise, norm, reason):
  """A converging run (SGD noise with one-sample 2-10x outliers, or a fixed norm read
  from the loss alone), a run whose loss never converges, and per-step GD oscillating
  smoothly between ~0.2 and ~6 every ~15 steps: no onset, and the reason why."""
  trace = synthetic.no_destabilization_run(7, kind=kind, noise=noise, norm=norm)
  result = detector.detect(trace.series, reference=synthetic.CHANCE)
  assert result.onsets == [] and result.reason.startswith(reason), result.reason
  if norm == "fixed" and kind == "converging":
    assert result.mode == "loss only" and "loss only" in result.reason


def test_recorded_cifar_onsets_sit_at_the_norm_jumps():
  """CIFAR-10 :cpu (loss floors 0.02-0.08): five onsets, at epochs 59, 74, 93, 120 and
  141; at each the norm, falling at every epoch of the phase B before, turns up within
  an epoch (Eq. (3)); the phases run B, C (onset to peak), A, B."""
  s = recorded("convnet_cifar10_cpu")
  result = detector.detect(s, reference=CHANCE)
  assert result.destabilizations == [59.0, 74.0, 93.0, 120.0, 141.0]
  assert result.peaks == [59, 74, 93, 119, 141] and result.mode == "loss and norm"
  rho = s["weight_norm"]
  for onset in result.onsets:
    assert np.all(np.diff(rho[onset - 7:onset]) < 0)
    assert rho[onset:onset + 2].max() > rho[onset - 1]
  phases = result.phases
  assert phases[:34] == [None] * 34 and phases[34] == "B"
  assert phases[57:62] == ["B", "C", "C", "A", "A"] and phases[62] == "B"


def test_per_step_gd_logs_work_the_same_way():
  """Full-batch GD on digits, one record per step: nine onsets, all from a loss below
  1e-3 after its fall, each answered by the norm within 3 steps."""
  s = recorded("digits_gd_lr1")
  result = detector.detect(s, reference=CHANCE)
  assert result.destabilizations == [125.0, 310.0, 445.0, 693.0, 875.0, 1068.0, 1147.0,
                                     1274.0, 1377.0]
  for onset in result.onsets:
    assert s["loss"][onset - 1] < 1e-3
    assert s["weight_norm"][onset:onset + 4].max() > s["weight_norm"][onset - 1]


@pytest.mark.parametrize("name", RECORDED)
def test_prefixes_keep_the_onsets_older_than_the_window(name):
  """Every 5th prefix of each recorded run (every 10th of the 1500-step GD runs) has
  exactly the whole run's onsets older than W samples, and every decision is taken
  within W samples of its sample."""
  s = recorded(name)
  n, w = len(s["weight_norm"]), detector.Constants().window
  whole = detector.detect(s, reference=CHANCE)
  assert all(e.decided - e.index <= w for e in whole.events)
  for m in range(5, n, 5 if n <= 500 else 10):
    prefix = detector.detect({k: v[:m] for k, v in s.items()}, reference=CHANCE)
    assert [o for o in prefix.onsets if o < m - w] == [o for o in whole.onsets if o < m - w]
    assert set(prefix.onsets) <= set(whole.onsets)


def test_sensitivity_of_the_cifar_run():
  """Onset counts of the CIFAR :cpu run with each constant halved and doubled: robust
  to rise and smooth; a window of 3, a hold of 1 or noise 1.5 (the norm's +2.3% then
  answers sharply) adds today's epoch 50 (a 4.6x rise from 0.12); a window of 12 or
  converge 25 (0.09) drop epoch 59, whose phase B lasted 7 epochs at 0.08-0.2 (a hold of 4
  keeps it: the norm confirms it); settle 1 (phase B only at new lows) keeps 2."""
  rows = {r.name: (r.halved, r.doubled) for r in detector.sensitivity(
      recorded("convnet_cifar10_cpu"), reference=CHANCE)}
  assert rows == {"rise": (5, 5), "converge": (5, 4), "window": (6, 4), "noise": (6, 5),
                  "settle": (5, 2), "smooth": (5, 5), "hold": (6, 5)}


def test_online_updates_match_detect_and_report_state():
  """Record by record, the onset of the CIFAR run's first spike is decided within W
  epochs of it, ``state`` counts it and names the phase, and the events equal
  ``detect``'s."""
  s = recorded("convnet_cifar10_cpu")
  online = detector.OnlineDetector(reference=CHANCE)
  assert online.state() == {"phase": None, "destabilizations": 0, "mode": "loss only",
                            "pending": None}
  events = []
  for i in range(len(s["epoch"])):
    new = online.update({k: float(s[k][i]) for k in ("epoch", "train_loss", "loss",
                                                      "weight_norm")})
    events += new
    if any(e.kind == "onset" for e in new):
      assert online.state()["phase"] == "C"
    if i == 40:
      assert online.state()["phase"] == "B"
  first = next(e for e in events if e.kind == "onset")
  assert (first.index, first.x) == (58, 59.0) and 58 < first.decided <= 58 + 6
  assert online.state()["destabilizations"] == 5 and online.mode == "loss and norm"
  assert events == detector.detect(s, reference=CHANCE).events


def test_missing_zero_and_infinite_losses():
  """Non-finite or negative losses are missing samples (the windows count finite ones);
  an exact 0 is a floor below every logged loss, not a hole: the onsets stay within a
  sample."""
  trace = synthetic.periodic_run(2, floor=1e-5, height=1000.0, noise="digits GD")
  s = dict(trace.series)
  loss = s["loss"].copy()
  loss[[50, 51, 300]] = [np.nan, np.inf, -1.0]
  result = detector.detect({**s, "loss": loss}, reference=synthetic.CHANCE)
  assert result.onsets == [117, 202, 265, 343, 436, 543, 646, 764, 833]
  # a float32 loss rounds to exactly 0 at its floor: 64% of the samples here
  zeros = np.where(s["loss"] < 1.01e-5, 0.0, s["loss"])
  assert (zeros == 0).mean() > 0.6
  assert detector.detect({**s, "loss": zeros}, reference=synthetic.CHANCE).onsets == [
      117, 202, 265, 343, 437, 544, 646, 764, 833]
  few = detector.detect({"loss": [1.0, np.nan, 0.5]})
  assert few.onsets == [] and few.reason.startswith(detector.TOO_FEW_FINITE)


def test_bad_inputs_are_refused():
  s = recorded("quickstart")
  with pytest.raises(TypeError, match="mapping"):
    detector.detect([1.0, 2.0])
  with pytest.raises(ValueError, match="no 'loss'"):
    detector.detect({"weight_norm": [1.0]})
  with pytest.raises(ValueError, match="one value per sample"):
    detector.detect({"loss": [1.0, 2.0], "weight_norm": [1.0]})
  with pytest.raises(ValueError, match="norm must be"):
    detector.detect(s, norm="maybe")
  with pytest.raises(ValueError, match="reference"):
    detector.detect(s, reference=-1.0)
  with pytest.raises(ValueError, match="rise > 1"):
    detector.detect(s, rise=1.0)
  with pytest.raises(ValueError, match="window"):
    detector.detect(s, window=1)
  with pytest.raises(ValueError, match="hold"):
    detector.detect(s, hold=6)
  with pytest.raises(TypeError, match="mapping"):
    detector.OnlineDetector().update([0.1])


def test_a_spike_that_climbs_for_three_samples_peaks_at_its_top():
  """A hand-made per-epoch run: converged at 1e-3 (the norm falling 1% a sample), a
  spike that climbs at samples 50, 51, 52 and falls after, the norm jumping at 51.
  Phase C runs from the onset (50) to the top (52), phase A follows."""
  rng = np.random.default_rng(0)
  n = 80
  loss = np.concatenate([np.geomspace(2.3, 1e-3, 20), np.full(30, 1e-3),
                         [0.02, 0.2, 0.9], np.geomspace(0.3, 1e-3, 27)])
  loss *= np.exp(0.05 * rng.standard_normal(n))
  rho = 10 * 0.99 ** np.arange(n)
  rho[51:] *= 1.5
  result = detector.detect({"loss": loss, "weight_norm": rho, "epoch": np.arange(1, n + 1)},
                           norm="free", reference=math.log(10))
  assert result.onsets == [50]
  assert result.peaks == [52]
  assert result.phases[50:53] == ["C", "C", "C"] and result.phases[53] == "A"
