"""Finding the destabilizations (phase C) of a run from its logs."""

from __future__ import annotations

import numpy as np

from si_jax import logs


def load_series(workdir: str, steps: bool = False) -> dict[str, np.ndarray]:
  """Every logged metric of a run as a float array over epochs (NaN where absent)."""
  records = logs.read_run(workdir, steps=steps)
  keys = sorted({k for r in records for k in r})
  return {k: np.asarray([r.get(k, np.nan) for r in records], np.float64) for k in keys}


def find_destabilizations(series: dict[str, np.ndarray], key: str = "loss",
                          ratio: float = 10.0) -> list[int]:
  """Epochs (1-based, as logged) where the loss spikes.

  A spike is a rise of the loss above ``ratio`` times its minimum since the start or
  since the previous spike; the spike's own epoch starts the next window, so a
  destabilization that lasts several epochs counts once, and the initial descent of
  phase A never counts.
  """
  if not ratio > 1:
    raise ValueError(f"ratio must be > 1, got {ratio!r}")
  loss = series[key]
  epochs = series["epoch"] if "epoch" in series else np.arange(1, len(loss) + 1)
  spikes, window_min = [], np.inf
  for i, value in enumerate(loss):
    if not np.isfinite(value):
      continue
    if value > ratio * window_min:
      spikes.append(int(epochs[i]))
      window_min = value
    else:
      window_min = min(window_min, value)
  return spikes
