"""From a jitted step's metrics to log records: host transfer, summaries, finite checks."""

from __future__ import annotations

import logging
import math

import jax
import numpy as np

log = logging.getLogger(__name__)

WATCHED = ("loss", "grad_norm", "weight_norm")


class TrainingDiverged(FloatingPointError):
  """Raised when a loss, gradient or weight norm becomes non-finite."""


def stack_metrics(pending: list[dict], axis: int = 0) -> dict[str, np.ndarray]:
  """The epoch's per-step metric dicts as host arrays (one batched transfer).

  Stacked on the host: a device-side stack can deadlock XLA:CPU's collectives."""
  host = jax.device_get(pending)
  return {k: np.stack([m[k] for m in host], axis=axis) for k in host[0]}


def step_records(stacked: dict[str, np.ndarray], first_step: int, epoch: int,
                 run: int | None = None) -> list[dict]:
  """One dict of floats per step (``run``: the member's row of a (runs, steps) stack)."""
  if run is not None:
    stacked = {k: v[run] for k, v in stacked.items()}
  num_steps = len(next(iter(stacked.values())))
  records = [{k: float(v[i]) for k, v in stacked.items()} for i in range(num_steps)]
  for i, r in enumerate(records):
    r.update(step=first_step + i, epoch=epoch)
  return records


def tiny_norm_hint(rho: float, epsilon: float = 1e-5) -> str:
  """Explains a blow-up at a tiny SI weight norm (the end of phase B pushed too far)."""
  if not rho < 1e-2:
    return ""
  if rho == 0.0:
    what = "the SI weight norm underflowed to 0 in float32"
  else:
    what = f"the SI weight norm was rho = {rho:.3g}"
  return (f" {what}: pre-norm activation variances scale with rho^2, so BN's epsilon "
          f"({epsilon:g}) weighs 1/rho^2 = {1 / max(rho, 1e-30) ** 2:.3g} times more against "
          "them than at rho = 1; the normalization no longer cancels the scale and the "
          "gradients (~1/rho) overflow. Use a smaller lr x wd or fix the SI norm.")


def check_finite(records: list[dict], first_step: int, policy: str = "stop") -> None:
  """Raises TrainingDiverged at the first non-finite loss, gradient or weight norm, or zero norm.

  ``policy='record'``: a non-finite loss or gradient is logged, and training goes on while the
  weights stay finite."""
  for i, rec in enumerate(records):
    if rec["weight_norm"] == 0.0:  # every SI weight underflowed: eff. LR lr / 0 = inf
      raise TrainingDiverged(
          f"the SI weight norm underflowed to 0 at step {first_step + i} (float32: the "
          "effective learning rate lr / rho^2 is infinite and the SI layers' output is "
          "undefined); raise model.init_scale or lower optim.wd.")
    bad = [k for k in WATCHED if not math.isfinite(rec[k])]
    if bad and policy == "record" and math.isfinite(rec["weight_norm"]):
      log.warning("non-finite %s at step %d (recorded, training goes on)", bad, first_step + i)
      continue
    if bad:
      values = ", ".join(f"{k}={rec[k]:.6g}" for k in WATCHED)
      prev = records[i - 1] if i else None
      before = (", ".join(f"{k}={prev[k]:.6g}" for k in WATCHED) if prev else "n/a")
      norms = [r["weight_norm"] for r in (rec, prev) if r and not math.isnan(r["weight_norm"])]
      hint = tiny_norm_hint(min(norms, default=math.inf))
      raise TrainingDiverged(
          f"non-finite {bad} at step {first_step + i}: {values}; previous step: {before}.{hint}")


def epoch_summary(records: list[dict], invariance_every: int) -> dict[str, float]:
  """Epoch means of the in-step metrics; the worst invariance residual of the epoch."""
  out = {k: float(np.mean([r[k] for r in records]))
         for k in records[0] if not k.startswith("invariance/") and k not in ("step", "epoch")}
  checked = [r for r in records if invariance_every and r["step"] % invariance_every == 0]
  for k in (checked[0] if checked else {}):
    if k.startswith("invariance/"):
      out[k] = max(r[k] for r in checked)
  return out

