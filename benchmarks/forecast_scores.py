"""Scores si_jax.analysis.forecast on the design runs and on runs held out while designing.

  python -m benchmarks.forecast_scores [RUN_DIR ...] [--write docs/forecast.md]
  python -m benchmarks.forecast_scores --unseen RUN_DIR [...] [--write docs/forecast.md]
      [--title TITLE --block NAME] [--revision N] [--figure PNG]

The method (Eq. (3) projection to the run's critical effective LR, log-t levels with
a prior spread of 0.5, 80% intervals) was fixed on the two DESIGN runs of tests/data;
revision 2 (the level lowered by the loss's climb) on the exported families
(benchmarks/forecast_levels.py); revision 3 (prior spread 0.25) on those and the fresh
runs scored after revision 2; revision 4 (the angular level where a run's onsets agree
better on it, the levels truncated at Eq. (3)'s equilibrium) on every run scored before it;
revision 5 (the angular level widened by the spread of ln g~ in phase B) on every run
scored before it (docs/forecast.md). --revision 1, 2, 3 or 4 scores an earlier one;
every other run is held out: the recorded runs in HELD_OUT and any finished run
directories given (e.g. the members of the digits families). Prints, per run and pooled
per set, the forecasts made at 25/50/75% of each phase B before the third and later
destabilizations: the median |error| as a fraction of the period, the naive
previous-period forecast's, and how often the 80% interval held the onset.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import numpy as np

from si_jax import logs
from si_jax.analysis import forecast

DATA = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data"
DESIGN = ("quickstart", "convnet_cifar10_cpu")
HELD_OUT = ("convnet_cifar10_cpu_seed1", "digits_lr0p3", "digits_gd_lr1", "digits_gd_lr2",
            "convnet_cifar10_cpu_wd1e-3", "cifar_gd_lr2")

def rows(series: dict) -> list[dict]:
  """Per-sample records of a {name: column} series."""
  return [dict(zip(series, values)) for values in zip(*(np.asarray(v).tolist()
                                                        for v in series.values()))]


def recorded_run(name: str) -> tuple[list[dict], dict, float]:
  """A tests/data run: (its records, the detector's options, its wd); lr / rho^2 where the
  effective LR was not logged (full-batch GD at a constant lr)."""
  record = json.loads((DATA / f"{name}.json").read_text())
  s = {k: np.asarray(v, np.float64) for k, v in record["series"].items()}
  if "effective_lr" not in s:
    s["effective_lr"] = record["lr"] / s["weight_norm"] ** 2
  options = {"reference": math.log(10), "x_key": "epoch",
             "loss_key": "train_loss" if "train_loss" in s else "loss"}
  return rows(s), options, record["wd"]


EARLIER = {"angular": False, "equilibrium": False}  # revision 4's two changes off
REVISIONS = {1: {"climb": False, "prior_spread": 0.5, **EARLIER},
             2: {"prior_spread": 0.5, **EARLIER}, 3: EARLIER, 4: {"g_spread": False}, 5: {}}


def recorded_scores(name: str, **kwargs) -> list[forecast.Score]:
  """A tests/data run replayed with its own wd (``kwargs``: the forecaster's)."""
  records, options, wd = recorded_run(name)
  return forecast.score(forecast.replay(records, wd=wd, detector_options=options, **kwargs))


def row(name: str, scores: list[forecast.Score], scored: int | None = None) -> str:
  """A table row: ``scored`` destabilizations (default: those of ``scores``, one run's)."""
  if not scores:
    return f"| {name} | 0 | too few periods | | | |"
  summary = forecast.summary(scores)
  cells = []
  for point in ("25%", "50%", "75%"):
    s = summary.get(point)
    cells.append("-" if s is None else
                 f"{s['median_error_fraction']:.0%} ({s['naive_median_error_fraction']:.0%}), "
                 f"{s['coverage']:.0%} of {s['forecasts']}")
  scored = len({x.destabilization for x in scores}) if scored is None else scored
  return f"| {name} | {scored} | " + " | ".join(cells) + " |"


HEAD = ["| run | scored | at 25% of phase B | at 50% | at 75% |",
        "| --- | ---: | --- | --- | --- |"]


def table(title: str, runs: list[tuple[str, list[forecast.Score]]]) -> list[str]:
  pooled = [s for _, scores in runs for s in scores]
  count = sum(len({x.destabilization for x in scores}) for _, scores in runs)
  return ([f"{title}: median |error| / period (naive), interval coverage of forecasts made", ""]
          + HEAD + [row(n, s) for n, s in runs] + [row("**pooled**", pooled, count), ""])


def _workdir_scores(dirs: list[str], **kwargs) -> list[tuple[str, list[forecast.Score]]]:
  """(family/run, scores) of each finished run directory (``kwargs``: the forecaster's)."""
  return [(str(pathlib.Path(d).relative_to(pathlib.Path(d).parents[1])),
           forecast.score_workdir(d, **kwargs)) for d in dirs]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="*", help="finished run directories (held out)")
  parser.add_argument("--fresh", nargs="*", default=[],
                      help="runs trained after the method's last revision: their own table")
  parser.add_argument("--write", help="markdown file whose scores block to replace")
  parser.add_argument("--unseen", nargs="+", metavar="RUN", help="only the table of runs of "
                      "configurations never scored before (block 'unseen' with --write)")
  parser.add_argument("--title", default="Runs of configurations never seen",
                      help="the --unseen table's title")
  parser.add_argument("--block", help="the block to replace (default: 'unseen' with --unseen, "
                      "else 'scores')")
  parser.add_argument("--figure", metavar="PNG", help="with --unseen: predicted against "
                      "actual onsets half-way through phase B, per run")
  parser.add_argument("--revision", type=int, choices=sorted(REVISIONS), default=5,
                      help="1: the level not lowered by the loss's climb; 2: prior spread "
                      "0.5; 3: the effective LR's levels, not truncated; 4: the angular level "
                      "not widened by g~'s spread; 5: today's")
  args = parser.parse_args()
  if args.figure and not args.unseen:
    parser.error("--figure draws the --unseen runs: give them")
  kwargs = REVISIONS[args.revision]
  if args.unseen:
    scored = _workdir_scores(args.unseen, **kwargs)
    text = "\n".join(table(args.title, scored))
    print(text)
    if args.figure and any(forecast.summary(scores)["at_50%"] for _, scores in scored):
      from si_jax.plots import family, plotting
      plotting.save_figure(family.figure_forecast(
          [(name, forecast.summary(scores)["at_50%"]) for name, scores in scored]), args.figure)
    if args.write:
      logs.replace_doc_block(args.write, args.block or "unseen", text)
    return
  design = [(n, recorded_scores(n, **kwargs)) for n in DESIGN]
  held = ([(n, recorded_scores(n, **kwargs)) for n in HELD_OUT]
          + _workdir_scores(args.runs, **kwargs))
  held_title = ("Held-out runs" if args.revision == 1 else
                "Runs held out from revision 1 (seen while revision 2 was chosen)")
  lines = table("Design runs (tests/data)", design) + table(held_title, held)
  if args.fresh:
    lines += table("Fresh held-out runs (trained after the last revision)",
                   _workdir_scores(args.fresh, **kwargs))
  text = "\n".join(lines)
  print(text)
  if args.write:
    logs.replace_doc_block(args.write, args.block or "scores", text)


if __name__ == "__main__":
  main()
