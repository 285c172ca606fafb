"""The regime of a run trained on the sphere at a fixed ELR (Kodryan et al. 2022, Sec. 4).

``classify`` reads a run's per-epoch series over its final window (the last
``window_fraction`` of its epochs, at least 3) and names one of three regimes:

* ``divergence``: the final train loss is non-finite, or the model is no better than
  chance: the final median train accuracy is at most ``chance_factor`` / C or, where
  no accuracy is logged, the final median train loss at least ``chance_fraction`` of
  ``reference_loss`` = ln C (the loss of uniform predictions over C classes; with a
  fixed last layer the loss of a chance-level model can exceed it);
* ``convergence``: the final median train loss is at most ``floor_fraction`` of
  ``reference_loss`` and the final median effective gradient norm at most
  ``grad_fraction`` of its peak over the run: loss and effective gradient norm both fell
  to the run's floor;
* ``chaotic equilibrium``: neither: the loss stays in a band above the floor, the
  accuracy above chance, and the effective gradient norm does not vanish.

The reason names the numbers behind the verdict.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from si_jax import data as data_lib
from si_jax.analysis import phases

REGIMES = ("convergence", "chaotic equilibrium", "divergence")


@dataclasses.dataclass(frozen=True)
class Regime:
  """A run's regime (one of ``REGIMES``) and the numbers behind it, in words."""

  name: str
  reason: str


def chance_loss(dataset: str) -> float:
  """ln C: the cross-entropy of uniform predictions over the dataset's C classes."""
  return math.log(data_lib.NUM_CLASSES[dataset])


def _series(series: dict[str, np.ndarray], *keys: str) -> np.ndarray:
  """The first of ``keys`` in ``series`` (float array); ValueError naming them if none."""
  for k in keys:
    if k in series:
      return np.asarray(series[k], np.float64)
  raise ValueError(f"series has none of {keys} (keys: {sorted(series)})")


def _tail_median(values: np.ndarray, start: int) -> float:
  tail = values[max(start, 0):]
  tail = tail[np.isfinite(tail)]
  return float(np.median(tail)) if len(tail) else math.nan


def _at_chance(series, start: int, reference_loss: float, final_loss: float,
               chance_factor: float, chance_fraction: float) -> str:
  """Why the run is no better than chance (``classify``'s divergence), or ''."""
  accuracy = _tail_median(np.asarray(series.get("train_accuracy", []), np.float64), start)
  if not math.isnan(accuracy):
    limit = chance_factor * math.exp(-reference_loss)
    return (f"final train accuracy {accuracy:.3g} <= {chance_factor:g} x chance "
            f"{math.exp(-reference_loss):.3g} (loss {final_loss:.3g})"
            if accuracy <= limit else "")
  if final_loss >= chance_fraction * reference_loss:
    return (f"final train loss {final_loss:.3g} >= {chance_fraction:g} x chance level "
            f"{reference_loss:.3g}")
  return ""


def classify(series: dict[str, np.ndarray], reference_loss: float, *,
             window_fraction: float = 0.25, chance_factor: float = 1.5,
             chance_fraction: float = 0.9, floor_fraction: float = 0.02,
             grad_fraction: float = 0.2) -> Regime:
  """The regime of one run (module docstring) from its per-epoch series.

  Args:
    series: per-epoch arrays (``phases.load_series``): ``train_loss`` (else ``loss``,
      the in-step batch loss) and ``effective_grad_norm`` (else
      ``train_effective_grad_norm``), and ``train_accuracy`` where logged; NaN where
      not logged.
    reference_loss: the chance-level loss, ln C (``chance_loss``).
    window_fraction: the final window's share of the epochs (at least 3 epochs).
    chance_factor: divergence up to this x the chance accuracy 1/C = exp(-reference_loss).
    chance_fraction: without accuracies, divergence from this x ``reference_loss`` up.
    floor_fraction: convergence needs a final loss at most this x ``reference_loss``...
    grad_fraction: ... and a final effective gradient norm at most this x its peak.

  Returns:
    A ``Regime``.

  Raises:
    ValueError: no loss or effective gradient norm series, an empty one, or a
      non-positive ``reference_loss``.
  """
  if not reference_loss > 0:
    raise ValueError(f"reference_loss must be positive (ln C), got {reference_loss!r}")
  loss = _series(series, "train_loss", "loss")
  egn = _series(series, "effective_grad_norm", "train_effective_grad_norm")
  if not len(loss):
    raise ValueError("the loss series is empty: nothing to classify")
  start = len(loss) - max(3, int(round(window_fraction * len(loss))))
  tail = loss[max(start, 0):]
  logged = tail[~np.isnan(tail)]
  if not len(logged) or not np.all(np.isfinite(logged)):
    return Regime("divergence", "the final train loss is not finite")
  final = float(np.median(logged))
  chance = _at_chance(series, start, reference_loss, final, chance_factor, chance_fraction)
  if chance:
    return Regime("divergence", chance)
  finite_egn = egn[np.isfinite(egn)]
  peak = float(np.max(finite_egn)) if len(finite_egn) else math.nan
  final_egn = _tail_median(egn, start)
  band = f"[{np.min(logged):.3g}, {np.max(logged):.3g}]"
  ratio = final_egn / peak if peak > 0 else math.nan
  if final <= floor_fraction * reference_loss and ratio <= grad_fraction:
    return Regime("convergence", f"final train loss {final:.3g} <= {floor_fraction:g} x "
                  f"chance level and effective gradient norm {final_egn:.3g} = "
                  f"{ratio:.2g} x its peak")
  return Regime("chaotic equilibrium", f"final train loss in {band} (median {final:.3g}, "
                f"chance {reference_loss:.3g}); effective gradient norm {final_egn:.3g} = "
                f"{ratio:.2g} x its peak")


def summary_fields(series: dict[str, np.ndarray], config) -> dict[str, str]:
  """{'regime', 'regime_reason'} of a run trained on the sphere (``optim.sphere``), else {}.

  ``config`` is the run's config (its dataset gives the chance level).
  """
  if config.optim.get("sphere", "off") == "off":
    return {}
  regime = classify(series, chance_loss(config.data.name))
  return {"regime": regime.name, "regime_reason": regime.reason}


def _last_finite(values) -> float:
  finite = np.asarray(values, np.float64)
  finite = finite[np.isfinite(finite)]
  return float(finite[-1]) if len(finite) else math.nan


def table(summary: dict, workdir: str) -> str:
  """A Markdown table of a sphere family's members (``summary.json`` + their logs).

  Columns: the member's label, regime, and from its log the last logged train loss,
  test error, epoch-mean effective gradient norm, angle to init (radians) and Hessian
  trace (NaN where not logged).
  """
  rows = ["| member | regime | train loss | test error | eff. grad norm | angle to init "
          "| Hessian trace |", "| --- | --- | --- | --- | --- | --- | --- |"]
  for m in summary["members"]:
    series = phases.load_series(os.path.join(workdir, m["name"]))
    cells = [_last_finite(series.get(k, [])) for k in (
        "train_loss", "test_error", "effective_grad_norm", "angle_to_init",
        "train_hessian_trace")]
    rows.append(f"| {m['label']} | {m.get('regime', '-')} | "
                + " | ".join(f"{c:.3g}" for c in cells) + " |")
  return "\n".join(rows)
