"""Data order and mini-batches: epoch e's order is a function of (seed, e) alone (resumable)."""

from __future__ import annotations

import numpy as np


def order_seed(config) -> int:
  """The seed of the data order: data.order_seed, or the run's seed."""
  return config.seed if config.data.get("order_seed") is None else config.data.order_seed


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """The example order of an epoch: a function of (seed, epoch) only."""
  return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)


def batches(order: np.ndarray, batch_size: int, drop_last: bool) -> list[np.ndarray]:
  """``order`` cut into batches of ``batch_size`` (the last shorter unless ``drop_last``)."""
  cut = len(order) if not drop_last else len(order) - len(order) % batch_size
  return [order[i:i + batch_size] for i in range(0, cut, batch_size)]


def epoch_batches(config, epoch: int, n: int) -> list[np.ndarray]:
  """The mini-batches of one SGD epoch of a run with this config."""
  return batches(epoch_order(order_seed(config), epoch, n), config.train.batch_size,
                 config.train.drop_last)


def full_batch_chunks(config, n: int) -> list[np.ndarray]:
  """Full-batch GD's micro-batches: the set, ``train.micro_batch_size`` at a time."""
  return batches(np.arange(n, dtype=np.int32), config.train.micro_batch_size or n, False)
