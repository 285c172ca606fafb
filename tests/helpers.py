"""Helpers shared by several test modules (no test module imports another)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from si_jax import config as config_lib

BIAS_INIT = nn.initializers.normal(0.5)  # nonzero biases: a zero tensor is excluded


def tiny_config(**overrides):
  """A width-4 ConvNet on 256 embedded digits, 2 epochs; ``overrides``: 'section.field'."""
  config = config_lib.base_config()
  config.model.width = 4
  config.data.name, config.data.source = "digits", "embedded"
  config.data.train_size, config.data.test_size = 256, 100
  config.optim.lr, config.optim.wd = 0.1, 0.01
  config.train.epochs = 2
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def paths(*names):
  """('a/b', ...) -> (('a', 'b'), ...)."""
  return tuple(tuple(n.split("/")) for n in names)


class LayerNormMLP(nn.Module):
  """Dense -> LN (affine) -> relu -> Dense -> LN -> relu -> Dense."""

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(16, bias_init=BIAS_INIT, name="dense_0")(x)
    x = nn.relu(nn.LayerNorm(bias_init=BIAS_INIT, name="ln_0")(x))
    x = nn.Dense(16, bias_init=BIAS_INIT, name="dense_1")(x)
    x = nn.relu(nn.LayerNorm(use_scale=False, use_bias=False, name="ln_1")(x))
    return nn.Dense(10, bias_init=BIAS_INIT, name="head")(x)


def run_optimizer(tx, params, grads_seq):
  """Applies ``tx`` (jitted) to ``params`` with each gradient of ``grads_seq`` in turn;
  returns the params after each step."""
  state = tx.init(params)
  update = jax.jit(tx.update)
  out = []
  for grads in grads_seq:
    updates, state = update(grads, state, params)
    params = jax.tree.map(jnp.add, params, updates)
    out.append(params)
  return out
