"""The paper's three-block ConvNet, made scale-invariant (appendix B)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from si_jax.models import layers


class ConvNetSI(nn.Module):
  """ConvNet of width k as in the original code (``ConvNetDepth``, depth 3).

  Conv3x3(3 -> k) -> Norm -> ReLU, then three blocks
  Conv3x3(c -> 2c) -> Norm -> ReLU -> MaxPool 2x2, a global max-pool and a
  Linear(8k -> classes) with bias. Every conv is bias-free and followed by a
  normalization, so each conv kernel is its own scale-invariant group.
  """

  width: int = 32
  num_classes: int = 10
  norm: str = "batch"
  train_non_si: bool = False
  norm_epsilon: float = 1e-5
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x_NHWC: jax.Array, train: bool) -> jax.Array:
    """Logits for ``x_NHWC``; ``train``: batch statistics (mutable ``batch_stats``)."""
    norm = lambda name: layers.Norm(self.norm, affine=self.train_non_si,
                                    epsilon=self.norm_epsilon, name=name)
    c = self.width
    x = layers.conv(c, 3, name="conv_0", impl=self.conv_impl)(x_NHWC)
    x = nn.relu(norm("norm_0")(x, train))
    for i in range(1, 4):
      c *= 2
      x = layers.conv(c, 3, name=f"conv_{i}", impl=self.conv_impl)(x)
      x = nn.relu(norm(f"norm_{i}")(x, train))
      x = layers.max_pool_2x2(x)
    x = jnp.max(x, axis=(1, 2))  # MaxPool over the remaining spatial map (4x4 on CIFAR)
    return nn.Dense(
        self.num_classes,
        kernel_init=layers.torch_kernel_init,
        bias_init=layers.torch_bias_init(c),
        name="classifier",
    )(x)

  def si_groups(self) -> dict[str, tuple[layers.ParamPath, ...]]:
    """Each conv kernel is scale-invariant on its own."""
    return {f"conv_{i}": layers.paths_of([f"conv_{i}"]) for i in range(4)}

  last_layer = ("classifier", "kernel")
