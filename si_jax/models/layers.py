"""Building blocks of the scale-invariant models, initialized as PyTorch does."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

NORMS = ("batch", "layer", "instance", "weight")  # 'weight': the ConvNet's weight normalization

# nn.Conv2d / nn.Linear reset_parameters(): kaiming_uniform(a=sqrt(5)) gives
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)); a uniform variance-scaling init with scale 1/3
# has bound sqrt(3 * scale / fan_in), the same interval.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
  """PyTorch's bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in of the kernel."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


CONV_IMPLS = ("xla", "patches")


class PatchConv(nn.Module):
  """``conv``'s convolution as im2col + one matmul: the same function and parameters."""

  features: int
  kernel: int
  stride: int = 1

  @nn.compact
  def __call__(self, x_NHWC: jax.Array) -> jax.Array:
    """The convolution of ``x_NHWC`` (stride ``stride``, padding kernel // 2)."""
    k, s, pad = self.kernel, self.stride, self.kernel // 2
    n, h, w, c = x_NHWC.shape
    weight = self.param("kernel", torch_kernel_init, (k, k, c, self.features))
    out_h, out_w = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    padded = jnp.pad(x_NHWC, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    shifted = [padded[:, i:i + s * (out_h - 1) + 1:s, j:j + s * (out_w - 1) + 1:s, :]
               for i in range(k) for j in range(k)]
    patches = jnp.concatenate(shifted, axis=-1) if len(shifted) > 1 else shifted[0]
    return jnp.dot(patches, weight.reshape(k * k * c, self.features).astype(patches.dtype))


def max_pool_2x2(x_NHWC: jax.Array) -> jax.Array:
  """2x2 max-pool with stride 2 (floor), as a reshape and a max (fast gradient on CPU)."""
  n, h, w, c = x_NHWC.shape
  x = x_NHWC[:, :h // 2 * 2, :w // 2 * 2, :]
  return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def conv(features: int, kernel: int, stride: int = 1, name: str | None = None,
         impl: str = "xla") -> nn.Module:
  """Bias-free conv with PyTorch's padding kernel // 2; ``impl='patches'``: ``PatchConv``."""
  if impl == "patches":
    return PatchConv(features, kernel, stride, name=name)
  if impl != "xla":
    raise ValueError(f"model.conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
  pad = kernel // 2
  return nn.Conv(
      features,
      (kernel, kernel),
      strides=(stride, stride),
      padding=((pad, pad), (pad, pad)),
      use_bias=False,
      kernel_init=torch_kernel_init,
      name=name,
  )


class Norm(nn.Module):
  """Batch, layer or instance normalization over NHWC features, as PyTorch's (design notes).

  With ``affine=False`` it has no parameters, so the conv weights before it are
  scale-invariant (properties (1a), (1b))."""

  kind: str = "batch"
  affine: bool = False
  epsilon: float = 1e-5
  momentum: float = 0.1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, axis_name: str | None = None) -> jax.Array:
    """Normalizes ``x``; batch statistics over the ``axis_name`` (pmap) axis too."""
    if self.kind not in NORMS:
      raise ValueError(f"model.norm must be one of {NORMS}, got {self.kind!r}")
    if self.kind == "weight":
      raise ValueError("model.norm='weight' (weight normalization) is an option of the "
                       "ConvNet only (model.name='convnet_si')")
    channels = x.shape[-1]
    if self.kind == "batch":
      running_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,))
      running_var = self.variable("batch_stats", "var", jnp.ones, (channels,))
      if train:
        # over the global batch when it is split along a pmap axis (two-pass variance)
        global_mean = (lambda v: v) if axis_name is None else (
            lambda v: jax.lax.pmean(v, axis_name))
        mean = global_mean(jnp.mean(x, axis=(0, 1, 2)))
        var = global_mean(jnp.mean(jnp.square(x - mean), axis=(0, 1, 2)))
        if not self.is_initializing():
          n = x.size // channels * (1 if axis_name is None else jax.lax.axis_size(axis_name))
          m = self.momentum
          running_mean.value = (1 - m) * running_mean.value + m * mean
          running_var.value = (1 - m) * running_var.value + m * var * (n / max(n - 1, 1))
      else:
        mean, var = running_mean.value, running_var.value
    else:
      axes = (1, 2, 3) if self.kind == "layer" else (1, 2)
      mean = jnp.mean(x, axis=axes, keepdims=True)
      var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
    if self.affine:
      y = y * self.param("scale", nn.initializers.ones, (channels,))
      y = y + self.param("bias", nn.initializers.zeros, (channels,))
    return y


def weight_normalized(conv: nn.Module, x: jax.Array, gain: jax.Array | None = None) -> jax.Array:
  """``conv(x)`` with each filter's kernel divided by its norm: y_f = conv(x, v)_f / ||v_f||.

  Times ``gain`` per filter when given; each kernel is SI without a feature normalization."""
  y = conv(x)
  v = conv.variables["params"]["kernel"]
  norms = jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(v.ndim - 1))))
  y = y / norms.astype(y.dtype)
  return y if gain is None else y * gain


@contextlib.contextmanager
def batch_axis(axis_name: str | None) -> Iterator[None]:
  """Within it, every ``Norm`` averages its batch statistics over ``axis_name`` (None: no-op)."""
  if axis_name is None:
    yield
    return

  def with_axis(next_fun, args, kwargs, context):
    if isinstance(context.module, Norm) and context.method_name == "__call__":
      kwargs = {**kwargs, "axis_name": axis_name}
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(with_axis):
    yield


ParamPath = tuple[str, ...]


def path_str(keypath) -> ParamPath:
  """A jax tree path as a tuple of str; nnx's trailing '.value' is dropped."""
  parts = []
  for k in keypath:
    if isinstance(k, jax.tree_util.GetAttrKey):
      parts.append(k.name)
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
    else:  # DictKey, FlattenedIndexKey
      parts.append(str(k.key))
  if keypath and isinstance(keypath[-1], jax.tree_util.GetAttrKey) and parts[-1] == "value":
    parts.pop()
  return tuple(parts)


def paths_of(prefixes: Sequence[str], leaf: str = "kernel") -> tuple[ParamPath, ...]:
  """('a/b', 'c') -> (('a', 'b', 'kernel'), ('c', 'kernel'))."""
  return tuple(tuple(p.split("/")) + (leaf,) for p in prefixes)
