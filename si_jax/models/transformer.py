"""A pre-LN transformer classifier of token sequences, with its SI groups by construction.

Why the residual stream and, with ``qk_norm``, queries and keys are SI: docs/design_notes.md."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from si_jax.models import layers

DEPTH = 2
NUM_HEADS = 4
MLP_RATIO = 4
# both embeddings' init N(0, 1), PyTorch's nn.Embedding: the stream's variance at the
# first LayerNorm is ~2, far above its epsilon, so the residual group is SI to ~1e-6
EMBED_STD = 1.0
# model.name -> the options it sets (functools.partial presets in the registry)
PRESETS = {
    "transformer": {},
    "transformer_qknorm": {"qk_norm": True},
    "transformer_affine": {"ln_affine": True},
    "transformer_qknorm_affine": {"qk_norm": True, "ln_affine": True},
}
DEFAULT_WIDTH = 32


def check_options(*, norm: str, width: int | None, num_heads: int = NUM_HEADS) -> None:
  """Raises ValueError naming the field: ``model.norm`` not 'layer', or a bad ``model.width``."""
  if norm != "layer":
    raise ValueError(f"model.norm must be 'layer' for a transformer (it uses LayerNorm), "
                     f"got {norm!r}")
  if width is not None and width % num_heads:
    raise ValueError(f"model.width must be a multiple of the {num_heads} attention heads "
                     f"for a transformer, got {width!r}")


def _dense(features: int, fan_in: int, name: str) -> nn.Dense:
  """A Dense layer with bias, initialized as PyTorch's nn.Linear."""
  return nn.Dense(features, kernel_init=layers.torch_kernel_init,
                  bias_init=layers.torch_bias_init(fan_in), name=name)


class SelfAttention(nn.Module):
  """Multi-head self-attention (no mask), optionally with LayerNorm on queries and keys.

  Attributes:
    num_heads: heads; the model dimension must be a multiple of it.
    qk_norm: LayerNorm over each head's queries and keys (shared by the heads).
    ln_affine: whether those LayerNorms have a scale and a bias.
    epsilon: the LayerNorms' epsilon."""

  num_heads: int = NUM_HEADS
  qk_norm: bool = False
  ln_affine: bool = False
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x_BLD: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(d_head)) v per head, heads concatenated, then ``out``."""
    b, seq_len, d = x_BLD.shape
    heads, d_head = self.num_heads, d // self.num_heads
    split = lambda t: t.reshape(b, seq_len, heads, d_head)
    q, k, v = (split(_dense(d, d, name)(x_BLD)) for name in ("query", "key", "value"))
    if self.qk_norm:
      norm = lambda name: nn.LayerNorm(self.epsilon, use_bias=self.ln_affine,
                                       use_scale=self.ln_affine, name=name)
      q, k = norm("query_norm")(q), norm("key_norm")(k)
    logits_BHQK = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d_head)
    weights = jax.nn.softmax(logits_BHQK, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, seq_len, d)
    return _dense(d, d, "out")(out)


class Transformer(nn.Module):
  """Pre-LN transformer of width d over integer tokens (docs/design_notes.md).

  Takes the registry's common options (``norm`` must be 'layer'; ``conv_impl`` is unused).

  Attributes:
    depth: the number of blocks.
    num_heads: attention heads per block.
    qk_norm: LayerNorm on each head's queries and keys.
    ln_affine: whether the LayerNorms have a scale and a bias (non-SI parameters).
    vocab_size: the token vocabulary; None: ``num_classes + 1`` (the values and a separator).
    readout: the position whose final representation the head reads (-1: the last)."""

  width: int = DEFAULT_WIDTH
  num_classes: int = 10
  norm: str = "layer"
  train_non_si: bool = False
  norm_epsilon: float = 1e-5
  conv_impl: str = "xla"
  depth: int = DEPTH
  num_heads: int = NUM_HEADS
  qk_norm: bool = False
  ln_affine: bool = False
  vocab_size: int | None = None
  readout: int = -1

  def _norm(self, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(self.norm_epsilon, use_bias=self.ln_affine, use_scale=self.ln_affine,
                        name=name)

  @nn.compact
  def __call__(self, tokens_BL: jax.Array, train: bool = False) -> jax.Array:
    """Logits (B, num_classes) for token ids ``tokens_BL``; ``train`` is unused (no BN statistics).

    Raises ValueError as ``check_options``."""
    check_options(norm=self.norm, width=self.width, num_heads=self.num_heads)
    tokens = tokens_BL.astype(jnp.int32)
    d = self.width
    vocab = self.num_classes + 1 if self.vocab_size is None else self.vocab_size
    x = nn.Embed(vocab, d, embedding_init=nn.initializers.normal(EMBED_STD), name="embed")(tokens)
    x = x + self.param("pos_embed", nn.initializers.normal(EMBED_STD), (tokens.shape[1], d))
    for i in range(self.depth):
      attention = SelfAttention(self.num_heads, self.qk_norm, self.ln_affine,
                                self.norm_epsilon, name=f"block_{i}_attn")
      x = x + attention(self._norm(f"block_{i}_ln_attn")(x))
      h = _dense(MLP_RATIO * d, d, f"block_{i}_mlp_in")(self._norm(f"block_{i}_ln_mlp")(x))
      x = x + _dense(d, MLP_RATIO * d, f"block_{i}_mlp_out")(nn.gelu(h))
    x = self._norm("ln_final")(x)[:, self.readout]
    return _dense(self.num_classes, d, "head")(x)

  def si_groups(self) -> dict[str, tuple[layers.ParamPath, ...]]:
    """The SI groups by construction, disjoint.

    'residual': both embeddings and every attention and MLP output projection (kernel and bias);
    with ``qk_norm`` also 'block_i/query' and 'block_i/key' (kernel and bias)."""
    residual = [("embed", "embedding"), ("pos_embed",)]
    for i in range(self.depth):
      for leaf in ("kernel", "bias"):
        residual += [(f"block_{i}_attn", "out", leaf), (f"block_{i}_mlp_out", leaf)]
    groups = {"residual": tuple(residual)}
    if self.qk_norm:
      for i in range(self.depth):
        for proj in ("query", "key"):
          groups[f"block_{i}/{proj}"] = tuple((f"block_{i}_attn", proj, leaf)
                                              for leaf in ("kernel", "bias"))
    return groups

  last_layer = ("head", "kernel")
