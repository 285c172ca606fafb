"""Pre-activation ResNet-18 made scale-invariant as in Li & Arora (2020, App. C)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from si_jax.models import layers

STAGES = 4
BLOCKS_PER_STAGE = 2


class PreActBlock(nn.Module):
  """Pre-activation basic block: out = ReLU(Norm1(x)), y = F(out) + shortcut.

  F(out) = Conv3x3(ReLU(Norm2(Conv3x3_stride(out)))); shortcut x, or Conv1x1_stride(Norm_s(out))."""

  features: int
  stride: int
  downsample: bool
  norm: str
  affine: bool
  epsilon: float
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """The block's output for ``x`` (NHWC)."""
    norm = lambda name: layers.Norm(self.norm, affine=self.affine, epsilon=self.epsilon, name=name)
    out = nn.relu(norm("norm1")(x, train))
    if self.downsample:  # reads the pre-activated out, not x
      shortcut = norm("shortcut_norm")(out, train)
      shortcut = layers.conv(self.features, 1, self.stride, name="shortcut_conv",
                             impl=self.conv_impl)(shortcut)
    else:
      shortcut = x
    out = layers.conv(self.features, 3, self.stride, name="conv1", impl=self.conv_impl)(out)
    out = nn.relu(norm("norm2")(out, train))
    out = layers.conv(self.features, 3, name="conv2", impl=self.conv_impl)(out)
    return out + shortcut


class ResNet18SI(nn.Module):
  """Pre-activation ResNet-18 of width k: stages k, 2k, 4k, 8k, two blocks each.

  Stem Conv3x3(3 -> k), blocks, Norm, ReLU, global average pool, Linear(8k -> classes, no bias)."""

  width: int = 64
  num_classes: int = 10
  norm: str = "batch"
  train_non_si: bool = False
  norm_epsilon: float = 1e-5
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x_NHWC: jax.Array, train: bool) -> jax.Array:
    """Logits for ``x_NHWC``; ``train``: batch statistics (mutable ``batch_stats``)."""
    x = layers.conv(self.width, 3, name="stem", impl=self.conv_impl)(x_NHWC)
    in_features = self.width
    for stage in range(STAGES):
      features = self.width * 2**stage
      for block in range(BLOCKS_PER_STAGE):
        stride = 2 if (stage > 0 and block == 0) else 1
        x = PreActBlock(
            features,
            stride,
            downsample=(stride != 1 or in_features != features),
            norm=self.norm,
            affine=self.train_non_si,
            epsilon=self.norm_epsilon,
            conv_impl=self.conv_impl,
            name=f"layer{stage + 1}_{block}",
        )(x, train)
        in_features = features
    x = nn.relu(layers.Norm(self.norm, affine=self.train_non_si, epsilon=self.norm_epsilon,
                                name="final_norm")(x, train))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(
        self.num_classes, use_bias=False, kernel_init=layers.torch_kernel_init, name="classifier"
    )(x)

  def si_groups(self) -> dict[str, tuple[layers.ParamPath, ...]]:
    """Each block's ``conv1`` alone; per stage, the convs writing its stream, jointly."""
    groups = {}
    for stage in range(1, STAGES + 1):
      writers = ["stem"] if stage == 1 else [f"layer{stage}_0/shortcut_conv"]
      writers += [f"layer{stage}_{b}/conv2" for b in range(BLOCKS_PER_STAGE)]
      groups[f"stage{stage}_stream"] = layers.paths_of(writers)
      for b in range(BLOCKS_PER_STAGE):
        groups[f"layer{stage}_{b}_conv1"] = layers.paths_of([f"layer{stage}_{b}/conv1"])
    return groups

  last_layer = ("classifier", "kernel")
