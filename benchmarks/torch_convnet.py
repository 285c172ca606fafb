"""The original scale-invariant ConvNet in PyTorch, for parity tests and baselines.

Written from the architecture description (appendix B; the original ``ConvNetDepth``
with depth 3): Conv3x3(3->k, no bias) -> BN -> ReLU, three blocks
Conv3x3(c->2c, no bias) -> BN -> ReLU -> MaxPool(2), MaxPool(4), Linear(8k -> classes).
BN without affine parameters (the fully scale-invariant setting).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TorchConvNetSI(nn.Module):

  def __init__(self, width: int = 32, num_classes: int = 10, in_channels: int = 3,
               final_pool: int = 4):
    super().__init__()
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width, affine=False),
        nn.ReLU(),
    ]
    c = width
    for _ in range(3):
      layers += [nn.Conv2d(c, 2 * c, 3, padding=1, bias=False), nn.BatchNorm2d(2 * c, affine=False),
                 nn.ReLU(), nn.MaxPool2d(2)]
      c *= 2
    layers += [nn.MaxPool2d(final_pool), nn.Flatten()]
    self.features = nn.Sequential(*layers)
    self.classifier = nn.Linear(c, num_classes)

  def forward(self, x):
    return self.classifier(self.features(x))

  def convs(self) -> list[nn.Conv2d]:
    return [m for m in self.features if isinstance(m, nn.Conv2d)]


def load_flax_params(model: TorchConvNetSI, params) -> None:
  """Copies si_jax ConvNetSI parameters (HWIO kernels) into the torch model (OIHW)."""
  with torch.no_grad():
    for i, conv in enumerate(model.convs()):
      kernel = np.asarray(params[f"conv_{i}"]["kernel"])
      conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
    model.classifier.weight.copy_(
        torch.from_numpy(np.asarray(params["classifier"]["kernel"]).T.copy()))
    model.classifier.bias.copy_(torch.from_numpy(np.asarray(params["classifier"]["bias"]).copy()))


def conv_grads_as_hwio(model: TorchConvNetSI) -> list[np.ndarray]:
  return [c.weight.grad.numpy().transpose(2, 3, 1, 0) for c in model.convs()]
