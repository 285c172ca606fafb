"""Independent recomputations of what a run logs, from its weights (appendix B "Logging").

The tests apply the model themselves (``model.apply``) and compute losses, accuracies and
gradients in float64 NumPy, so no evaluation, loss or optimizer code of the library is
reused: a logged value that agrees with these was computed as the appendix says.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import data as data_lib
from si_jax import models


def dataset(config) -> data_lib.Dataset:
  """The (un-augmented) data of a run config."""
  d = config.data
  return data_lib.load_dataset(d.name, d.source, data_dir=d.data_dir, train_size=d.train_size,
                               test_size=d.test_size, subset=d.subset, subset_seed=d.subset_seed)


def model(config, num_classes: int = 10):
  m = config.model
  return models.create_model(m.name, num_classes=num_classes, width=m.width, norm=m.norm,
                             train_non_si=m.train_non_si, norm_epsilon=m.norm_epsilon,
                             conv_impl=m.get("conv_impl", "xla"))


def loss_and_correct(logits, labels) -> tuple[np.ndarray, np.ndarray]:
  """Per-example cross-entropy -log softmax(z)_y and correctness, in float64."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
  labels = np.asarray(labels)
  return -log_p[np.arange(len(labels)), labels], z.argmax(axis=1) == labels


def evaluation(config, params, batch_stats, data=None) -> dict[str, float]:
  """test_loss / test_error with the running BN statistics (``train=False``) and
  train_loss / train_accuracy with train-mode BN over consecutive batches of
  ``train.batch_size`` examples (the last one smaller), running statistics discarded."""
  data = data or dataset(config)
  net = model(config, data.num_classes)
  variables = {"params": params, "batch_stats": batch_stats}
  test_logits = net.apply(variables, data.test_images, train=False)
  test_loss, test_correct = loss_and_correct(test_logits, data.test_labels)
  losses, correct = [], []
  bs = config.train.batch_size
  for start in range(0, len(data.train_labels), bs):
    logits, _ = net.apply(variables, data.train_images[start:start + bs], train=True,
                          mutable=["batch_stats"])
    l, c = loss_and_correct(logits, data.train_labels[start:start + bs])
    losses.append(l)
    correct.append(c)
  return {"test_loss": float(test_loss.mean()), "test_error": 1.0 - float(test_correct.mean()),
          "train_loss": float(np.concatenate(losses).mean()),
          "train_accuracy": float(np.concatenate(correct).mean())}


def mean_loss_grad(net, params, batch_stats, x, y):
  """(mean cross-entropy, its gradient, new running statistics) with train-mode BN over
  the whole of (x, y): one batch, its own statistics."""

  def loss(p):
    logits, updated = net.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                mutable=["batch_stats"])
    log_p = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1)), updated["batch_stats"]

  (value, stats), grad = jax.value_and_grad(loss, has_aux=True)(params)
  return float(value), grad, stats


def assert_evaluation_matches(record: dict, expected: dict, rel: float = 1e-5) -> None:
  """The logged evaluation keys equal the recomputed ones (errors to one example)."""
  for k, v in expected.items():
    assert record[k] == pytest.approx(v, rel=rel, abs=1e-7), (k, record[k], v)
