"""The minima of different periods (si_jax.analysis/engine/plots.minima): cosines and
ensemble errors against hand computations, the nearest checkpoint to each phase B, the
collected vectors and softmax outputs of a tiny family, and the figure."""

import importlib.util
import os
import types

import numpy as np
import pytest

from si_jax.analysis import minima as analysis_minima
from si_jax.analysis import phases
from si_jax.engine import checkpoint, experiment
from si_jax.engine import minima as engine_minima
from si_jax.models import get_path
from si_jax.plots import minima as plots_minima

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# three minima of run 0 (periods 0, 1, 2) and one of the independent run 1 (period 1)
NAMES = [(0, 0, 5), (0, 1, 10), (0, 2, 15), (1, 1, 11)]
VECTORS = [np.array([1.0, 0.0]), np.array([3.0, 4.0]), np.array([0.0, 2.0]),
           np.array([-1.0, 0.0])]
TEST_Y = np.array([0, 1, 1, 0])


def _probs(*rows):
  return np.array([[1 - p, p] for p in rows])  # p: the probability of class 1


# test errors 0.5, 0.25, 0.5, 0.75 (class-1 probabilities against labels 0, 1, 1, 0)
PROBS = [_probs(0.2, 0.3, 0.9, 0.8), _probs(0.1, 0.8, 0.9, 0.7), _probs(0.8, 0.9, 0.2, 0.1),
         _probs(0.6, 0.1, 0.6, 0.9)]


@pytest.fixture(scope="module")
def result():
  return analysis_minima.similarity(NAMES, VECTORS, PROBS, TEST_Y, ["seed_0", "seed_1"])


def test_cosines_by_hand(result):
  cos = np.asarray(result["cosine"])
  np.testing.assert_allclose(np.diag(cos), 1.0)
  np.testing.assert_allclose(cos[0, 1], 3 / 5)
  np.testing.assert_allclose(cos[1, 2], 4 / 5)
  np.testing.assert_allclose(cos[0, 3], -1.0)
  # within run 0, periods > 0 only: (1, 2); independent: period 1 of runs 0 and 1
  np.testing.assert_allclose(result["within_run_cosine"], [4 / 5])
  np.testing.assert_allclose(result["independent_cosine"], [-3 / 5])


def test_errors_of_single_models_and_ensembles_by_hand(result):
  assert [c["test_error"] for c in result["checkpoints"]] == [0.5, 0.25, 0.5, 0.75]
  assert [(c["run"], c["period"], c["epoch"]) for c in result["checkpoints"]] == [
      ("seed_0", 0, 5), ("seed_0", 1, 10), ("seed_0", 2, 15), ("seed_1", 1, 11)]
  # minima 1 + 2: class-1 means 0.45, 0.85, 0.55, 0.4 -> argmax 0, 1, 1, 0: error 0
  assert result["within_run_ensemble_error"] == [0.0]
  # minima 1 + 3: 0.35, 0.45, 0.75, 0.8 -> 0, 0, 1, 1: error 0.5
  assert result["independent_ensemble_error"] == [0.5]


def test_describe(result):
  assert analysis_minima.describe(result) == (
      "4 checkpoints: within-run cosine 0.800 (min 0.800), independent-run cosine -0.600; "
      "test error: single 0.5000, ensembles of periods 0.0000, of independent runs 0.5000")


def test_end_of_phase_a_takes_the_checkpoint_nearest_each_phase_b(monkeypatch):
  period = lambda index, a, b: types.SimpleNamespace(index=index, a=a, b=b)
  analysis = types.SimpleNamespace(x=np.arange(1, 31), periods=[
      period(0, (2, 6), (6, 9)), period(1, (10, 12), (12, 12)),  # period 1: no phase B
      period(2, (14, 21), (21, 30))])
  monkeypatch.setattr(phases, "analyze_run", lambda workdir: analysis)
  # first phase-B epochs 7 and 22; checkpoints every 5 epochs
  assert analysis_minima.end_of_phase_a("w", [5, 10, 15, 20, 25, 30]) == [(0, 5), (2, 20)]
  # the causal detector's warm-up: all phase B, no phase A; its first epoch is no minimum
  analysis.periods[0] = period(0, (0, 0), (0, 9))
  assert analysis_minima.end_of_phase_a("w", [1, 5, 10, 15, 20, 25, 30]) == [(2, 20)]


def test_figure_is_written(result, tmp_path):
  out = plots_minima.draw(result, NAMES, str(tmp_path / "minima.png"))
  assert os.path.getsize(out) > 10_000 and os.path.exists(out[:-4] + ".pdf")


def _family_config():
  spec = importlib.util.spec_from_file_location(
      "minima_config", os.path.join(ROOT, "configs", "minima_similarity.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("cpu")
  config.model.width, config.train.epochs = 4, 2
  config.data.train_size, config.data.test_size = 300, 100
  return config


def test_collect_minima_of_a_tiny_family(tmp_path, monkeypatch):
  config, workdir = _family_config(), str(tmp_path)
  experiment.run_family(config, workdir, vmap="no", progress=False)
  monkeypatch.setattr(analysis_minima, "end_of_phase_a", lambda run_dir, epochs: [(0, epochs[0])])
  names, vectors, probs, test_y = engine_minima.collect_minima(config, workdir)
  assert names == [(0, 0, 1), (1, 0, 1)] and test_y.shape == (100,)
  for (run, _, epoch), vector, prob in zip(names, vectors, probs):
    params, _, _ = checkpoint.load_weights(os.path.join(workdir, f"seed_{run}"), epoch)
    si = [np.ravel(get_path(params, p)) for p in _si_paths(config)]
    np.testing.assert_array_equal(vector, np.concatenate(si))
    assert prob.shape == (100, 10)
    np.testing.assert_allclose(prob.sum(-1), 1.0, rtol=1e-5)
    assert np.ptp(prob, axis=-1).max() > 1e-3  # not a constant
  assert not np.array_equal(vectors[0], vectors[1])  # seeds 0 and 1


def _si_paths(config):
  from si_jax import models
  run_config = experiment.member_config(config, experiment.member_overrides(config)[0][2])
  net = models.create_model(run_config.model.name, num_classes=10, width=run_config.model.width)
  return models.param_groups(net).si_paths

