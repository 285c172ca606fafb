"""CIFAR-10/100 from a prepared tensorflow-datasets directory (ArrayRecord), no TensorFlow.

Preparing one needs the ``prepare`` extra:
``tfds build cifar10 --data_dir=DIR --file_format=array_record``."""

from __future__ import annotations

import numpy as np

from si_jax.data.archive import DatasetError

TFDS_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100"}


def _read_split(source, where: str) -> tuple[np.ndarray, np.ndarray]:
  n = len(source)
  if n == 0:
    raise DatasetError(f"{where} is empty")
  try:  # batched random access where the source supports it
    records = source.__getitems__(list(range(n)))
  except (AttributeError, TypeError):  # e.g. tfds.testing.mock_data's sources
    records = [source[i] for i in range(n)]
  images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
  labels = np.asarray([int(r["label"]) for r in records], np.int32)
  if images.shape[1:] != (32, 32, 3):
    raise DatasetError(f"{where}: expected 32x32x3 images, got {images.shape[1:]}")
  return images, labels


def load_tfds(name: str, data_dir: str | None) -> dict[str, np.ndarray]:
  """As ``archive.load_archive``, from ``data_dir``'s prepared ``name``."""
  if name not in TFDS_NAMES:
    raise ValueError(f"data.name must be one of {sorted(TFDS_NAMES)} for data.source='tfds'")
  import tensorflow_datasets as tfds  # heavy import, only on this path

  out = {}
  for split in ("train", "test"):
    where = f"tfds {name}/{split} in data_dir={data_dir!r}"
    try:
      source = tfds.data_source(TFDS_NAMES[name], split=split, data_dir=data_dir, download=False)
    except Exception as e:
      raise DatasetError(
          f"cannot open {where} ({type(e).__name__}: {e}). Prepare it first with "
          f"`tfds build {name} --data_dir=DIR --file_format=array_record` (needs the "
          f"'prepare' extra), or use data.source='archive'.") from e
    out[f"{split}_images"], out[f"{split}_labels"] = _read_split(source, where)
  return out
