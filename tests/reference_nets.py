"""The paper's networks written out in float64 NumPy, from the original PyTorch code.

Independent of ``si_jax.models``: the tests feed these functions the parameters of a
Flax model and compare the outputs, so a layer of the wrong kind, a norm over the wrong
axes, a missing ReLU or a wrong pooling shows as a difference in the logits.
Sources: ``nets/convnet_si.py`` (ConvNetDepth, depth 3) and ``nets/resnet_si.py``
(PreActResNet with PreActBlock) of the paper's released code, and the definitions of
torch.nn.BatchNorm2d (batch statistics, biased variance), layer norm (Ba et al. 2016:
each sample over C, H, W) and instance norm (Ulyanov et al. 2016: each sample and
channel over H, W).
"""

import numpy as np

# The axes of an NHWC array that each normalization averages over.
NORM_AXES = {"batch": (0, 1, 2), "layer": (1, 2, 3), "instance": (1, 2)}


def norm(x, kind, eps=1e-5, scale=None, bias=None):
  """(x - mean) / sqrt(var + eps) with the biased variance, then the per-channel affine."""
  x = np.asarray(x, np.float64)
  mean = x.mean(axis=NORM_AXES[kind], keepdims=True)
  var = ((x - mean) ** 2).mean(axis=NORM_AXES[kind], keepdims=True)
  y = (x - mean) / np.sqrt(var + eps)
  if scale is not None:
    y = y * np.asarray(scale, np.float64) + np.asarray(bias, np.float64)
  return y


def conv(x, kernel, stride=1):
  """torch.nn.Conv2d(padding=k // 2, bias=False) on NHWC with an HWIO kernel: a sum of
  shifted-input matmuls, one per kernel tap."""
  x = np.asarray(x, np.float64)
  w = np.asarray(kernel, np.float64)
  k, pad = w.shape[0], w.shape[0] // 2
  n, h, wd, _ = x.shape
  out_h, out_w = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out = np.zeros((n, out_h, out_w, w.shape[-1]))
  for i in range(k):
    for j in range(k):
      patch = xp[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride, :]
      out += patch[:, :out_h, :out_w, :] @ w[i, j]
  return out


def relu(x):
  return np.maximum(x, 0.0)


def max_pool(x, size):
  """torch.nn.MaxPool2d(size) (stride = size, floor)."""
  n, h, w, c = x.shape
  x = x[:, :h // size * size, :w // size * size, :]
  return x.reshape(n, h // size, size, w // size, size, c).max(axis=(2, 4))


def convnet(params, x, kind, eps=1e-5):
  """ConvNetDepth(max_depth=3): block(3, k) without pooling, then three
  Conv -> Norm -> ReLU -> MaxPool2d(2) blocks doubling the width, a max-pool over the
  whole remaining map (MaxPool2d(4) on CIFAR) and Linear with bias. Batch norm in
  train mode (batch statistics)."""
  h = relu(norm(conv(x, params["conv_0"]["kernel"]), kind, eps))
  for i in range(1, 4):
    h = max_pool(relu(norm(conv(h, params[f"conv_{i}"]["kernel"]), kind, eps)), 2)
  h = h.max(axis=(1, 2))
  c = params["classifier"]
  return h @ np.asarray(c["kernel"], np.float64) + np.asarray(c["bias"], np.float64)


def preact_block(p, x, stride, kind, eps):
  """PreActBlock.forward: out = relu(bn1(x)); shortcut = shortcut(out) if it exists
  (BatchNorm -> Conv1x1(stride)), else x; out = conv2(relu(bn2(conv1(out)))) + shortcut."""
  out = relu(norm(x, kind, eps))
  shortcut = x
  if "shortcut_conv" in p:
    shortcut = conv(norm(out, kind, eps), p["shortcut_conv"]["kernel"], stride)
  out = conv(out, p["conv1"]["kernel"], stride)
  out = conv(relu(norm(out, kind, eps)), p["conv2"]["kernel"])
  return out + shortcut


def resnet18(params, x, kind, eps=1e-5):
  """PreActResNet([2, 2, 2, 2]): conv1, four stages (the first block of stages 2-4 has
  stride 2), bn -> relu -> average pool over the map (AvgPool2d(4) on CIFAR), Linear
  without bias."""
  h = conv(x, params["stem"]["kernel"])
  for stage in range(1, 5):
    for block in range(2):
      stride = 2 if stage > 1 and block == 0 else 1
      h = preact_block(params[f"layer{stage}_{block}"], h, stride, kind, eps)
  h = relu(norm(h, kind, eps)).mean(axis=(1, 2))
  return h @ np.asarray(params["classifier"]["kernel"], np.float64)
