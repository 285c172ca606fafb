"""Sequence tasks generated in the package (no download): modular addition.

``modaddP``: the P^2 sequences [a, b, =], labelled (a + b) mod P, split by a fixed seed
(the split belongs to the task, not to a run)."""

from __future__ import annotations

import numpy as np

MODULI = {"modadd31": 31, "modadd47": 47}  # data.name -> P
TEST_FRACTION = 0.5
SPLIT_SEED = 0


def modular_addition(p: int, test_fraction: float = TEST_FRACTION,
                     seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
  """All p^2 sequences [a, b, p] with labels (a + b) mod p, split at random.

  Returns {'train_images', 'test_images'}: int32 (N, 3), and int32 labels; within a split
  examples are in order of a * p + b. Raises ValueError for p < 2 or an empty split."""
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
