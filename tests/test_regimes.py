"""Regimes on the sphere: synthetic series with known answers, and a real short run."""

import importlib.util
import math
import os

import numpy as np
import pytest

from si_jax.analysis import phases, regimes
from si_jax.engine import experiment, sweep, train

from helpers import tiny_config

CHANCE = math.log(10)
EPOCHS = np.arange(1, 101, dtype=np.float64)


def series(loss, egn):
  return {"epoch": EPOCHS, "train_loss": np.asarray(loss, np.float64),
          "effective_grad_norm": np.asarray(egn, np.float64)}


def test_loss_and_gradient_falling_to_the_floor_is_convergence():
  loss = CHANCE * np.exp(-EPOCHS / 10)  # 2.3 -> 1e-4
  regime = regimes.classify(series(loss, 0.5 * np.exp(-EPOCHS / 15)), CHANCE)
  assert regime.name == "convergence", regime.reason


def test_a_stationary_band_with_live_gradients_is_chaotic_equilibrium():
  rng = np.random.default_rng(0)
  loss = 0.6 + 0.1 * rng.standard_normal(100)
  loss[:10] = np.linspace(CHANCE, 0.6, 10)
  regime = regimes.classify(series(loss, 0.8 + 0.05 * rng.standard_normal(100)), CHANCE)
  assert regime.name == "chaotic equilibrium", regime.reason
  assert "0.8" in regime.reason or "x its peak" in regime.reason


def test_a_low_loss_whose_gradient_does_not_vanish_is_not_convergence():
  loss = np.full(100, 0.01)  # below the floor, but the effective gradient stays at its peak
  regime = regimes.classify(series(loss, np.ones(100)), CHANCE)
  assert regime.name == "chaotic equilibrium"


def test_a_loss_still_falling_short_of_the_floor_is_convergence():
  loss = 2.0 * np.exp(-EPOCHS / 100)  # 1.98 -> 0.74: no floor within the budget
  egn = np.ones(100)
  regime = regimes.classify(series(loss, egn), CHANCE)
  # each quarter's median over the quarter before: exp(-25/100) = 0.78 <= 0.8
  assert regime.name == "convergence" and "0.78 x" in regime.reason, regime.reason
  assert regimes.classify(series(loss, egn), CHANCE, fall_factor=0.75).name == (
      "chaotic equilibrium")
  slower = 2.0 * np.exp(-EPOCHS / 200)  # 0.88 per window: a band drifting, not converging
  assert regimes.classify(series(slower, egn), CHANCE).name == "chaotic equilibrium"
  in_step = {**series(np.full(100, 1.0), egn), "loss": loss}  # train_loss first, as the level
  assert regimes.classify(in_step, CHANCE).name == "chaotic equilibrium"


@pytest.mark.parametrize("case", ["rise_at_the_end", "fall_only_once", "above_chance_loss",
                                  "at_chance_accuracy"])
def test_a_fall_is_not_convergence_when_the_run_is_not_converging(case):
  loss = 2.0 * np.exp(-EPOCHS / 50)
  extra = {}
  if case == "rise_at_the_end":
    loss[-3:] = 1.0  # the last quarter's median still falls 0.61 x, its end does not
  elif case == "fall_only_once":  # a band, then one drop a quarter before the end
    loss = np.where(EPOCHS <= 75, 1.5, 0.9) * (1 + 0.01 * np.sin(EPOCHS))
  elif case == "above_chance_loss":
    loss = 10 * loss  # falls, but at 3.5-4.6 > ln 10: confident wrong answers
    extra = {"train_accuracy": np.full(100, 0.2)}
  else:
    extra = {"train_accuracy": np.full(100, 0.1)}
  regime = regimes.classify({**series(loss, np.ones(100)), **extra}, CHANCE)
  assert regime.name == ("divergence" if case == "at_chance_accuracy"
                         else "chaotic equilibrium"), regime.reason
  assert regimes.classify(series(2.0 * np.exp(-EPOCHS / 50), np.ones(100)), CHANCE).name == (
      "convergence")


def test_a_member_that_stopped_on_a_non_finite_value_is_divergence():
  config = tiny_config(**{"optim.sphere": "total", "optim.wd": 0.0})
  falling = series(2.0 * np.exp(-EPOCHS / 50), np.ones(100))
  assert regimes.summary_fields(falling, config)["regime"] == "convergence"
  fields = regimes.summary_fields(falling, config, "non-finite loss at epoch 101")
  assert fields == {"regime": "divergence",
                    "regime_reason": "the run stopped: non-finite loss at epoch 101"}


@pytest.mark.parametrize("final", [CHANCE, 0.95 * CHANCE, np.nan, np.inf])
def test_chance_level_or_non_finite_loss_is_divergence(final):
  loss = np.full(100, 0.5)
  loss[-30:] = final
  regime = regimes.classify(series(loss, np.ones(100)), CHANCE)
  assert regime.name == "divergence", regime.reason


def test_accuracy_decides_chance_level_where_logged():
  above_chance = {**series(np.full(100, 3.0), np.ones(100)), "train_accuracy": np.full(100, 0.5)}
  assert regimes.classify(above_chance, CHANCE).name == "chaotic equilibrium"
  at_chance = {**series(np.full(100, 1.0), np.ones(100)), "train_accuracy": np.full(100, 0.12)}
  regime = regimes.classify(at_chance, CHANCE)
  assert regime.name == "divergence" and "accuracy 0.12" in regime.reason


def test_sparse_logs_and_short_runs():
  loss = np.full(100, np.nan)
  loss[::10] = CHANCE * np.exp(-EPOCHS[::10] / 10)
  assert regimes.classify(series(loss, np.exp(-EPOCHS / 10)), CHANCE).name == "convergence"
  short = {"loss": np.array([2.3, 2.3]), "effective_grad_norm": np.array([1.0, 1.0])}
  assert regimes.classify(short, CHANCE).name == "divergence"


def test_bad_inputs_name_the_problem():
  with pytest.raises(ValueError, match="train_loss"):
    regimes.classify({"effective_grad_norm": np.ones(3)}, CHANCE)
  with pytest.raises(ValueError, match="reference_loss"):
    regimes.classify(series(np.ones(100), np.ones(100)), 0.0)
  assert regimes.chance_loss("cifar100") == pytest.approx(math.log(100))


@pytest.mark.parametrize("elr, want", [(0.005, "convergence"), (3.0, "divergence")])
def test_real_short_runs_on_the_sphere(tmp_path, elr, want):
  config = tiny_config(**{"optim.sphere": "total", "optim.wd": 0.0, "optim.lr": elr,
                          "train.epochs": 25, "train.batch_size": 50,
                          "train.grad_pass_every": 0})
  config.data.train_size = 200
  config.checkpoint.every_epochs = 0
  train.train_and_evaluate(config, str(tmp_path), progress=False)
  regime = regimes.classify(phases.load_series(str(tmp_path)), regimes.chance_loss("digits"))
  assert regime.name == want, regime.reason


def test_the_cpu_family_sweeps_three_decades_of_elr_with_three_seeds_vmapped():
  spec = importlib.util.spec_from_file_location(
      "three_regimes", os.path.join(os.path.dirname(__file__), "..", "configs", "three_regimes.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("cpu")
  members = [o for _, _, o in experiment.member_overrides(config)]
  elrs = sorted({o["optim.lr"] for o in members})
  assert len(elrs) >= 10 and math.log10(elrs[-1] / elrs[0]) == pytest.approx(3, abs=0.01)
  assert np.allclose(np.diff(np.log10(elrs)), 0.25, atol=0.01)
  assert {o["seed"] for o in members} == {0, 1, 2}
  assert all(set(o) <= set(sweep.SWEEPABLE) for o in members)  # one vmapped program
  assert config.optim.sphere == "total" and config.optim.wd == 0.0
  cifar = [o for _, _, o in experiment.member_overrides(module.get_config("cifar_cpu"))]
  cifar_elrs = sorted({o["optim.lr"] for o in cifar})
  assert len(cifar_elrs) >= 10 and {o["seed"] for o in cifar} == {0, 1, 2}
  assert math.log10(cifar_elrs[-1] / cifar_elrs[0]) == pytest.approx(3, abs=0.01)


def test_the_regimes_figure_shades_each_elr_by_its_regime():
  """Three ELRs, two seeds: one line per seed through the members' values, and the ELR
  axis shaded in the regime colours, grey where the seeds disagree."""
  import matplotlib.pyplot as plt
  from matplotlib import colors

  from si_jax.plots import regimes as regime_plots
  rows = [{"elr": e, "seed": s, "regime": r, "train_loss": 1e-3 * (s + 1) * e * 1e3,
           "test_error": 0.1, "effective_grad_norm": 1.0, "angle_to_init": e}
          for e, r0, r1 in ((1e-3, "convergence", "convergence"),
                            (1e-2, "chaotic equilibrium", "divergence"),
                            (1e-1, "divergence", "divergence"))
          for s, r in ((0, r0), (1, r1))]
  fig = regime_plots.figure_regimes(rows)
  loss = fig.axes[0]
  assert [list(line.get_xdata()) for line in loss.lines] == [[1e-3, 1e-2, 1e-1]] * 2
  np.testing.assert_allclose(loss.lines[1].get_ydata(), [2e-3, 2e-2, 2e-1])
  spans = [p for p in loss.patches]
  assert [colors.to_hex(p.get_facecolor(), keep_alpha=False) for p in spans] == [
      colors.to_hex("tab:green"), colors.to_hex("0.8"), colors.to_hex("tab:red")]
  # each span reaches half-way (in log) to its neighbours
  assert spans[1].get_x() == pytest.approx(10 ** -2.5)
  assert spans[2].get_x() == pytest.approx(10 ** -1.5)
  labels = [t.get_text() for t in loss.get_legend().get_texts()]
  assert labels == ["convergence", "chaotic equilibrium", "divergence",
                    "seeds disagree (or no regime)", "seed 0", "seed 1"]
  plt.close(fig)
  agreeing = regime_plots.figure_regimes([r for r in rows if r["elr"] != 1e-2])
  assert len(agreeing.axes[0].get_legend().get_texts()) == 5  # no grey span, no grey entry
  plt.close(agreeing)
  with pytest.raises(ValueError, match="no members"):
    regime_plots.figure_regimes([])
