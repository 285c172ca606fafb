"""Config checks that run before any compute; each error names the field."""

from __future__ import annotations

import math
import os

import ml_collections

from si_jax import config as config_lib
from si_jax import data as data_lib
from si_jax import metrics, models, optim

TRAIN_MODES = ("sgd", "gd")
LOG_EVERY = ("epoch", "step")
SECTIONS = ("model", "data", "optim", "train")


def _positive_int(value, field):
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ValueError(f"{field} must be a positive integer, got {value!r}")


def _one_of(value, allowed, field):
  if value not in allowed:
    raise ValueError(f"{field} must be one of {tuple(allowed)}, got {value!r}")


def _check_finite_numbers(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a number that is not finite (it would surface as a divergence)."""
  for key, value in config_lib.flatten(config.to_dict()).items():
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{key} must be a finite number, got {value!r}")


def _check_train(t: ml_collections.ConfigDict) -> None:
  """The ``train`` section's fields."""
  _one_of(t.mode, TRAIN_MODES, "train.mode")
  _one_of(t.get("loss", "cross_entropy"), metrics.LOSSES, "train.loss")
  _one_of(t.log_every, LOG_EVERY, "train.log_every")
  _one_of(t.get("tensorboard", "epoch"), ("epoch", "step", "off"), "train.tensorboard")
  for field in ("epochs", "batch_size", "eval_every", "eval_batch_size"):
    _positive_int(t[field], f"train.{field}")
  if t.micro_batch_size is not None:
    _positive_int(t.micro_batch_size, "train.micro_batch_size")
    if t.mode != "gd":
      raise ValueError("train.micro_batch_size is for train.mode='gd' (full-batch GD)")
  if not isinstance(t.invariance_every, int) or t.invariance_every < 0:
    raise ValueError(f"train.invariance_every must be an integer >= 0, got {t.invariance_every!r}")
  if not t.invariance_scale > 0:
    raise ValueError(f"train.invariance_scale must be positive, got {t.invariance_scale!r}")
  _one_of(t.on_nonfinite, ("stop", "record"), "train.on_nonfinite")
  check = t.get("check_groups_every", 0)
  if not isinstance(check, int) or isinstance(check, bool) or check < 0:
    raise ValueError(f"train.check_groups_every must be an integer >= 0, got {check!r}")
  if not t.get("check_groups_rtol", 1e-3) > 0:
    raise ValueError(f"train.check_groups_rtol must be positive, got {t.check_groups_rtol!r}")
  if not isinstance(t.get("distance_to_init", False), bool):
    raise ValueError(f"train.distance_to_init must be True or False, got {t.distance_to_init!r}")
  probes = t.get("hessian_probes", 0)
  if not isinstance(probes, int) or isinstance(probes, bool) or probes < 0:
    raise ValueError(f"train.hessian_probes must be an integer >= 0, got {probes!r}")
  if (probes or t.get("distance_to_init", False)) and t.get("grad_pass_every", 0) == 0:
    raise ValueError("train.hessian_probes / train.distance_to_init are logged on the "
                     "gradient pass's epochs: set train.grad_pass_every to -1 or k > 0")
  every = t.get("grad_pass_every", 0)
  if not isinstance(every, int) or isinstance(every, bool) or every < -1:
    raise ValueError(f"train.grad_pass_every must be -1 (thinned), 0 (off) or a positive "
                     f"integer, got {every!r}")


def _check_sequence_task(m: ml_collections.ConfigDict, d: ml_collections.ConfigDict) -> None:
  """A transformer reads token sequences, and only a model by import path can as well."""
  tokens = d.name in data_lib.SEQUENCE_NAMES
  if m.name in models.transformer.PRESETS and not tokens:
    raise ValueError(f"model.name={m.name!r} reads token sequences: data.name must be one "
                     f"of {data_lib.SEQUENCE_NAMES}, got {d.name!r}")
  if tokens and not (m.name in models.transformer.PRESETS or models.imported.is_imported(m.name)):
    raise ValueError(f"data.name={d.name!r} is token sequences: model.name must be one of "
                     f"{tuple(models.transformer.PRESETS)} or your own, got {m.name!r}")
  if tokens and d.augment:
    raise ValueError(f"data.augment crops and flips images; data.name={d.name!r} is token "
                     "sequences: set it to False")


MAX_SEED = 2**32 - 1  # numpy's and JAX's seeds are unsigned 32-bit words


def _check_seed(seed, field: str) -> None:
  if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
    raise ValueError(f"{field} must be an integer from 0 to 2**32-1, got {seed!r}")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad field of a run config, before any file is written."""
  for section in SECTIONS:
    if section not in config:
      raise ValueError(f"config has no '{section}' section")
  _check_finite_numbers(config)
  _check_seed(config.seed, "seed")
  if config.data.get("order_seed") is not None:
    _check_seed(config.data.order_seed, "data.order_seed")
  m, d, o, t = config.model, config.data, config.optim, config.train
  models.check_options(name=m.name, norm=m.norm, width=m.width, norm_epsilon=m.norm_epsilon,
                       conv_impl=m.get("conv_impl", "xla"), last_layer_norm=m.last_layer_norm)
  init_scale = m.get("init_scale", 1.0)
  if not (isinstance(init_scale, (int, float)) and 0 < init_scale < float("inf")):
    raise ValueError(f"model.init_scale must be a positive finite number, got "
                     f"{m.get('init_scale')!r}")
  if m.get("init_checkpoint") and not os.path.isdir(m.init_checkpoint):
    raise ValueError(f"model.init_checkpoint={m.init_checkpoint!r} is not a directory (a run's "
                     "workdir to warm-start from)")
  if m.get("init_epoch") is not None:
    _positive_int(m.init_epoch, "model.init_epoch")
  _one_of(d.name, data_lib.NAMES, "data.name")
  _one_of(d.source, data_lib.SOURCES, "data.source")
  _one_of(d.get("subset", "first"), data_lib.SUBSETS, "data.subset")
  if d.source == "archive" and not (d.data_dir and os.path.isdir(d.data_dir)):
    raise ValueError(f"data.data_dir={d.data_dir!r} does not exist (data.source='archive' "
                     "reads the official CIFAR python archive from it)")
  for field in ("train_size", "test_size"):
    if d[field] is not None:
      _positive_int(d[field], f"data.{field}")
  data_lib.check_label_noise(d.get("label_noise", 0.0))
  _check_seed(d.get("label_noise_seed", 0), "data.label_noise_seed")
  _check_sequence_task(m, d)
  optim.check_options(**o.to_dict(), train_non_si=m.train_non_si)
  if o.fix_si_norm and o.fixed_effective_lr:
    raise ValueError("optim.fix_si_norm and optim.fixed_effective_lr are exclusive "
                     "(with a fixed norm the effective LR is already fixed)")
  if o.get("sphere", "off") == "per_filter" and m.norm == "layer":
    raise ValueError("optim.sphere='per_filter' needs each channel normalized on its own "
                     "(model.norm batch or instance); with layer norm use 'total'")
  _check_train(t)
  if "checkpoint" in config:
    c = config.checkpoint
    if not isinstance(c.every_epochs, int) or c.every_epochs < 0:
      raise ValueError(f"checkpoint.every_epochs must be an integer >= 0, got {c.every_epochs!r}")
    _positive_int(c.keep, "checkpoint.keep")
    if not all(isinstance(e, int) and e > 0 for e in c.snapshot_epochs):
      raise ValueError(f"checkpoint.snapshot_epochs must hold positive integers, got "
                       f"{c.snapshot_epochs!r}")
  if t.mode == "gd" and d.augment:
    raise ValueError("data.augment is not supported with train.mode='gd' (full-batch GD "
                     "uses the fixed subset)")
