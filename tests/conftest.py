"""Shared fixtures: tiny models and a real batch of the embedded digits."""

import os
import tempfile

# A persistent compilation cache shared by the tests and the subprocesses they start:
# many tests compile the same tiny programs, and every resumed run recompiles.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "si_jax_test_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from si_jax import data as data_lib  # noqa: E402
from si_jax import models  # noqa: E402


@pytest.fixture(scope="session")
def digits():
  return data_lib.load_dataset("digits", "embedded")


@pytest.fixture(scope="session")
def digits_batch(digits):
  return digits.train_images[:64], digits.train_labels[:64]


def make(name, norm="batch", width=4, input_shape=(8, 8, 1), num_classes=10, seed=0,
         train_non_si=False, last_layer_norm=10.0, norm_epsilon=1e-5):
  model = models.create_model(name, num_classes=num_classes, width=width, norm=norm,
                              train_non_si=train_non_si, norm_epsilon=norm_epsilon)
  variables = models.init_variables(model, jax.random.key(seed), input_shape, last_layer_norm)
  return model, variables, models.param_groups(model)


def rng_images(n, shape, seed=0):
  return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)
