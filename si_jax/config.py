"""The base run config: the paper's scale-invariant ConvNet on CIFAR-10 (appendix B).

configs/*.py import ``base_config`` and override what changes; each field's comment is its
meaning. ``flatten`` and ``set_fields`` address fields by dotted name ('optim.lr')."""

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
  """Sets dotted fields ('optim.lr', 'seed') in place; ValueError naming an unknown one."""
  for key, value in overrides.items():
    *sections, field = key.split(".")
    node = config
    for s in sections:
      if s not in node:
        raise ValueError(f"override {key!r}: the config has no section {s!r}")
      node = node[s]
    if field not in node:
      raise ValueError(f"override {key!r}: no field {field!r} in "
                       f"{'.'.join(sections) or 'the config'}")
    node[field] = value


def _train_section() -> ml_collections.ConfigDict:
  """The ``train`` section of ``base_config``."""
  train = ml_collections.ConfigDict()
  train.mode = "sgd"  # sgd (mini-batches) | gd (full batch)
  train.epochs = 1001
  train.batch_size = 128
  # cross_entropy | mse: ||logits - onehot||^2 / K (Kodryan et al. 2022; metrics.mse)
  train.loss = "cross_entropy"
  train.drop_last = False
  # gd: ghost BN statistics of micro-batches of this size (None: one exact pass)
  train.micro_batch_size = config_dict.placeholder(int)
  train.log_every = "epoch"  # epoch | step (per-step records in steps.bin)
  train.tensorboard = "epoch"  # TensorBoard event files: epoch | step (also per step) | off
  train.eval_every = 1
  # each epoch record carries the detector's phase (A/B/C) and destabilization count
  train.live_phases = True
  train.eval_batch_size = 1000
  # appendix B's gradient pass at the epoch's weights (train_grad_norm, train_weight_norm,
  # train_effective_grad_norm, train_effective_lr): -1 the released code's thinning (every
  # epoch up to 20, every 5th to 100, 10th to 200, 50th to 1000, 100th after), k every
  # k epochs, 0 off
  train.grad_pass_every = -1
  # also on the gradient pass's epochs: angle_to_init and distance_to_init of the SI
  # parameters, and Hutchinson's train_hessian_trace over them with this many probes (0: off)
  train.distance_to_init = False
  train.hessian_probes = 0
  train.invariance_every = 0  # check the scale-invariance identities every N steps (0: off)
  train.invariance_scale = 2.0  # ... with this rescaling factor c
  # re-check each SI group's (1a) on the first batch every N epochs (0: off): the record's
  # si_group_change is the worst group's output change; a warning names a group above rtol
  train.check_groups_every = 0
  train.check_groups_rtol = 1e-3
  # stop | record (log non-finite metrics and go on while the weights stay finite)
  train.on_nonfinite = "stop"
  return train


def _optim_section() -> ml_collections.ConfigDict:
  """The ``optim`` section of ``base_config``."""
  optim = ml_collections.ConfigDict()
  optim.name = "sgd"  # sgd | adam
  optim.lr = 0.01  # eta of Eq. (2)
  optim.wd = 0.001  # lambda of Eq. (2)
  optim.momentum = 0.0
  optim.wd_mode = "coupled"  # coupled | decoupled (si_jax.optim)
  optim.fix_si_norm = False  # keep the SI weight norm fixed (Figs. 5, 12) ...
  optim.si_norm = config_dict.placeholder(float)  # ... at this norm (None: initial)
  optim.fixed_effective_lr = False  # lr is then the effective LR eta / rho^2
  # off | total | per_filter: train on the sphere, lr the fixed effective LR (wd 0;
  # Kodryan et al. 2022's fix_elr | fix_all_elr)
  optim.sphere = "off"
  optim.adam_b1 = 0.9
  optim.adam_b2 = 0.999
  optim.adam_eps = 1e-8
  optim.schedule = "constant"  # cosine | linear | linear_half | step (appendix J)
  optim.schedule_factor = 10.0  # p of the linear and step schedules
  optim.schedule_unit = "step"  # step | epoch: the LR changes every update | epoch
  optim.non_si_lr = -1.0  # trainable non-SI params: -1 the SI lr, 0 frozen, > 0 own lr
  return optim


def base_config() -> ml_collections.ConfigDict:
  """The paper's ConvNet width 32 on CIFAR-10, SGD, lr 0.01, wd 0.001, 1001 epochs."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # seeds init, data order and augmentation

  config.model = ml_collections.ConfigDict()
  # convnet_si | resnet18_si | "package.module:attr": your own model (si_jax.models.imported)
  config.model.name = "convnet_si"
  config.model.width = config_dict.placeholder(int)  # k; None: 32 (ConvNet), 64 (ResNet)
  config.model.norm = "batch"  # batch | layer | instance
  # trainable norm affine and last layer (the "practical" setting, Fig. 21)
  config.model.train_non_si = False
  config.model.norm_epsilon = 1e-5  # PyTorch's
  config.model.conv_impl = "xla"  # or "patches": im2col + matmul, faster on XLA:CPU
  # the fixed last layer's Frobenius norm (None: keep PyTorch's init; appendix G)
  config.model.last_layer_norm = config_dict.FieldReference(10.0, field_type=float)
  # SI weights x c at init (Proposition 4 pairs it with lr c^2, wd 1/c^2)
  config.model.init_scale = 1.0
  config.model.init_checkpoint = ""  # warm start: another run's workdir ...
  config.model.init_epoch = config_dict.placeholder(int)  # ... and its checkpoint (None: newest)

  config.data = ml_collections.ConfigDict()
  config.data.name = "cifar10"  # digits | cifar10 | cifar100
  config.data.source = "archive"  # embedded (digits) | archive | tfds
  config.data.data_dir = ""
  config.data.train_size = config_dict.placeholder(int)  # None: the whole split
  config.data.test_size = config_dict.placeholder(int)
  config.data.subset = "first"  # first N examples | random (seeded by subset_seed)
  config.data.subset_seed = 0
  config.data.label_noise = 0.0  # this fraction of the train labels set to another class
  config.data.label_noise_seed = 0  # ... which ones and to what (test labels stay clean)
  config.data.augment = False  # random crop (pad 4 on 32 pixels) and horizontal flip
  config.data.order_seed = config_dict.placeholder(int)  # None: the run's seed

  config.optim = _optim_section()

  config.train = _train_section()

  config.checkpoint = ml_collections.ConfigDict()
  # rerunning with the same --workdir resumes from the newest checkpoint, bit for bit
  config.checkpoint.every_epochs = 10  # 0: no checkpoints (and no resume)
  config.checkpoint.keep = 2  # the latest N
  config.checkpoint.snapshot_epochs = ()  # kept forever, e.g. the ends of phase A
  return config
