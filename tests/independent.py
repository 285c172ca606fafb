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


def gradient_pass(config, params, batch_stats, data=None) -> dict[str, float]:
  """Appendix B's gradient pass at the epoch's weights: the gradient of the mean train
  loss over the whole set, g = sum_b grad(sum of losses of batch b) / N over consecutive
  batches of ``train.batch_size`` in train mode, and from it ``train_grad_norm`` ||g||,
  ``train_weight_norm`` rho, ``train_effective_grad_norm`` rho ||g|| and
  ``train_effective_lr`` lr / rho^2 over the SI weights (the conv kernels) and per conv
  layer. Constant learning rate (no schedule)."""
  data = data or dataset(config)
  net = model(config, data.num_classes)
  n, bs = len(data.train_labels), config.train.batch_size
  grad = None
  for start in range(0, n, bs):
    x, y = data.train_images[start:start + bs], data.train_labels[start:start + bs]
    _, g, _ = mean_loss_grad(net, params, batch_stats, x, y)
    g = jax.tree.map(lambda a: np.asarray(a, np.float64) * len(y) / n, g)
    grad = g if grad is None else jax.tree.map(np.add, grad, g)
  layers = sorted(k for k in params if k.startswith("conv_"))
  sq = lambda tree, names: sum(np.sum(np.square(np.asarray(tree[k]["kernel"], np.float64)))
                               for k in names)
  out = {}
  for prefix, names in [("", layers)] + [(f"{k}/", [k]) for k in layers]:
    rho, grad_norm = np.sqrt(sq(params, names)), np.sqrt(sq(grad, names))
    out.update({f"{prefix}train_grad_norm": grad_norm, f"{prefix}train_weight_norm": rho,
                f"{prefix}train_effective_grad_norm": rho * grad_norm,
                f"{prefix}train_effective_lr": config.optim.lr / rho**2})
  return {k: float(v) for k, v in out.items()}


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


def all_evaluations(config, params, batch_stats) -> dict[str, float]:
  """``evaluation`` and ``gradient_pass`` at one set of weights."""
  data = dataset(config)
  return {**evaluation(config, params, batch_stats, data),
          **gradient_pass(config, params, batch_stats, data)}


# Two programs (vmapped and single, 1 and 4 devices) end 3 epochs with weights equal to
# ~1e-6; the gradient of the whole train set there is a sum of cancelling batch
# gradients, so its norm differs by up to 2.6e-4 (measured); every other key by <= 2e-6.
# (Each program's gradient pass matches the recomputation from its own weights to 1e-6.)
WHOLE_SET_GRADIENT = ("train_grad_norm", "train_effective_grad_norm")


def assert_same_records(got: list[dict], want: list[dict], rel: float = 2e-5) -> None:
  """Record for record, the same keys and values (wall time aside) to float32 round-off
  of two programs."""
  assert len(got) == len(want)
  for g, w in zip(got, want):
    assert set(g) == set(w), set(g) ^ set(w)
    for k in set(w) - {"wall_time"}:
      if not isinstance(w[k], float):  # the live detector's phase and count: exactly equal
        assert g[k] == w[k], (w.get("epoch"), k)
        continue
      tol = 1e-3 if k.split("/")[-1] in WHOLE_SET_GRADIENT else rel
      assert g[k] == pytest.approx(w[k], rel=tol, abs=1e-9), (w.get("epoch"), w.get("step"), k)
