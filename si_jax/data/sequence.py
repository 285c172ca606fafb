"""Sequence tasks generated in the package (no download): modular addition.

``modaddP`` holds every sequence [a, b, =] with a, b in 0..P-1 (token P is '='),
labelled (a + b) mod P: P^2 examples, split once into train and test by a fixed seed
(the split belongs to the task, not to a run).
"""

from __future__ import annotations

import numpy as np

MODULI = {"modadd31": 31, "modadd47": 47}  # data.name -> P
TEST_FRACTION = 0.5
SPLIT_SEED = 0


def modular_addition(p: int, test_fraction: float = TEST_FRACTION,
                     seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
  """All p^2 sequences [a, b, p] with labels (a + b) mod p, split at random.

  Args:
    p: the modulus (>= 2); the tokens are 0..p-1 and the separator p.
    test_fraction: the share of the p^2 examples held out, rounded to a count.
    seed: seeds the split.

  Returns:
    {'train_images', 'test_images'}: int32 tokens of shape (N, 3);
    {'train_labels', 'test_labels'}: int32 of shape (N,). Each example sits in
    exactly one split; within a split, examples are in order of a * p + b.

  Raises:
    ValueError: p < 2, or a test fraction leaving a split empty.
  """
  if not isinstance(p, int) or p < 2:
    raise ValueError(f"the modulus must be an integer >= 2, got {p!r}")
  n = p * p
  n_test = int(round(test_fraction * n))
  if not 0 < n_test < n:
    raise ValueError(f"test_fraction={test_fraction!r} leaves a split of the {n} examples "
                     "empty")
  a, b = np.divmod(np.arange(n), p)
  tokens = np.stack([a, b, np.full(n, p)], axis=1).astype(np.int32)
  labels = ((a + b) % p).astype(np.int32)
  order = np.random.default_rng(seed).permutation(n)
  test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
  return {"train_images": tokens[train], "train_labels": labels[train],
          "test_images": tokens[test], "test_labels": labels[test]}
