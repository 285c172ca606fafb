"""The bridge: where ordinary SGD + weight decay destabilizes, against the sphere's regimes.

A finished ``configs/three_regimes.py`` family (fixed ELR on the sphere) gives the regime
boundaries in effective LR; each run trained with SGD and weight decay on the same model
and data gives the effective LR it held just before each destabilization (the sample
before the detector's onset) and the range its phases B visited.
"""

from __future__ import annotations

import json
import os

import numpy as np

from si_jax.analysis import phases


def boundaries(family: str) -> dict[str, list[float]]:
  """{regime: the ELRs where every seed of that ELR is in it} from the family's summary.

  An ELR whose seeds fall in different regimes is listed under "mixed".
  """
  with open(os.path.join(family, "summary.json")) as f:
    members = json.load(f)["members"]
  by_elr: dict[float, set[str]] = {}
  for m in members:
    by_elr.setdefault(float(m["overrides"]["optim.lr"]), set()).add(m.get("regime", "?"))
  out: dict[str, list[float]] = {}
  for elr, found in sorted(by_elr.items()):
    out.setdefault(found.pop() if len(found) == 1 else "mixed", []).append(elr)
  return out


def run_levels(workdir: str) -> tuple[list[float], tuple[float, float] | None]:
  """(effective LR before each onset, (min, max) effective LR over its phases B)."""
  series = phases.load_series(workdir)
  analysis = phases.analyze_run(workdir, series=series)
  elr = series["effective_lr"]
  before = [float(elr[o - 1]) for o in analysis.onsets if o > 0]
  held = [elr[p.b[0]:p.b[1]] for p in analysis.periods if p.b[1] > p.b[0]]
  values = np.concatenate(held) if held else np.array([])
  values = values[np.isfinite(values)]
  return before, ((float(values.min()), float(values.max())) if len(values) else None)


def bridge_lines(family: str, runs: list[str]) -> list[str]:
  """The sphere's boundaries in a sentence, then a Markdown row per run."""
  regimes = boundaries(family)
  converge = max(regimes.get("convergence", [np.nan]))
  diverge = min(regimes.get("divergence", [np.nan]))
  chaotic = regimes.get("chaotic equilibrium", [])
  out = [f"Sphere ({family}): convergence up to ELR {converge:g}, chaotic equilibrium at "
         f"{', '.join(f'{e:g}' for e in chaotic) or 'none'}, divergence from {diverge:g}.", "",
         "| run | onsets | effective LR before each onset | above the last convergent ELR "
         "| phase B visits |", "| --- | ---: | --- | ---: | --- |"]
  for run in runs:
    before, visited = run_levels(run)
    above = sum(v > converge for v in before)
    span = "-" if visited is None else f"{visited[0]:.3g} .. {visited[1]:.3g}"
    out.append(f"| {os.path.basename(os.path.normpath(run))} | {len(before)} | "
               f"{', '.join(f'{v:.3g}' for v in before) or '-'} | {above} of {len(before)} "
               f"| {span} |")
  return out
