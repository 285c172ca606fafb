"""Claims about one period logged per step (Figs. 4, 11, 13; appendix D), over seeds.

Each claim reads, per seed, the numbers ``si_jax.analysis.period_steps`` measures on period
1 of a run logged per step: the phases' start and end values of rho and the effective LR
with their median 1 - cos (``phase_numbers``), and Fig. 13's envelopes fitted on the first
half of phase B and checked on the second (``phase_b_analysis``). The criteria were
written 2026-12-05, before seeds 1 and 2 of `configs/one_period.py:cpu` and `:gd_cpu` were
trained (seed 0 of each had been run and described).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

Numbers = dict[str, Any]  # one seed's numbers: see ``period_steps.period_numbers``


@dataclasses.dataclass(frozen=True)
class PeriodClaim:
  """A claim about period 1, its criterion, and the criterion as a test over the seeds."""
  statement: str
  criterion: str
  test: Callable[[Numbers], bool]

  def holds(self, seeds: Sequence[Numbers]) -> bool:
    """True where the criterion holds in every seed (and there is at least one)."""
    return bool(seeds) and all(self.test(n) for n in seeds)


def _three_phases(n: Numbers) -> bool:
  c, a, b = (n["phases"].get(k) for k in ("C", "A", "B"))
  if not (c and a and b):
    return False
  return (c["rho"][1] > c["rho"][0] and c["elr"][1] < c["elr"][0]
          and b["rho"][1] < b["rho"][0] and b["elr"][1] > b["elr"][0]
          and b["cos"] < a["cos"])


THREE_PHASES = PeriodClaim(
    "Three phases per period (Figs. 4, 11)",
    "in every seed, across period 1's phase C rho rises and the effective LR falls, across "
    "its phase B rho falls and the effective LR rises, and phase B's median 1 - cos is "
    "below phase A's.", _three_phases)
BOUNDS_HELD_OUT = PeriodClaim(
    "The delta-jump bounds hold in phase B (Fig. 13, appendix D)",
    "in every seed, the effective gradient norm lies inside the envelopes [l(t), L(t)] "
    "fitted on the first half of period 1's phase B at 80% or more of the second half's "
    "steps.", lambda n: n["inside"] >= 0.8)
COS_GROWS = PeriodClaim(
    "1 - cos grows in the second half of phase B (appendix D)",
    "in every seed, the median 1 - cos of the second half of period 1's phase B is above "
    "the first half's.", lambda n: n["cos_ratio"] > 1)
CLAIMS = (THREE_PHASES, BOUNDS_HELD_OUT, COS_GROWS)


def _minima_apart(result: Numbers) -> bool:
  near, far = result["adjacent"], result["apart"]
  return bool(near and far and result["independent"]) and (
      sum(far) / len(far) < sum(near) / len(near) and max(result["independent"]) < 0.1)


MINIMA_APART = PeriodClaim(
    "Minima of different periods are far apart, neighbouring periods closer (H, Figs. 6, 20)",
    "with each of seeds 0, 1 and 2 as the reference run, the mean cosine of the SI weights "
    "of its minima three or more periods apart is below the mean of adjacent periods' "
    "(Fig. 6's block structure), and its minima's cosines with the independent run's "
    "same periods are all below 0.1 (written 2026-12-05, before `configs/"
    "minima_similarity.py:cpu_seed1` and `:cpu_seed2` were trained).", _minima_apart)
