"""Kodryan et al. (2022)'s options: the MSE loss (``train.loss='mse'``) and label noise
(``data.label_noise``), checked against hand computations and their definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import data as data_lib
from si_jax import logs, metrics, models, validate
from si_jax.engine import checkpoint, sweep, train

from helpers import tiny_config

# 1. the loss by hand


def test_mse_value_and_gradient_by_hand():
  """l(z, y) = sum_k (z_k - [k = y])^2 / K; the batch mean's gradient is 2 (z - e_y) / (K B)."""
  z = np.array([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]], np.float32)
  y = np.array([0, 2], np.int32)
  # example 0: (2-1)^2 + 1 + 0.25 = 2.25; example 1: 0 + 1 + (3-1)^2 = 5
  np.testing.assert_allclose(metrics.mse(z, y), [2.25 / 3, 5.0 / 3], rtol=1e-6)
  grad = jax.grad(lambda v: jnp.mean(metrics.mse(v, y)))(z)
  expected = 2 * np.array([[1.0, -1.0, 0.5], [0.0, 1.0, 2.0]]) / (3 * 2)
  np.testing.assert_allclose(grad, expected, rtol=1e-6)
  assert metrics.LOSSES["cross_entropy"] is metrics.cross_entropy


def train_mode_logits(config, workdir, images):
  """The final weights' logits with train-mode BN over consecutive ``train.batch_size``
  batches (the train evaluation's), from the checkpoint and the model applied here."""
  params, batch_stats, _ = checkpoint.load_weights(workdir)
  m = config.model
  net = models.create_model(m.name, num_classes=10, width=m.width, norm=m.norm,
                            train_non_si=m.train_non_si, norm_epsilon=m.norm_epsilon)
  variables = {"params": params, "batch_stats": batch_stats}
  bs = config.train.batch_size
  return np.concatenate([
      np.asarray(net.apply(variables, images[i:i + bs], train=True, mutable=["batch_stats"])[0],
                 np.float64) for i in range(0, len(images), bs)])


def run(tmp_path_factory, name, **overrides):
  config = tiny_config(**{"data.train_size": 300, **overrides})  # the hand computations' 300
  workdir = str(tmp_path_factory.mktemp(name))
  train.train_and_evaluate(config, workdir, progress=False)
  return config, workdir, logs.read_run(workdir)


@pytest.fixture(scope="module")
def mse_run(tmp_path_factory):
  return run(tmp_path_factory, "mse", **{"train.loss": "mse", "train.epochs": 4})


def test_mse_run_trains_and_logs_the_mse(mse_run):
  """4 epochs on 300 digits: the train loss falls and is the MSE of the final weights."""
  config, workdir, records = mse_run
  losses = [r["train_loss"] for r in records]
  assert len(losses) == 4 and np.all(np.isfinite(losses))
  assert losses[-1] < 0.8 * losses[0], losses
  assert records[-1]["loss"] < records[0]["loss"]  # the in-step (training) loss too
  ds = data_lib.load_dataset("digits", "embedded", train_size=300, test_size=100)
  z = train_mode_logits(config, workdir, ds.train_images)
  by_hand = np.mean(np.sum((z - np.eye(10)[ds.train_labels]) ** 2, axis=1) / 10)
  assert records[-1]["train_loss"] == pytest.approx(by_hand, rel=1e-5)
  assert "train_accuracy_noisy" not in records[-1]  # no label noise, no subset fields


# 2. label noise


def test_label_noise_corrupts_exactly_its_fraction():
  clean = data_lib.load_dataset("digits", "embedded")
  noisy = data_lib.load_dataset("digits", "embedded", label_noise=0.5, label_noise_seed=3)
  n = len(clean.train_labels)
  changed = noisy.train_labels != clean.train_labels
  assert changed.sum() == round(0.5 * n) == 719  # each corrupted label is another class
  np.testing.assert_array_equal(noisy.clean_train_labels, clean.train_labels)
  np.testing.assert_array_equal(noisy.test_labels, clean.test_labels)
  np.testing.assert_array_equal(noisy.train_images, clean.train_images)
  assert clean.clean_train_labels is None
  again = data_lib.load_dataset("digits", "embedded", label_noise=0.5, label_noise_seed=3)
  np.testing.assert_array_equal(again.train_labels, noisy.train_labels)
  other = data_lib.load_dataset("digits", "embedded", label_noise=0.5, label_noise_seed=4)
  assert np.any(other.train_labels != noisy.train_labels)
  # the new class is uniform over the 9 others: 719 draws, about 80 per shift (sd 8.5)
  shifts = (noisy.train_labels - clean.train_labels)[changed] % 10
  counts = np.bincount(shifts, minlength=10)
  assert counts[0] == 0 and np.all((counts[1:] > 50) & (counts[1:] < 110)), counts


def test_label_noise_applies_to_the_train_subset():
  """Subsetting first, then corruption: round(0.1 * 300) = 30 of the subset's labels."""
  clean = data_lib.load_dataset("digits", "embedded", train_size=300)
  noisy = data_lib.load_dataset("digits", "embedded", train_size=300, label_noise=0.1)
  assert np.sum(noisy.train_labels != clean.train_labels) == 30


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
  return run(tmp_path_factory, "noisy", **{"data.label_noise": 0.25,
                                           "data.label_noise_seed": 7})


def test_noisy_run_logs_accuracy_on_kept_and_corrupted_labels(noisy_run):
  """train_accuracy_noisy: the final weights' agreement with the corrupted labels on the
  corrupted examples (memorization); train_accuracy_clean: on the kept ones."""
  config, workdir, records = noisy_run
  assert all({"train_accuracy_clean", "train_accuracy_noisy"} <= set(r) for r in records)
  d = config.data
  ds = data_lib.load_dataset("digits", "embedded", train_size=300, test_size=100,
                             label_noise=d.label_noise, label_noise_seed=d.label_noise_seed)
  hits = train_mode_logits(config, workdir, ds.train_images).argmax(1) == ds.train_labels
  corrupted = ds.train_labels != ds.clean_train_labels
  assert corrupted.sum() == 75
  final = records[-1]
  assert final["train_accuracy_noisy"] == pytest.approx(hits[corrupted].mean(), abs=1e-7)
  assert final["train_accuracy_clean"] == pytest.approx(hits[~corrupted].mean(), abs=1e-7)
  assert final["train_accuracy"] == pytest.approx(hits.mean(), abs=1e-7)
  # two epochs in, the kept labels are learnt far better than the corrupted ones
  assert final["train_accuracy_clean"] > final["train_accuracy_noisy"] + 0.2, final


def test_a_vmapped_family_member_is_its_single_run(tmp_path):
  """MSE and label noise in the stacked program: a member's records are its single run's."""
  config = tiny_config(**{"train.loss": "mse", "data.label_noise": 0.2, "train.epochs": 2,
                          "train.grad_pass_every": 0})
  members = [{"optim.lr": 0.1}, {"optim.lr": 0.3}]
  sweep.train_sweep(config, members, str(tmp_path / "sweep"), progress=False)
  train.train_and_evaluate(sweep.member_config(config, members[1]), str(tmp_path / "single"),
                           progress=False)
  got, want = logs.read_run(str(tmp_path / "sweep/member_1")), logs.read_run(str(tmp_path /
                                                                                 "single"))
  assert len(got) == len(want) == 2
  for g, w in zip(got, want):
    for k in ("loss", "train_loss", "train_accuracy", "train_accuracy_clean",
              "train_accuracy_noisy", "test_loss"):
      assert g[k] == pytest.approx(w[k], rel=2e-5, abs=1e-9), (w["epoch"], k)


# 3. bad values, one line naming the field


@pytest.mark.parametrize("overrides, message", [
    ({"train.loss": "hinge"}, r"train\.loss must be one of \('cross_entropy', 'mse'\)"),
    ({"data.label_noise": 1.0}, r"data\.label_noise must be a number in \[0, 1\), got 1\.0"),
    ({"data.label_noise": -0.1}, r"data\.label_noise must be a number in \[0, 1\)"),
    ({"data.label_noise": True}, r"data\.label_noise must be a number in \[0, 1\)"),
    ({"data.label_noise_seed": -1}, r"data\.label_noise_seed must be an integer from 0"),
])
def test_bad_values_are_refused_before_compute(overrides, message):
  with pytest.raises(ValueError, match=message):
    validate.validate_config(tiny_config(**overrides))


def test_noise_that_corrupts_no_label_is_refused():
  with pytest.raises(ValueError, match=r"data\.label_noise=0\.001 corrupts 0 of the 300 train"):
    data_lib.load_dataset("digits", "embedded", train_size=300, label_noise=0.001)
