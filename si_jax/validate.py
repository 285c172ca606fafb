"""Config checks that run before any compute; each error names the field."""

from __future__ import annotations

import os

import ml_collections

from si_jax import data as data_lib
from si_jax import models, optim

TRAIN_MODES = ("sgd", "gd")
LOG_EVERY = ("epoch", "step")
SECTIONS = ("model", "data", "optim", "train")


def _positive_int(value, field):
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ValueError(f"{field} must be a positive integer, got {value!r}")


def _one_of(value, allowed, field):
  if value not in allowed:
    raise ValueError(f"{field} must be one of {tuple(allowed)}, got {value!r}")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad field."""
  for section in SECTIONS:
    if section not in config:
      raise ValueError(f"config has no '{section}' section")
  if not isinstance(config.seed, int):
    raise ValueError(f"seed must be an integer, got {config.seed!r}")
  m, d, o, t = config.model, config.data, config.optim, config.train
  _one_of(m.name, sorted(models.MODELS), "model.name")
  _one_of(m.norm, models.NORMS, "model.norm")
  _one_of(m.get("conv_impl", "xla"), models.layers.CONV_IMPLS, "model.conv_impl")
  if m.width is not None:
    _positive_int(m.width, "model.width")
  if not m.norm_epsilon >= 0:
    raise ValueError(f"model.norm_epsilon must be non-negative, got {m.norm_epsilon!r}")
  if not (isinstance(m.get("init_scale", 1.0), (int, float)) and 0 < m.get("init_scale", 1.0) < float("inf")):
    raise ValueError(f"model.init_scale must be a positive finite number, got {m.get('init_scale')!r}")
  if m.last_layer_norm is not None and not m.last_layer_norm > 0:
    raise ValueError(f"model.last_layer_norm must be positive or None, got {m.last_layer_norm!r}")
  _one_of(d.name, data_lib.NAMES, "data.name")
  _one_of(d.source, data_lib.SOURCES, "data.source")
  if d.source == "archive" and not (d.data_dir and os.path.isdir(d.data_dir)):
    raise ValueError(f"data.data_dir={d.data_dir!r} does not exist (data.source='archive' "
                     "reads the official CIFAR python archive from it)")
  for field in ("train_size", "test_size"):
    if d[field] is not None:
      _positive_int(d[field], f"data.{field}")
  _one_of(o.name, optim.OPTIMIZERS, "optim.name")
  _one_of(o.wd_mode, optim.WD_MODES, "optim.wd_mode")
  if not o.lr > 0:
    raise ValueError(f"optim.lr must be positive, got {o.lr!r}")
  if not o.wd >= 0:
    raise ValueError(f"optim.wd must be non-negative, got {o.wd!r}")
  if not 0 <= o.momentum < 1:
    raise ValueError(f"optim.momentum must be in [0, 1), got {o.momentum!r}")
  if o.fix_si_norm and o.fixed_effective_lr:
    raise ValueError("optim.fix_si_norm and optim.fixed_effective_lr are exclusive "
                     "(with a fixed norm the effective LR is already fixed)")
  _one_of(t.mode, TRAIN_MODES, "train.mode")
  _one_of(t.log_every, LOG_EVERY, "train.log_every")
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
