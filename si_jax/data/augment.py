"""Standard CIFAR augmentation on the accelerator, inside jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def crop_padding(size: int) -> int:
  """CIFAR's padding 4 for 32 pixels, scaled with the image: size // 8 (1 on 8x8 digits)."""
  return max(1, size // 8)


def augment_batch(key: jax.Array, x_NHWC: jax.Array, pad_value: jax.Array) -> jax.Array:
  """Random crop (padding ``crop_padding(H)``) and flip per example, as torchvision's on CIFAR."""
  n, h, w, c = x_NHWC.shape
  PAD = crop_padding(h)
  crop_key, flip_key = jax.random.split(key)
  padded = jnp.pad(x_NHWC - pad_value, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0))) + pad_value
  offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * PAD + 1)
  crop = lambda img, off: jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))
  cropped = jax.vmap(crop)(padded, offsets)
  flip = jax.random.bernoulli(flip_key, 0.5, (n, 1, 1, 1))
  return jnp.where(flip, cropped[:, :, ::-1, :], cropped)
