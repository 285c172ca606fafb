"""The pre-LN transformer and the modular-addition task.

Its stated SI groups are SI (rescaling one by 3.7 moves the logits by < 1e-6 relative
with LayerNorm's epsilon 0, < 1e-4 with 1e-5; a non-SI tensor moves them by > 1e-2) and
are the canonical ones among those ``find_si_groups`` finds; the task is every sum
mod p once, split by a fixed seed; a run through the trainer logs finite numbers.
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import data, models, si_groups, validate
from si_jax.data import sequence
from si_jax.engine import train

from helpers import tiny_config

WIDTH, BATCH = 16, 32
RESCALE = 3.7


def modadd_config(**overrides):
  """``tiny_config`` as a width-16 transformer on a + b mod 31 (train_non_si)."""
  return tiny_config(**{"model.name": "transformer", "model.width": WIDTH,
                        "model.norm": "layer", "model.train_non_si": True,
                        "data.name": "modadd31", "data.train_size": None,
                        "data.test_size": None, **overrides})


def model_at_generic_point(name, norm_epsilon=1e-5):
  """(model, params at a generic point: LN affines and biases moved off 1 and 0, tokens)."""
  model = models.create_model(name, num_classes=31, width=WIDTH, norm="layer",
                              train_non_si=True, norm_epsilon=norm_epsilon)
  tokens = jnp.asarray(sequence.modular_addition(31)["train_images"][:BATCH])
  params = models.init_variables(model, jax.random.key(1), tokens.shape[1:])["params"]
  return model, si_groups.generic_point(params, seed=3)[0], tokens


def rescaled(params, paths, c):
  for path in paths:
    params = models.set_path(params, path, c * models.get_path(params, path))
  return params


# LayerNorm's epsilon makes LN(c x) differ from LN(x) by ~ eps / var(x) (1 - 1/c^2) / 2,
# largest at the 4-entry query and key heads of width 16 (var ~ 1/3): epsilon 0 leaves
# float32 rounding alone
@pytest.mark.parametrize("name, norm_epsilon, bound", [
    ("transformer", 0.0, 1e-6),
    ("transformer_qknorm", 0.0, 1e-6),
    ("transformer_qknorm_affine", 0.0, 1e-6),
    ("transformer_qknorm", 1e-5, 1e-4),
])
def test_logits_are_invariant_to_rescaling_each_stated_group(name, norm_epsilon, bound):
  model, params, tokens = model_at_generic_point(name, norm_epsilon)
  logits = jax.jit(lambda p: model.apply({"params": p}, tokens))
  y = logits(params)
  change = lambda p: float(jnp.linalg.norm(logits(p) - y) / jnp.linalg.norm(y))
  groups = model.si_groups()
  assert len(groups) == (5 if "qknorm" in name else 1)
  assert len(groups["residual"]) == 2 + 4 * 2  # 2 embeddings, 2 blocks x 2 projections x 2
  for paths in groups.values():
    assert change(rescaled(params, paths, RESCALE)) < bound
  # the control: a non-SI tensor rescaled alike moves the logits by orders of magnitude more
  assert change(rescaled(params, [("block_0_attn", "value", "kernel")], RESCALE)) > 1e-2


def test_stated_groups_are_canonical_among_the_minimal_groups_found():
  # find_si_groups at a generic point returns every minimal group: the stated ones, and
  # the residual group with a block's value projection (and out bias) in place of its
  # out kernel, 2^2 choices over 2 blocks
  model, params, tokens = model_at_generic_point("transformer_qknorm")
  fn = lambda p, x: model.apply({"params": p}, x)
  found = si_groups.find_si_groups(fn, params, tokens, generic=False)
  found = {frozenset(paths) for paths in found.values()}
  stated = {frozenset(paths) for paths in model.si_groups().values()}
  assert stated <= found
  assert len(found) == len(stated) + 3


def test_modular_addition_is_every_sum_once_split_by_a_fixed_seed():
  p = 31
  task = sequence.modular_addition(p)
  tokens = np.concatenate([task["train_images"], task["test_images"]])
  labels = np.concatenate([task["train_labels"], task["test_labels"]])
  assert tokens.shape == (p * p, 3) and tokens.dtype == labels.dtype == np.int32
  assert (len(task["train_labels"]), len(task["test_labels"])) == (481, 480)
  assert len({tuple(t) for t in tokens}) == p * p  # each pair once
  assert np.all(tokens[:, 2] == p)  # '=' is token p
  by_pair = {(int(a), int(b)): int(y) for (a, b, _), y in zip(tokens, labels)}
  assert by_pair[(0, 0)] == 0 and by_pair[(30, 5)] == 4 and by_pair[(17, 14)] == 0
  assert by_pair[(12, 13)] == 25 and by_pair[(30, 30)] == 29
  again = sequence.modular_addition(p)
  assert all(np.array_equal(task[k], again[k]) for k in task)
  other = sequence.modular_addition(p, seed=1)
  assert not np.array_equal(task["train_labels"], other["train_labels"])
  ds = data.load_dataset("modadd47", "embedded")
  assert len(ds.train_labels) + len(ds.test_labels) == 47 * 47 and ds.num_classes == 47
  assert ds.image_shape == (3,) and ds.train_images.dtype == np.int32


@pytest.mark.parametrize("overrides, field", [
    ({"data.name": "digits", "data.train_size": 300}, "data.name"),
    ({"model.name": "convnet_si", "model.norm": "batch"}, "model.name"),
    ({"data.augment": True}, "data.augment"),
    ({"model.norm": "batch"}, "model.norm"),
    ({"model.width": 18}, "model.width"),
    ({"data.source": "archive"}, "data.data_dir"),
])
def test_bad_transformer_config_names_the_field(overrides, field):
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    validate.validate_config(modadd_config(**overrides))


def test_two_epochs_through_the_trainer_log_finite_loss_and_weight_norm(tmp_path):
  config = modadd_config(**{"train.grad_pass_every": 0, "checkpoint.every_epochs": 0,
                            "train.tensorboard": "off"})
  train.train_and_evaluate(config, str(tmp_path), progress=False)
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["epoch"] for r in records] == [1, 2]
  for r in records:
    assert math.isfinite(r["loss"]) and math.isfinite(r["test_loss"])
    assert math.isfinite(r["weight_norm"]) and r["weight_norm"] > 0
