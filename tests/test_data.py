"""Loaders on archives the tests write in the official formats, tfds mock data, errors."""

import io
import os
import pickle
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import data as data_lib
from si_jax.data import archive


def cifar_batch(n, num_classes, label_key, seed):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, num_classes, n)
  batch = {b"data": images.transpose(0, 3, 1, 2).reshape(n, 3072), label_key: labels.tolist(),
           b"filenames": [b"x.png"] * n}
  if label_key == b"fine_labels":
    batch[b"coarse_labels"] = (labels // 5).tolist()
  return batch, images, labels


def write_cifar(root, name, tar=False, n=6):
  """Writes a tiny CIFAR-10/100 python archive; returns the expected arrays."""
  spec = archive.SPECS[name]
  files, expect = {}, {"train": [], "test": []}
  for i, fname in enumerate(spec.train_files + spec.test_files):
    batch, images, labels = cifar_batch(n, spec.num_classes, spec.label_key, seed=i)
    files[fname] = pickle.dumps(batch, protocol=2)
    expect["train" if fname in spec.train_files else "test"].append((images, labels))
  if tar:
    with tarfile.open(os.path.join(root, spec.tarball), "w:gz") as t:
      for fname, raw in files.items():
        info = tarfile.TarInfo(f"{spec.folder}/{fname}")
        info.size = len(raw)
        t.addfile(info, io.BytesIO(raw))
  else:
    os.makedirs(os.path.join(root, spec.folder))
    for fname, raw in files.items():
      with open(os.path.join(root, spec.folder, fname), "wb") as f:
        f.write(raw)
  cat = lambda parts, i: np.concatenate([p[i] for p in parts])
  return {f"{s}_{k}": cat(expect[s], i) for s in ("train", "test")
          for i, k in enumerate(("images", "labels"))}


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("tar", [False, True])
def test_archive_roundtrip(tmp_path, name, tar):
  # The test writes the official format itself (R, G, B planes of 1,024 bytes per row):
  # the loader must decode those bytes into the NHWC images they came from.
  expect = write_cifar(str(tmp_path), name, tar=tar)
  got = archive.load_archive(name, str(tmp_path))
  for k in expect:
    np.testing.assert_array_equal(got[k], expect[k], err_msg=k)
  n_train = 6 * len(archive.SPECS[name].train_files)
  assert got["train_images"].shape == (n_train, 32, 32, 3)


def test_extracted_folder_given_directly(tmp_path):
  expect = write_cifar(str(tmp_path), "cifar10")
  got = archive.load_archive("cifar10", str(tmp_path / "cifar-10-batches-py"))
  for k in expect:
    np.testing.assert_array_equal(got[k], expect[k], err_msg=k)


# The paper's constants, typed from the released code (nets/convnet_si.py and
# nets/resnet_si.py of the paper's repository: transforms.Normalize((0.4914, 0.4822,
# 0.4465), (0.2023, 0.1994, 0.2010)), used for CIFAR-10 and CIFAR-100 alike). They are
# not the per-channel std of CIFAR-10 (0.2470, 0.2435, 0.2616).
PAPER_MEAN = np.array([0.4914, 0.4822, 0.4465])
PAPER_STD = np.array([0.2023, 0.1994, 0.2010])


def paper_normalize(images_uint8):
  return (images_uint8 / 255.0 - PAPER_MEAN) / PAPER_STD


def paper_denormalize(images):
  """Back to the uint8 pixels (exact after rounding: float32 error << 1/255)."""
  return np.rint((np.asarray(images, np.float64) * PAPER_STD + PAPER_MEAN) * 255).astype(int)


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_normalization_uses_paper_constants(tmp_path, name, classes):
  expect = write_cifar(str(tmp_path), name)
  ds = data_lib.load_dataset(name, "archive", str(tmp_path))
  for split in ("train", "test"):
    np.testing.assert_allclose(getattr(ds, f"{split}_images"),
                               paper_normalize(expect[f"{split}_images"]), rtol=1e-5, atol=1e-5)
  # a black pixel (torchvision's zero padding) after normalization, by hand:
  # -0.4914 / 0.2023, -0.4822 / 0.1994, -0.4465 / 0.2010
  np.testing.assert_allclose(ds.pad_value, [-2.42906574, -2.41825476, -2.22139303], rtol=1e-6)
  assert ds.num_classes == classes and ds.train_images.dtype == np.float32


def rows_of(images, pool):
  """The index in ``pool`` (uint8 NHWC) of each normalized image (CIFAR pixels are random,
  so every image is unique)."""
  index = {img.tobytes(): i for i, img in enumerate(pool.astype(int))}
  return np.array([index[img.tobytes()] for img in paper_denormalize(images)])


def test_subsets(tmp_path):
  expect = write_cifar(str(tmp_path), "cifar10", n=20)  # 100 train, 20 test
  load = lambda **kw: data_lib.load_dataset("cifar10", "archive", str(tmp_path), **kw)
  first = load(train_size=30, test_size=5)
  np.testing.assert_array_equal(rows_of(first.train_images, expect["train_images"]), np.arange(30))
  np.testing.assert_array_equal(rows_of(first.test_images, expect["test_images"]), np.arange(5))
  np.testing.assert_array_equal(first.train_labels, expect["train_labels"][:30])
  r1 = load(train_size=30, test_size=5, subset="random", subset_seed=1)
  r2 = load(train_size=30, test_size=5, subset="random", subset_seed=2)
  idx1, idx2 = (rows_of(r.train_images, expect["train_images"]) for r in (r1, r2))
  for r, idx in ((r1, idx1), (r2, idx2)):
    # 30 distinct rows of the training set, in their original order, labels kept
    assert len(idx) == 30 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(r.train_labels, expect["train_labels"][idx])
    test_idx = rows_of(r.test_images, expect["test_images"])
    assert len(test_idx) == 5 and np.all(np.diff(test_idx) > 0)
    np.testing.assert_array_equal(r.test_labels, expect["test_labels"][test_idx])
  # the seed decides the subset (and it is not the first 30); the same seed repeats it
  assert not np.array_equal(idx1, idx2) and not np.array_equal(idx1, np.arange(30))
  np.testing.assert_array_equal(rows_of(load(train_size=30, subset="random", subset_seed=1)
                                        .train_images, expect["train_images"]), idx1)
  with pytest.raises(ValueError, match="data.train_size"):
    load(train_size=101)


def test_missing_dataset(tmp_path):
  with pytest.raises(data_lib.DatasetError, match="cifar-10-batches-py/ or the archive"):
    data_lib.load_dataset("cifar10", "archive", str(tmp_path))
  with pytest.raises(data_lib.DatasetError, match="is not a directory"):
    data_lib.load_dataset("cifar10", "archive", str(tmp_path / "nope"))


def test_missing_file_in_folder(tmp_path):
  write_cifar(str(tmp_path), "cifar10")
  os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
  with pytest.raises(data_lib.DatasetError, match="missing file .*data_batch_3"):
    data_lib.load_dataset("cifar10", "archive", str(tmp_path))


def test_truncated_batch_file(tmp_path):
  write_cifar(str(tmp_path), "cifar100")
  path = tmp_path / "cifar-100-python" / "train"
  path.write_bytes(path.read_bytes()[:500])
  with pytest.raises(data_lib.DatasetError, match="train: not a readable CIFAR python batch"):
    data_lib.load_dataset("cifar100", "archive", str(tmp_path))


def test_truncated_tarball(tmp_path):
  write_cifar(str(tmp_path), "cifar10", tar=True)
  path = tmp_path / "cifar-10-python.tar.gz"
  path.write_bytes(path.read_bytes()[:300])
  with pytest.raises(data_lib.DatasetError, match="cifar-10-python.tar.gz"):
    data_lib.load_dataset("cifar10", "archive", str(tmp_path))


def test_wrong_format(tmp_path):
  # a CIFAR-10 folder whose batches hold CIFAR-100 keys, and one with wrong shapes
  write_cifar(str(tmp_path), "cifar10")
  batch, _, _ = cifar_batch(4, 100, b"fine_labels", 0)
  (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(batch))
  with pytest.raises(data_lib.DatasetError,
                     match=r"data_batch_1: expected a dict with keys b'data' and b'labels'"):
    data_lib.load_dataset("cifar10", "archive", str(tmp_path))
  batch, _, _ = cifar_batch(4, 10, b"labels", 0)
  batch[b"data"] = batch[b"data"][:, :1000]
  (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(batch))
  with pytest.raises(data_lib.DatasetError, match=r"shape \(N, 3072\)"):
    data_lib.load_dataset("cifar10", "archive", str(tmp_path))
  batch, _, _ = cifar_batch(4, 10, b"labels", 0)
  batch[b"labels"] = [0, 1, 2, 17]
  (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(batch))
  with pytest.raises(data_lib.DatasetError, match=r"labels must be in \[0, 10\)"):
    data_lib.load_dataset("cifar10", "archive", str(tmp_path))


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_tfds_mock(name, classes):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):  # deterministic mock records
    ds = data_lib.load_dataset(name, "tfds")
    for split in ("train", "test"):
      source = tfds.data_source(name, split=split, download=False)
      raw = np.stack([np.asarray(source[i]["image"]) for i in range(len(source))])
      labels = np.array([int(source[i]["label"]) for i in range(len(source))])
      assert raw.shape == (12, 32, 32, 3) and raw.max() > 200  # real 0..255 pixels
      np.testing.assert_allclose(getattr(ds, f"{split}_images"), paper_normalize(raw),
                                 rtol=1e-5, atol=1e-5)
      np.testing.assert_array_equal(getattr(ds, f"{split}_labels"), labels)
  assert ds.num_classes == classes


def test_tfds_unprepared_dir_gives_clear_error(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(data_lib.DatasetError, match="tfds build cifar10"):
    data_lib.load_dataset("cifar10", "tfds", str(tmp_path))


def test_embedded_digits_is_real_data():
  """scikit-learn's 1,797 digits, split 80/20 and standardized with the train statistics."""
  from sklearn.datasets import load_digits
  ds = data_lib.load_dataset()
  assert len(ds.train_labels) == 1438 and len(ds.test_labels) == 359  # 20% of 1,797 test
  # One scale and offset for the whole set; the raw pixels are k/16, k = 0..16, so
  # both are read off the 17 normalized values: v_k = (k/16 - mean) / std.
  values = np.unique(np.concatenate([ds.train_images.ravel(), ds.test_images.ravel()]))
  assert len(values) == 17
  slope, offset = np.polyfit(np.arange(17) / 16, values.astype(np.float64), 1)
  std, mean = 1 / slope, -offset / slope
  raw = {s: np.rint((getattr(ds, f"{s}_images")[..., 0] * std + mean) * 16).astype(int)
         for s in ("train", "test")}
  # the training set's own mean and population std (measured agreement ~3e-8; the
  # sample std would be 5e-6 off)
  assert mean == pytest.approx(raw["train"].mean() / 16, rel=1e-6)
  assert std == pytest.approx(raw["train"].std() / 16, rel=1e-6)
  # train + test is exactly scikit-learn's set of (image, label), each once
  sk = load_digits()
  want = sorted(img.astype(int).tobytes() + bytes([y]) for img, y in zip(sk.images, sk.target))
  got = sorted(img.tobytes() + bytes([int(y)]) for s in ("train", "test")
               for img, y in zip(raw[s], getattr(ds, f"{s}_labels")))
  assert got == want
  with pytest.raises(ValueError, match="data.source"):
    data_lib.load_dataset("digits", "archive")
  with pytest.raises(ValueError, match="data.name"):
    data_lib.load_dataset("mnist", "embedded")


@pytest.mark.parametrize("size,pad", [(8, 1), (16, 2)])
def test_augmentation_crops_and_flips(size, pad):
  """Padding 4 on 32x32 CIFAR, scaled with the image (1 on the 8x8 digits)."""
  assert data_lib.augment.crop_padding(32) == 4 and data_lib.augment.crop_padding(size) == pad
  x = jnp.arange(2 * size * size, dtype=jnp.float32).reshape(2, size, size, 1) + 1
  black = jnp.array([-5.0])
  seen_flip, seen_shift = False, False
  for seed in range(20):
    y = data_lib.augment_batch(jax.random.key(seed), x, black)
    assert y.shape == x.shape
    for i in range(2):
      img = np.asarray(y[i, :, :, 0])
      src = np.asarray(x[i, :, :, 0])
      # every pixel is either padding or a pixel of the (possibly flipped) source
      candidates = [src, src[:, ::-1]]
      ok = False
      for cand in candidates:
        padded = np.pad(cand, pad, constant_values=-5.0)
        for dy in range(2 * pad + 1):
          for dx in range(2 * pad + 1):
            if np.array_equal(padded[dy:dy + size, dx:dx + size], img):
              ok = True
              seen_shift |= (dy, dx) != (pad, pad)
              seen_flip |= cand is candidates[1] and (dy, dx) == (pad, pad)
      assert ok
  assert seen_flip and seen_shift
