"""The toy scale-invariant function of appendix E: f(x, y) = x^2 / (x^2 + y^2).

GD without weight decay converges; with weight decay it is periodic and shows the three
phases (Fig. 14). Runs in milliseconds: the instant demo."""

from __future__ import annotations

import numpy as np


def loss(w) -> np.ndarray:
  """f(x, y) = x^2 / (x^2 + y^2) for w = (x, y) (last axis)."""
  w = np.asarray(w, np.float64)
  return w[..., 0] ** 2 / np.sum(w**2, axis=-1)


def grad(w) -> np.ndarray:
  """grad f = (2 x y^2, -2 x^2 y) / (x^2 + y^2)^2, orthogonal to w (property (1a))."""
  w = np.asarray(w, np.float64)
  x, y = w[..., 0], w[..., 1]
  r4 = np.sum(w**2, axis=-1) ** 2
  return np.stack([2 * x * y**2 / r4, -2 * x**2 * y / r4], axis=-1)


def gradient_descent(w0=(0.01, 1.0), lr: float = 1.0, wd: float = 0.0,
                     steps: int = 2000) -> dict[str, np.ndarray]:
  """GD with weight decay, Eq. (2); the paper's metrics per step t, before its update."""
  if not lr > 0 or not wd >= 0:
    raise ValueError(f"need lr > 0 and wd >= 0, got lr={lr!r}, wd={wd!r}")
  w = np.empty((steps + 1, 2))
  w[0] = w0
  for t in range(steps):
    w[t + 1] = w[t] - lr * (grad(w[t]) + wd * w[t])
  rho = np.linalg.norm(w, axis=-1)
  g = np.linalg.norm(grad(w[:-1]), axis=-1)
  unit = w / rho[:, None]
  return {
      "w": w[:-1],
      "loss": loss(w[:-1]),
      "weight_norm": rho[:-1],
      "grad_norm": g,
      "effective_grad_norm": rho[:-1] * g,
      "effective_lr": lr / rho[:-1] ** 2,
      "cosine_distance": np.sum((unit[1:] - unit[:-1]) ** 2, axis=-1) / 2,
  }


def norm_minima(rho) -> list[int]:
  """The steps where the weight norm has a local minimum: the ends of the toy's phases B."""
  rho = np.asarray(rho, np.float64)
  return [t for t in range(1, len(rho) - 1) if rho[t] < rho[t - 1] and rho[t] <= rho[t + 1]]
