"""CIFAR-10/100 from the official python-pickle archives in ``data.data_dir``.

Extracted, as ``.tar.gz`` or as ``data_dir`` itself: docs/design_notes.md."""

from __future__ import annotations

import dataclasses
import os
import pickle
import tarfile

import numpy as np


class DatasetError(ValueError):
  """A dataset that is missing, truncated or in the wrong format."""


@dataclasses.dataclass(frozen=True)
class ArchiveSpec:
  """Where a CIFAR archive keeps its batches and labels."""

  folder: str
  tarball: str
  train_files: tuple[str, ...]
  test_files: tuple[str, ...]
  label_key: bytes
  num_classes: int


SPECS = {
    "cifar10": ArchiveSpec(
        "cifar-10-batches-py", "cifar-10-python.tar.gz",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), b"labels", 10),
    "cifar100": ArchiveSpec(
        "cifar-100-python", "cifar-100-python.tar.gz", ("train",), ("test",), b"fine_labels", 100),
}
IMAGE_BYTES = 32 * 32 * 3


def _decode(raw: bytes, where: str, spec: ArchiveSpec) -> tuple[np.ndarray, np.ndarray]:
  try:
    batch = pickle.loads(raw, encoding="bytes")
  except Exception as e:  # truncated or not a pickle at all
    raise DatasetError(
        f"{where}: not a readable CIFAR python batch ({type(e).__name__}: {e})") from e
  if not isinstance(batch, dict) or b"data" not in batch or spec.label_key not in batch:
    keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
    raise DatasetError(
        f"{where}: expected a dict with keys b'data' and {spec.label_key!r}, found {keys}")
  data = np.asarray(batch[b"data"])
  labels = np.asarray(batch[spec.label_key])
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
    raise DatasetError(
        f"{where}: expected uint8 data of shape (N, {IMAGE_BYTES}), got {data.dtype} {data.shape}")
  if labels.shape != (data.shape[0],):
    raise DatasetError(f"{where}: {data.shape[0]} images but {labels.shape} labels")
  if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
    raise DatasetError(
        f"{where}: labels must be in [0, {spec.num_classes}), got [{labels.min()}, {labels.max()}]")
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are R, G, B planes
  return images, labels.astype(np.int32)


def _read_folder(folder: str, names) -> dict[str, bytes]:
  out = {}
  for name in names:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
      raise DatasetError(f"missing file {path} (expected the files {list(names)} in {folder})")
    with open(path, "rb") as f:
      out[name] = f.read()
  return out


def _read_tarball(path: str, folder: str, names) -> dict[str, bytes]:
  out = {}
  try:
    with tarfile.open(path, "r:gz") as tar:
      for name in names:
        try:
          member = tar.extractfile(f"{folder}/{name}")
        except KeyError:
          raise DatasetError(f"{path}: no member {folder}/{name}") from None
        out[name] = member.read()
  except (tarfile.TarError, EOFError, OSError) as e:
    raise DatasetError(f"{path}: not a readable .tar.gz archive ({e})") from e
  return out


def load_archive(name: str, data_dir: str) -> dict[str, np.ndarray]:
  """{'train_images', ..., 'test_labels'}: uint8 NHWC images, int32 labels.

  Raises ValueError for a name without an archive, DatasetError for missing or bad files."""
  if name not in SPECS:
    raise ValueError(f"data.name must be one of {sorted(SPECS)} for data.source='archive'")
  spec = SPECS[name]
  if not data_dir or not os.path.isdir(data_dir):
    raise DatasetError(f"data.data_dir={data_dir!r} is not a directory")
  names = spec.train_files + spec.test_files
  folder = os.path.join(data_dir, spec.folder)
  tarball = os.path.join(data_dir, spec.tarball)
  if os.path.isdir(folder):
    raw, where = _read_folder(folder, names), folder
  elif os.path.isfile(tarball):
    raw, where = _read_tarball(tarball, spec.folder, names), tarball
  elif os.path.basename(os.path.normpath(data_dir)) == spec.folder:
    raw, where = _read_folder(data_dir, names), data_dir
  else:
    raise DatasetError(
        f"no {name} found in {data_dir}: expected the folder {spec.folder}/ or the archive "
        f"{spec.tarball} (the official python version)")
  parts = {n: _decode(raw[n], f"{where}/{n}", spec) for n in names}
  cat = lambda files, i: np.concatenate([parts[n][i] for n in files])
  return {
      "train_images": cat(spec.train_files, 0),
      "train_labels": cat(spec.train_files, 1),
      "test_images": cat(spec.test_files, 0),
      "test_labels": cat(spec.test_files, 1),
  }
