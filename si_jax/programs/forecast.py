"""Scores the destabilization forecast on finished runs: python -m si_jax.forecast RUN_DIR ...

Each run is replayed causally (its detector and forecaster fed its log, as during
training); for each destabilization after the first two it prints the forecasts made at
25%, 50% and 75% of the phase B before it (error in epochs, or steps for per-step logs,
and as a fraction of the period; whether the 80% interval held the onset) beside the
naive forecast (the previous period's length), then a summary over all runs. A family's
directory stands for its members. A directory that cannot be scored gets a one-line
error and the others are still scored; the exit status is then 1.
"""

from __future__ import annotations

import math
import os
import sys
import traceback

from si_jax import logs
from si_jax.analysis import forecast
from si_jax.programs import cli


def _count(n: int, noun: str) -> str:
  return f"{n} {noun}{'' if n == 1 else 's'}"


def summary_lines(scores: list[forecast.Score]) -> list[str]:
  """Per point of phase B: forecasts made, median |error| / period (ours, naive), coverage."""
  lines, summary = [], forecast.summary(scores)
  for point in forecast.POINTS:
    if (s := summary.get(f"{point:.0%}")) is None:
      continue
    missing = sum(x.point == point for x in scores) - s["forecasts"]
    lines.append(f"  at {point:.0%} of phase B: {_count(s['forecasts'], 'forecast')}"
                 f"{f' ({missing} points without one)' if missing else ''}, median |error| "
                 f"{s['median_error_fraction']:.1%} of the period (naive "
                 f"{s['naive_median_error_fraction']:.1%}), 80% interval held "
                 f"{s['coverage']:.0%}")
  if scores and not lines:
    lines.append("  no forecast was made at any scored point: phase B's records lack a "
                 "positive, finite effective_lr and weight_norm, or the level was out of reach")
  return lines


def report(workdir: str, run: forecast.RunScores, unit: str = "epoch") -> str:
  """A run's lines: each scored forecast, then its summary (or why there is none)."""
  if run.fixed_norm:
    return (f"{workdir}: the SI norm is held (fix_si_norm, fixed_effective_lr or a sphere): "
            "no destabilization forecast")
  if not run.records:
    return f"{workdir}: no records yet"
  if not run.scores and run.destabilizations >= 3:
    return (f"{workdir}: {_count(run.destabilizations, 'destabilization')} in "
            f"{_count(run.records, unit)}, but none from the third on followed a live "
            "phase B: nothing to score")
  if not run.scores:
    return (f"{workdir}: {_count(run.destabilizations, 'destabilization')} in "
            f"{_count(run.records, unit)}: too few periods to score (forecasts are scored "
            "from the third destabilization on)")
  rows = [f"{workdir}:"]
  if not run.config:
    rows.append("  (no config.json: scored without its weight decay, so the level is timed "
                "by the effective LR's growth rate, and without its dataset's chance loss)")
  for s in run.scores:
    made = "none" if not math.isfinite(s.predicted) else (
        f"{s.predicted:.1f} [{s.low:.1f}, {s.high:.1f}]")
    rows.append(f"  destabilization {s.destabilization + 1} at {s.actual:g} (period "
                f"{s.period:g}), at {s.point:.0%} of phase B: forecast {made}, naive "
                f"{s.naive:g}")
  return "\n".join(rows + summary_lines(run.scores))


def run_directories(paths: list[str]) -> list[str]:
  """``paths`` with each family's directory replaced by its members', each once."""
  out, seen = [], set()
  for path in paths:
    family = (os.path.isfile(os.path.join(path, logs.FAMILY_FILE))
              and not os.path.isfile(os.path.join(path, logs.METRICS_FILE)))
    try:
      names = os.listdir(path) if family else []
    except OSError:  # an unreadable family: scoring it gives its one-line error
      names = []
    members = sorted(os.path.join(path, name) for name in names
                     if os.path.isfile(os.path.join(path, name, logs.METRICS_FILE)))
    for member in members or [path]:  # a family without a member's log: its own error
      key = os.path.realpath(member)
      if key not in seen:
        seen.add(key)
        out.append(member)
  return out


def main(argv=None) -> None:
  """The ``si-jax-forecast`` program (``argv``: the arguments, default sys.argv)."""
  parser = cli.ArgumentParser(description="Scores the destabilization forecast on finished runs.")
  parser.add_argument("runs", nargs="+", help="run directories (with metrics.jsonl) or families")
  parser.add_argument("--steps", action="store_true",
                      help="replay the per-step log (steps.bin) instead of the epochs")
  args = parser.parse_args(argv)
  verbose = args.verbose or cli.verbose_requested()
  directories = run_directories(args.runs)
  everything, scored, failed = [], 0, 0
  for workdir in directories:
    try:
      run = forecast.score_run(workdir, args.steps)
    except cli.user_errors() as e:
      failed += 1
      if verbose:
        traceback.print_exc()
      message = logs.one_line(e)
      print(f"error: {message if workdir in message else f'{workdir}: {message}'}",
            file=sys.stderr)
      continue
    everything += run.scores
    scored += bool(run.scores)
    print(report(workdir, run, "step" if args.steps else "epoch"))
  if len(directories) > 1 and everything:
    failures = f", {failed} failed" if failed else ""
    print("\n".join([f"all {len(directories)} directories ({scored} scored{failures}):"]
                    + summary_lines(everything)))
  if failed:
    sys.exit(1)


if __name__ == "__main__":
  main()
