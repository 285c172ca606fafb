"""Base config for every experiment: the paper's scale-invariant ConvNet on CIFAR-10 (appendix B).

Every experiment config imports this one and overrides only what changes. Fields:

  seed                 seeds init, data order and augmentation.
  model.name           convnet_si | resnet18_si;  width: k (None: 32 / 64)
  model.norm           batch | layer | instance (norm_epsilon: PyTorch's 1e-5);
                       conv_impl: xla | patches (the same convolution as im2col + matmul);  train_non_si: trainable norm affine
                       + last layer (the "practical" setting);  last_layer_norm: the
                       fixed last layer's Frobenius norm (None: keep PyTorch's init);
                       init_scale: multiplies the initial SI weights (Proposition 4);
                       init_checkpoint/init_epoch: start from another run's weights and
                       BN statistics at that epoch (a fresh optimizer; Fig. 12's ablation).
  data.name/source     digits/embedded | cifar10, cifar100 / archive, tfds
  data.train_size...   first-N or seeded random subsets; augment: crop 32 pad 4 + flip;
                       order_seed: seeds the data order (None: seed).
  optim                sgd | adam; lr eta; wd lambda (Eq. 2); momentum; wd_mode
                       coupled | decoupled; fix_si_norm (+ si_norm, None = initial);
                       fixed_effective_lr (lr is then the effective LR); schedule
                       constant | cosine | linear | linear_half | step with
                       schedule_factor p (``optim.lr_schedule``; appendix J);
                       non_si_lr: -1 the SI lr, 0 frozen, > 0 their own (the released
                       code's meaning; with model.train_non_si).
  train.mode           sgd (mini-batches) | gd (full batch, micro_batch_size ghost BN
                       statistics; None = one pass with exact statistics).
  train.log_every      epoch | step (per-step records in steps.bin, logs.read_run).
  train.tensorboard    epoch | step | off: TensorBoard event files beside the logs.
  train.grad_pass_every  appendix B's gradient pass at the epoch's weights (train_grad_norm,
                       train_weight_norm, train_effective_grad_norm, train_effective_lr):
                       -1 every epoch up to 20, every 5th to 100, 10th to 200, 50th to
                       1000, 100th after (the released code's thinning); k every k; 0 off.
  train.invariance_every  check the scale-invariance identities every N steps (0: off).
  train.on_nonfinite   stop | record (log non-finite metrics and go on while the
                       weights stay finite).
  checkpoint           every_epochs (0: off), keep (latest N), snapshot_epochs (kept
                       forever). Rerunning with the same --workdir resumes exactly.
"""

from typing import Any

import ml_collections
from ml_collections import config_dict


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  """{'optim.lr': 0.1, ...} from a nested dict (``ConfigDict.to_dict()``)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def set_fields(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
  """Sets dotted fields ('optim.lr', 'seed') in place; an unknown one is an error naming it."""
  for key, value in overrides.items():
    *sections, field = key.split(".")
    node = config
    for s in sections:
      if s not in node:
        raise ValueError(f"override {key!r}: the config has no section {s!r}")
      node = node[s]
    if field not in node:
      raise ValueError(f"override {key!r}: no field {field!r} in {'.'.join(sections) or 'the config'}")
    node[field] = value


def _train_section() -> ml_collections.ConfigDict:
  """The ``train`` section of ``base_config``."""
  train = ml_collections.ConfigDict()
  train.mode = "sgd"
  train.epochs = 1001
  train.batch_size = 128
  train.drop_last = False
  train.micro_batch_size = config_dict.placeholder(int)
  train.log_every = "epoch"
  train.tensorboard = "epoch"  # TensorBoard event files: epoch | step (also per step) | off
  train.eval_every = 1
  train.eval_batch_size = 1000
  # appendix B's gradient pass (train_* norms): -1 the released thinning, k every k epochs, 0 off
  train.grad_pass_every = -1
  train.invariance_every = 0
  train.invariance_scale = 2.0
  train.on_nonfinite = "stop"
  return train


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.name = "convnet_si"
  config.model.width = config_dict.placeholder(int)
  config.model.norm = "batch"
  config.model.train_non_si = False
  config.model.norm_epsilon = 1e-5
  config.model.conv_impl = "xla"  # or "patches": im2col + matmul, faster on XLA:CPU
  config.model.last_layer_norm = config_dict.FieldReference(10.0, field_type=float)
  config.model.init_scale = 1.0  # SI weights x c at init (Proposition 4 pairs it with lr c^2, wd 1/c^2)
  config.model.init_checkpoint = ""  # warm start: another run's workdir ...
  config.model.init_epoch = config_dict.placeholder(int)  # ... and its checkpoint (None: newest)

  config.data = ml_collections.ConfigDict()
  config.data.name = "cifar10"
  config.data.source = "archive"
  config.data.data_dir = ""
  config.data.train_size = config_dict.placeholder(int)
  config.data.test_size = config_dict.placeholder(int)
  config.data.subset = "first"
  config.data.subset_seed = 0
  config.data.augment = False
  config.data.order_seed = config_dict.placeholder(int)  # None: the run's seed

  config.optim = ml_collections.ConfigDict()
  config.optim.name = "sgd"
  config.optim.lr = 0.01
  config.optim.wd = 0.001
  config.optim.momentum = 0.0
  config.optim.wd_mode = "coupled"
  config.optim.fix_si_norm = False
  config.optim.si_norm = config_dict.placeholder(float)
  config.optim.fixed_effective_lr = False
  config.optim.adam_b1 = 0.9
  config.optim.adam_b2 = 0.999
  config.optim.adam_eps = 1e-8
  config.optim.schedule = "constant"  # cosine | linear | linear_half | step (appendix J)
  config.optim.schedule_factor = 10.0  # p of the linear and step schedules
  config.optim.non_si_lr = -1.0  # trainable non-SI params: -1 the SI lr, 0 frozen, > 0 own lr

  config.train = _train_section()

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_epochs = 10  # 0: no checkpoints (and no resume)
  config.checkpoint.keep = 2
  config.checkpoint.snapshot_epochs = ()  # kept forever, e.g. the ends of phase A
  return config
