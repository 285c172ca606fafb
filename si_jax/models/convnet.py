"""The paper's three-block ConvNet, made scale-invariant (appendix B)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from si_jax.models import layers


class ConvNetSI(nn.Module):
  """ConvNet of width k as in the original code (``ConvNetDepth``, depth 3).

  Conv3x3(3 -> k) -> Norm -> ReLU, three blocks Conv3x3(c -> 2c) -> Norm -> ReLU -> MaxPool 2x2,
  a global max-pool and Linear(8k -> classes). Each bias-free conv kernel is an SI group;
  ``norm='weight'``: weight normalization per filter instead of a feature normalization."""

  width: int = 32
  num_classes: int = 10
  norm: str = "batch"
  train_non_si: bool = False
  norm_epsilon: float = 1e-5
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x_NHWC: jax.Array, train: bool) -> jax.Array:
    """Logits for ``x_NHWC``; ``train``: batch statistics (mutable ``batch_stats``)."""
    c = self.width
    x = nn.relu(self._block(x_NHWC, c, 0, train))
    for i in range(1, 4):
      c *= 2
      x = layers.max_pool_2x2(nn.relu(self._block(x, c, i, train)))
    x = jnp.max(x, axis=(1, 2))  # MaxPool over the remaining spatial map (4x4 on CIFAR)
    return nn.Dense(
        self.num_classes,
        kernel_init=layers.torch_kernel_init,
        bias_init=layers.torch_bias_init(c),
        name="classifier",
    )(x)

  def _block(self, x: jax.Array, features: int, i: int, train: bool) -> jax.Array:
    """conv_i then its normalization: a feature norm, or the conv weight-normalized."""
    conv = layers.conv(features, 3, name=f"conv_{i}", impl=self.conv_impl)
    if self.norm == "weight":
      gain = (self.param(f"gain_{i}", nn.initializers.ones, (features,))
              if self.train_non_si else None)
      return layers.weight_normalized(conv, x, gain)
    norm = layers.Norm(self.norm, affine=self.train_non_si, epsilon=self.norm_epsilon,
                       name=f"norm_{i}")
    return norm(conv(x), train)

  def si_groups(self) -> dict[str, tuple[layers.ParamPath, ...]]:
    """Each conv kernel is scale-invariant on its own."""
    return {f"conv_{i}": layers.paths_of([f"conv_{i}"]) for i in range(4)}

  last_layer = ("classifier", "kernel")
