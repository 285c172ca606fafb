"""Datasets as normalized float32 NHWC arrays, small enough to live on the device.

Sources (``data.source``): ``embedded`` (the 8x8 digits shipped with the package, and the
token tasks of ``si_jax.data.sequence``), ``archive`` (the CIFAR python archives) and
``tfds`` (a prepared tensorflow-datasets directory). Entry point: ``load_dataset``.
Layouts and constants: docs/design_notes.md."""

from __future__ import annotations

import dataclasses

import numpy as np

from si_jax.data import sequence
from si_jax.data.archive import DatasetError, load_archive
from si_jax.data.augment import augment_batch
from si_jax.data.tfds_source import load_tfds

__all__ = ["Dataset", "DatasetError", "load_dataset", "augment_batch", "NAMES", "SOURCES"]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
SEQUENCE_NAMES = tuple(sequence.MODULI)  # token sequences, for the transformers
NAMES = ("digits", "cifar10", "cifar100", *SEQUENCE_NAMES)
EMBEDDED_NAMES = ("digits", *SEQUENCE_NAMES)
SOURCES = ("embedded", "archive", "tfds")
SUBSETS = ("first", "random")
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, **sequence.MODULI}
DIGITS_TEST_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Normalized images (float32 NHWC), or int32 tokens (N, L), int32 labels and the pad value."""

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  pad_value: np.ndarray
  clean_train_labels: np.ndarray | None = None  # with label noise: the labels before it

  @property
  def image_shape(self) -> tuple[int, ...]:
    """(H, W, C); (L,) for token sequences."""
    return self.train_images.shape[1:]


def _digits() -> dict[str, np.ndarray]:
  from sklearn.datasets import load_digits

  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]  # pixels are 0..16
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(0).permutation(len(labels))  # fixed split, not the run seed
  n_test = int(round(DIGITS_TEST_FRACTION * len(labels)))
  test, train = order[:n_test], order[n_test:]
  return {"train_images": images[train], "train_labels": labels[train],
          "test_images": images[test], "test_labels": labels[test]}


def _subset(images, labels, size, mode, rng, field):
  n = len(labels)
  if size is None or size == n:
    return images, labels
  if not isinstance(size, int) or not 0 < size <= n:
    raise ValueError(f"data.{field} must be an integer in [1, {n}] or None, got {size!r}")
  idx = np.arange(size) if mode == "first" else np.sort(rng.choice(n, size, replace=False))
  return images[idx], labels[idx]


def check_label_noise(fraction) -> None:
  """ValueError unless ``data.label_noise`` is a number in [0, 1)."""
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
      0 <= fraction < 1):
    raise ValueError(f"data.label_noise must be a number in [0, 1), got {fraction!r}")


def corrupt_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int
                   ) -> np.ndarray:
  """A copy of ``labels`` with round(fraction N) of them, at random, set to another class.

  The examples are drawn without replacement and each gets a class drawn uniformly from the
  K - 1 others (y + U{1..K-1} mod K), by ``np.random.default_rng(seed)``. Raises ValueError
  if that corrupts none or all of the N labels."""
  n = len(labels)
  num_noisy = int(round(fraction * n))
  if not 0 < num_noisy < n:
    raise ValueError(f"data.label_noise={fraction!r} corrupts {num_noisy} of the {n} train "
                     "labels: it must leave some clean and corrupt at least one")
  rng = np.random.default_rng(seed)
  idx = rng.choice(n, num_noisy, replace=False)
  noisy = labels.copy()
  noisy[idx] = (labels[idx] + rng.integers(1, num_classes, num_noisy)) % num_classes
  return noisy


def load_dataset(
    name: str = "digits",
    source: str = "embedded",
    data_dir: str | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    subset: str = "first",
    subset_seed: int = 0,
    label_noise: float = 0.0,
    label_noise_seed: int = 0,
) -> Dataset:
  """Loads, checks, subsets and normalizes a dataset (arguments: the config's ``data.*``).

  Subsets are the first N examples (as the original code's) or random (``subset_seed``).
  ``label_noise`` > 0 corrupts that fraction of the train subset's labels (``corrupt_labels``,
  seeded by ``label_noise_seed``); the test labels are left as they are.
  Raises ValueError naming a bad config field, DatasetError for missing or malformed data."""
  if name not in NAMES:
    raise ValueError(f"data.name must be one of {NAMES}, got {name!r}")
  if source not in SOURCES:
    raise ValueError(f"data.source must be one of {SOURCES}, got {source!r}")
  if subset not in SUBSETS:
    raise ValueError(f"data.subset must be one of {SUBSETS}, got {subset!r}")
  check_label_noise(label_noise)
  if (name in EMBEDDED_NAMES) != (source == "embedded"):
    raise ValueError(
        f"data.source={source!r} does not serve data.name={name!r}: the embedded source is "
        f"{EMBEDDED_NAMES}; cifar10/cifar100 come from 'archive' or 'tfds'")
  raw, normalize, pad_value = _raw(name, source, data_dir)
  num_classes = NUM_CLASSES[name]
  for split in ("train", "test"):
    if len(raw[f"{split}_labels"]) == 0:
      raise DatasetError(f"{name} from {source}: the {split} split is empty")
  rng = np.random.default_rng(subset_seed)
  train_images, train_labels = _subset(
      raw["train_images"], raw["train_labels"], train_size, subset, rng, "train_size")
  test_images, test_labels = _subset(
      raw["test_images"], raw["test_labels"], test_size, subset, rng, "test_size")
  clean_train_labels = None
  if label_noise:
    clean_train_labels = train_labels
    train_labels = corrupt_labels(train_labels, label_noise, num_classes, label_noise_seed)
  return Dataset(
      name=name,
      train_images=normalize(train_images),
      train_labels=train_labels,
      test_images=normalize(test_images),
      test_labels=test_labels,
      num_classes=num_classes,
      pad_value=pad_value,
      clean_train_labels=clean_train_labels,
  )


def _raw(name: str, source: str, data_dir: str | None):
  """(the splits as loaded, the inputs' normalization, the normalized black pixel; 0 for tokens)."""
  if name in SEQUENCE_NAMES:
    return sequence.modular_addition(sequence.MODULI[name]), lambda x: x, np.zeros((), np.float32)
  if source == "embedded":
    raw = _digits()
    mean = raw["train_images"].mean(axis=(0, 1, 2))
    std = raw["train_images"].std(axis=(0, 1, 2))
  else:
    raw = load_archive(name, data_dir) if source == "archive" else load_tfds(name, data_dir)
    raw = {k: (v.astype(np.float32) / 255.0 if k.endswith("images") else v) for k, v in raw.items()}
    mean, std = np.asarray(CIFAR_MEAN, np.float32), np.asarray(CIFAR_STD, np.float32)
  normalize = lambda x: ((x - mean) / std).astype(np.float32)
  return raw, normalize, normalize(np.zeros((1, 1, 1, len(mean)), np.float32))[0, 0, 0]
