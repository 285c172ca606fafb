"""The regime of a run trained on the sphere at a fixed ELR (Kodryan et al. 2022, Sec. 4).

``classify`` names one of ``REGIMES`` from the final window of a run's per-epoch series,
with the numbers behind the verdict; ``summary_fields`` and ``table`` serve sphere
families. Criteria and measurements: docs/three_regimes.md."""

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


def _still_falling(loss: np.ndarray, window: int) -> float:
  """The larger fall ratio of the last two ``window``-sample windows' medians of ``loss``.

  Each ratio is a window's median over the median of the window before it; NaN
  (unlogged) values are skipped. nan for fewer than three windows; inf when the last
  window's highest value stands above the median of the one before (a climb back)."""
  n = len(loss)
  if n < 3 * window:
    return math.nan
  medians = [_tail_median(loss[:n - k * window], n - (k + 1) * window) for k in (2, 1, 0)]
  last = loss[n - window:]
  last = last[~np.isnan(last)]
  if not len(last) or not np.max(last) <= medians[1] or not min(medians) > 0:
    return math.inf
  return max(medians[1] / medians[0], medians[2] / medians[1])


def classify(series: dict[str, np.ndarray], reference_loss: float, *,
             window_fraction: float = 0.25, chance_factor: float = 1.5,
             chance_fraction: float = 0.9, floor_fraction: float = 0.02,
             grad_fraction: float = 0.2, fall_factor: float = 0.8) -> Regime:
  """The regime of one run from its per-epoch series' medians over the last ``window_fraction``.

  Divergence: a non-finite loss, or accuracy <= ``chance_factor`` / C (without accuracies:
  loss >= ``chance_fraction`` ln C); convergence: loss <= ``floor_fraction`` ln C and
  effective gradient norm <= ``grad_fraction`` x its peak, or a loss below ln C still
  falling (its median over each of the last two windows <= ``fall_factor`` x the window's
  before, and no value of the last window above the median of the one before: a run the
  budget stopped short of its floor); else chaotic equilibrium. A run that stopped on a
  non-finite value is divergence (``summary_fields``'s ``diverged``).
  ``reference_loss`` is ln C (``chance_loss``); ValueError for a missing or empty series."""
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
  falling = _still_falling(loss, len(loss) - start)
  if falling <= fall_factor and final < reference_loss:
    return Regime("convergence", f"loss still falling: each of the last two windows' median "
                  f"at most {falling:.2g} x the window's before (final train loss {final:.3g})")
  return Regime("chaotic equilibrium", f"final train loss in {band} (median {final:.3g}, "
                f"chance {reference_loss:.3g}); effective gradient norm {final_egn:.3g} = "
                f"{ratio:.2g} x its peak")


def summary_fields(series: dict[str, np.ndarray], config, diverged: str | None = None,
                   ) -> dict[str, str]:
  """{'regime', 'regime_reason'} of a run of ``config`` on the sphere, else {}.

  ``diverged``: the run's diverged message (it stopped on a non-finite value), if any."""
  if config.optim.get("sphere", "off") == "off":
    return {}
  if diverged:
    return {"regime": "divergence", "regime_reason": f"the run stopped: {diverged}"}
  regime = classify(series, chance_loss(config.data.name))
  return {"regime": regime.name, "regime_reason": regime.reason}


def _last_finite(values) -> float:
  finite = np.asarray(values, np.float64)
  finite = finite[np.isfinite(finite)]
  return float(finite[-1]) if len(finite) else math.nan


def table(summary: dict, workdir: str) -> str:
  """A Markdown table of a sphere family's members: regime and last logged metrics."""
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
