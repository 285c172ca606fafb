"""The sweep families recounted with the causal detector, each verdict with its sensitivity.

For every member of a sweep family: its onsets, count and mean period with the detector's
constants, and its count with each constant halved and doubled (14 variants). For every
claim (a function below, its criterion in its docstring, written before the runs were
recounted): the verdict with the default constants and under each variant; a verdict that
flips under one of them is reported as fragile, with the variants named.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from si_jax.analysis import detector, phases

SWEEPS = {"lr_sweep": "optim.lr", "wd_sweep": "optim.wd"}


def member_runs(family_dir: str) -> list[tuple[str, float, dict]]:
  """(run dir, swept value, per-epoch series) of a sweep family's members, by the swept value."""
  with open(os.path.join(family_dir, "family.json")) as f:
    members = json.load(f)["members"]
  key = SWEEPS[os.path.basename(os.path.normpath(family_dir))]
  out = []
  for m in sorted(members, key=lambda m: m["overrides"][key]):
    path = os.path.join(family_dir, m["name"])
    series = (phases.load_series(path) if os.path.exists(os.path.join(path, "metrics.jsonl"))
              else {})
    if "epoch" in series:  # a member not trained yet is left out
      out.append((path, float(m["overrides"][key]), series))
  return out


def variants() -> list[tuple[str, dict]]:
  """('default', {}) and each constant halved and doubled (``detector.halved_and_doubled``)."""
  out = [("default", {})]
  for name, half, double in detector.halved_and_doubled(detector.Constants()):
    out += [(f"{name} halved", half), (f"{name} doubled", double)]
  return out


def periodic_middle_range(values: list[float], found: list[phases.Analysis]) -> bool:
  """Claim: periodic behavior for a middle range of the swept value (F.2, F.3).

  Criterion: at least one member is periodic (>= 2 destabilizations), the periodic members
  are contiguous in the swept value, and the smallest and the largest value are not."""
  periodic = [i for i, a in enumerate(found) if a.periodic]
  return bool(periodic) and periodic == list(range(periodic[0], periodic[-1] + 1)) and (
      periodic[0] > 0 and periodic[-1] < len(found) - 1)


def more_frequent_when_larger(values: list[float], found: list[phases.Analysis]) -> bool:
  """Claim: a larger value, more frequent destabilizations (Fig. 3).

  Criterion: among the members with at least two complete periods, the mean period falls
  strictly as the swept value grows, over at least two members."""
  means = [(v, np.mean(a.period_lengths())) for v, a in zip(values, found)
           if len(a.period_lengths()) >= 2]
  return len(means) >= 2 and all(b[1] < a[1] for a, b in zip(means, means[1:]))


CLAIMS = {"lr_sweep": (periodic_middle_range, more_frequent_when_larger),
          "wd_sweep": (periodic_middle_range, more_frequent_when_larger)}


def verdict(claim, values, by_variant: dict[str, list[phases.Analysis]]) -> str:
  """'held' / 'not shown', with the variants under which the default verdict flips."""
  base = claim(values, by_variant["default"])
  flips = [name for name, found in by_variant.items()
           if name != "default" and claim(values, found) != base]
  word = "held" if base else "not shown"
  if not flips:
    return f"**{word}** (under all 14 variants)"
  return f"**{word}, fragile**: flips with {', '.join(flips)} ({len(flips)} of 14)"


def claim_line(claim, values, by_variant: dict[str, list[phases.Analysis]]) -> str:
  """'* <claim> <criterion> <verdict>', the claim and criterion from ``claim``'s docstring."""
  doc = claim.__doc__.split("\n\n")
  criterion = " ".join(doc[1].split())
  return f"* {doc[0].removeprefix('Claim: ')} {criterion} {verdict(claim, values, by_variant)}"


def family_lines(family: str, runs) -> list[str]:
  """The Markdown table of a sweep family's ``member_runs`` and its claims' verdicts."""
  values = [v for _, v, _ in runs]
  by_variant = {name: [phases.analyze_run(d, series=s, **c) for d, _, s in runs]
                for name, c in variants()}
  head = " | ".join(name for name, _ in variants()[1:])
  lines = [f"### {family} ({SWEEPS[family]})", "",
           "| member | onsets (epochs) | count | mean period | " + head + " |",
           "| --- | --- | ---: | ---: |" + " ---: |" * 14]
  for k, (run_dir, _, _) in enumerate(runs):
    a = by_variant["default"][k]
    mean = np.mean(a.period_lengths()) if a.period_lengths() else math.nan
    counts = " | ".join(str(len(by_variant[name][k].onsets)) for name, _ in variants()[1:])
    onsets = ", ".join(f"{x:g}" for x in a.destabilizations) or phases.outcome(a.reason)
    lines.append(f"| {os.path.basename(run_dir)} | {onsets} | {len(a.onsets)} | {mean:.1f} | "
                 f"{counts} |")
  lines.append("")
  lines += [claim_line(claim, values, by_variant) for claim in CLAIMS[family]]
  return lines + [""]


def recount(runs: str) -> str:
  """The recount of every sweep family (``SWEEPS``) under ``runs`` that has a family.json."""
  lines = []
  for family in SWEEPS:
    path = os.path.join(runs, family)
    if os.path.exists(os.path.join(path, "family.json")):
      lines += family_lines(family, member_runs(path))
  return "\n".join(lines)
