"""The training state (one pytree), the static step context, and ``create_state``."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from si_jax import data as data_lib
from si_jax import invariance, models, optim
from si_jax.engine import checkpoint as checkpoint_lib


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training: a pytree, stacked over runs in a family."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


@flax.struct.dataclass
class StepContext:
  """What the pure step functions close over (static): model, optimizer, groups, the loss.

  ``loss``: the per-example loss, a key of ``metrics.LOSSES`` (``train.loss``)."""

  model: nn.Module = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  groups: models.ParamGroups = flax.struct.field(pytree_node=False)
  fixed_effective_lr: bool = flax.struct.field(pytree_node=False, default=False)
  hessian_probes: int = flax.struct.field(pytree_node=False, default=0)
  loss: str = flax.struct.field(pytree_node=False, default="cross_entropy")


def load_dataset(config) -> data_lib.Dataset:
  """The dataset a config asks for (its data section, less the training-time options)."""
  return data_lib.load_dataset(**{k: v for k, v in config.data.to_dict().items()
                                  if k not in ("augment", "order_seed")})


def _warm_start(mc, variables):
  """The weights and BN statistics of ``model.init_checkpoint`` (ValueError: other shapes)."""
  loaded, stats, _ = checkpoint_lib.load_weights(mc.init_checkpoint, mc.get("init_epoch"))
  shapes = lambda t: jax.tree.map(jnp.shape, t)
  if shapes(loaded) != shapes(variables["params"]) or shapes(stats) != shapes(
      variables["batch_stats"]):
    raise ValueError(f"model.init_checkpoint={mc.init_checkpoint!r} holds another model's "
                     "weights (shapes differ from this config's model)")
  return {"params": jax.tree.map(jnp.asarray, loaded),
          "batch_stats": jax.tree.map(jnp.asarray, stats)}


def total_steps(config, num_train: int) -> int:
  """T: the run's number of updates (what a learning-rate schedule spans)."""
  tc = config.train
  if tc.mode == "gd":
    return tc.epochs
  per_epoch = num_train // tc.batch_size if tc.drop_last else -(-num_train // tc.batch_size)
  return tc.epochs * per_epoch


def create_state(config: ml_collections.ConfigDict, dataset: data_lib.Dataset
                 ) -> tuple[StepContext, TrainState]:
  """(step context, initial state) from a validated config and its dataset."""
  mc, oc = config.model, config.optim
  model = models.create_model(
      mc.name, num_classes=dataset.num_classes, width=mc.width, norm=mc.norm,
      train_non_si=mc.train_non_si, norm_epsilon=mc.norm_epsilon,
      conv_impl=mc.get("conv_impl", "xla"))
  init_key, aug_key = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 0))
  variables = models.init_variables(model, init_key, dataset.image_shape, mc.last_layer_norm)
  groups = models.param_groups(model)
  if mc.get("init_checkpoint"):
    variables = _warm_start(mc, variables)
  params = variables["params"]
  if mc.get("init_scale", 1.0) != 1.0:
    params = invariance.scale_paths(params, groups.si_paths, mc.init_scale)
  sphere = oc.get("sphere", "off")
  if sphere == "per_filter":  # the released fix_all_elr starts from a common filter norm
    params = optim.onto_filter_sphere(params, groups.si_mask(params))
  T = total_steps(config, len(dataset.train_labels))
  tx = optim.make_optimizer(params, groups, **oc.to_dict(), total_steps=T,
                            steps_per_epoch=T // config.train.epochs,  # 1 in GD mode
                            keep_initial=config.train.get("distance_to_init", False))
  state = TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables["batch_stats"],
      opt_state=tx.init(params),
      rng=aug_key,
  )
  return StepContext(model, tx, groups, oc.fixed_effective_lr or sphere != "off",
                     config.train.get("hessian_probes", 0),
                     config.train.get("loss", "cross_entropy")), state
