"""Scores the destabilization forecast on finished runs: python -m si_jax.forecast RUN_DIR ...

Each run is replayed causally (its detector and forecaster fed its log, as during
training); for each destabilization after the first two it prints the forecasts made at
25%, 50% and 75% of the phase B before it (error in epochs, or steps for per-step logs,
and as a fraction of the period; whether the 80% interval held the onset) beside the
naive forecast (the previous period's length), then a summary over all runs.
"""

from __future__ import annotations

import math

import numpy as np

from si_jax.analysis import forecast
from si_jax.programs import cli


def summary_lines(scores: list[forecast.Score]) -> list[str]:
  """Per point of phase B: forecasts made, median |error| / period (ours, naive), coverage."""
  lines = []
  for point in forecast.POINTS:
    rows = [s for s in scores if s.point == point and math.isfinite(s.predicted)]
    if not rows:
      continue
    ours = np.median([abs(s.error) / s.period for s in rows])
    naive = np.median([abs(s.naive_error) / s.period for s in rows])
    covered = np.mean([s.covered for s in rows])
    lines.append(f"  at {point:.0%} of phase B: {len(rows)} forecasts, median |error| "
                 f"{ours:.1%} of the period (naive {naive:.1%}), 80% interval held "
                 f"{covered:.0%}")
  return lines


def report(workdir: str, scores: list[forecast.Score]) -> str:
  """A run's lines: each scored forecast, then its summary (or why there is none)."""
  if not scores:
    return (f"{workdir}: too few periods to score (a forecast is scored from the third "
            "destabilization on), or a fixed norm: no forecast")
  rows = [f"{workdir}:"]
  for s in scores:
    made = "none" if not math.isfinite(s.predicted) else (
        f"{s.predicted:.1f} [{s.low:.1f}, {s.high:.1f}]")
    rows.append(f"  destabilization {s.destabilization + 1} at {s.actual:g} (period "
                f"{s.period:g}), at {s.point:.0%} of phase B: forecast {made}, naive "
                f"{s.naive:g}")
  return "\n".join(rows + summary_lines(scores))


def main(argv=None) -> None:
  """The ``si-jax-forecast`` program (``argv``: the arguments, default sys.argv)."""
  parser = cli.ArgumentParser(description="Scores the destabilization forecast on finished runs.")
  parser.add_argument("runs", nargs="+", help="run directories (with metrics.jsonl)")
  parser.add_argument("--steps", action="store_true",
                      help="replay the per-step log (steps.bin) instead of the epochs")
  args = parser.parse_args(argv)
  verbose = args.verbose or cli.verbose_requested()
  everything = []
  try:
    for workdir in args.runs:
      scores = forecast.score_workdir(workdir, args.steps)
      everything += scores
      print(report(workdir, scores))
  except cli.user_errors() as e:
    cli.fail(e, verbose=verbose)
  if len(args.runs) > 1 and everything:
    print("\n".join([f"all {len(args.runs)} runs:"] + summary_lines(everything)))


if __name__ == "__main__":
  main()
