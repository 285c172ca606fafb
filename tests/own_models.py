"""Models written without si_jax in mind, named by tests as 'own_models:Attr'.

Flax's default init throughout: zero biases, norm scales 1.
"""

import flax.linen as nn
import jax.numpy as jnp


class OwnMLP(nn.Module):
  """Flatten -> Dense -> BatchNorm -> relu -> Dense -> LayerNorm -> relu -> head.

  SI groups at a generic point (by hand): dense_0's kernel (train-mode BN removes its
  bias); dense_1's kernel with its bias (LayerNorm sees both); bn_0's scale and bias with
  dense_1's bias (relu passes the scale c on to dense_1's kernel term).
  """

  num_classes: int
  width: int = 16

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(self.width, name="dense_0")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn_0")(x))
    x = nn.Dense(self.width, name="dense_1")(x)
    x = nn.relu(nn.LayerNorm(name="ln_1")(x))
    return nn.Dense(self.num_classes, name="head")(x)


class LayerNormNet(nn.Module):
  """Flatten -> Dense -> LayerNorm (no affine) -> relu -> head; no ``train`` argument."""

  num_classes: int
  hidden: int = 8

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(self.hidden, name="dense_0")(x.reshape((x.shape[0], -1)))
    x = nn.relu(nn.LayerNorm(use_scale=False, use_bias=False, name="ln")(x))
    return nn.Dense(self.num_classes, name="head")(x)


def layer_norm_net(num_classes):
  """A factory: ``LayerNormNet`` with 8 hidden units."""
  return LayerNormNet(num_classes=num_classes)


class PlainMLP(nn.Module):
  """No normalization: no scale-invariant group."""

  num_classes: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_classes)(nn.relu(nn.Dense(8)(x.reshape((x.shape[0], -1)))))


class BrokenNet(nn.Module):
  """Builds, but fails on its first call."""

  num_classes: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_classes)(jnp.einsum("bij,jk->bik", x, x))


NOT_A_MODEL = 3
