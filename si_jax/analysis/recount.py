"""Families recounted with the causal detector: their runs kept as data, their tables and claims.

``export`` keeps what the recount reads of a family's runs (the detector's options and a few
columns per run, 6 significant digits) in one gzipped JSON per family; ``render`` writes,
from those files alone, every family's table and each claim of ``si_jax.analysis.claims``
with its verdict over the seeds and its sensitivity to the detector's constants (each
halved and doubled: 14 variants). docs/reproduction.md's recount block is ``render``'s
output, and a test renders it again from the committed files.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import re
from typing import Any

import numpy as np

from si_jax import logs
from si_jax.analysis import claims as claims_lib
from si_jax.analysis import detector, phases

COLUMNS = ("epoch", "weight_norm", "effective_lr")  # kept with the loss the detector reads


@dataclasses.dataclass(frozen=True)
class Run:
  """One trained run of a member: its seed index, detector options and kept columns."""
  name: str
  seed: int
  options: dict[str, Any]
  series: dict[str, np.ndarray]

  def analyze(self, **constants) -> phases.Analysis:
    """``phases.analyze`` of this run with its options and ``constants`` (a variant)."""
    options = dict(self.options)
    if options.get("loss_key") not in self.series:
      options.pop("loss_key", None)
    options["reference_loss"] = options.pop("reference", None)
    return phases.analyze(self.series, **options, **constants)


def _member_name(run_name: str) -> tuple[str, int]:
  """('lr_0p1', 2) for 'lr_0p1_s2'; (name, 0) for a family without seeds."""
  match = re.fullmatch(r"(.+)_s(\d+)", run_name)
  return (match[1], int(match[2])) if match else (run_name, 0)


def rounded(values, digits: int = 6) -> list[float | None]:
  """``values`` to ``digits`` significant digits for JSON (None for NaN and inf)."""
  return [None if not math.isfinite(v) else float(f"{v:.{digits}g}")
          for v in np.asarray(values, np.float64)]


def floats(values) -> np.ndarray:
  """The float64 array of ``rounded``'s list (NaN for None)."""
  return np.asarray([np.nan if v is None else v for v in values], np.float64)


def write_json_gz(out_path: str, data) -> None:
  """``data`` as compact JSON, gzipped with mtime 0: the same data gives the same bytes."""
  text = json.dumps(data, separators=(",", ":")).encode()
  with open(out_path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
    f.write(text)


def export(family_dir: str, out_path: str) -> int:
  """Writes the recount's data of the family in ``family_dir`` to ``out_path`` (.json.gz).

  Runs not trained to their planned epochs (and not diverged) are left out. Returns the
  number of runs written."""
  with open(os.path.join(family_dir, "family.json")) as f:
    listed = json.load(f)
  family = os.path.basename(os.path.normpath(family_dir))
  extra = claims_lib.FAMILIES[family].keep if family in claims_lib.FAMILIES else ()
  members: dict[str, dict] = {}
  for m in listed["members"]:
    path = os.path.join(family_dir, m["name"])
    if not os.path.exists(os.path.join(path, "metrics.jsonl")):
      continue
    series, config = phases.load_series(path), phases.read_config(path) or {}
    planned = (config.get("train") or {}).get("epochs")
    if planned is not None and series["epoch"][-1] < planned and not os.path.exists(
        os.path.join(path, logs.DIVERGED_FILE)):
      continue  # still training
    name, seed = _member_name(m["name"])
    options = phases.detector_options(config)
    keep = (*COLUMNS, options["loss_key"] if options["loss_key"] in series else "loss",
            *extra)
    overrides = {k: v for k, v in m["overrides"].items() if k != "seed"}
    entry = members.setdefault(name, {"name": name, "overrides": overrides, "runs": []})
    entry["runs"].append({
        "name": m["name"], "seed": seed,
        "options": options, "series": {k: rounded(series[k]) for k in keep if k in series}})
  write_json_gz(out_path, {"family": family, "members": list(members.values())})
  return sum(len(m["runs"]) for m in members.values())


def load(path: str) -> tuple[str, list[claims_lib.Member]]:
  """(family name, its members) from an ``export`` file."""
  with gzip.open(path, "rt") as f:
    data = json.load(f)
  members = []
  for m in data["members"]:
    runs = tuple(Run(r["name"], r["seed"], r["options"],
                     {k: floats(vals) for k, vals in r["series"].items()})
                 for r in sorted(m["runs"], key=lambda r: r["seed"]))
    members.append(claims_lib.Member(m["name"], m["overrides"], runs))
  return data["family"], members


def variants() -> list[tuple[str, dict]]:
  """('default', {}) and each constant halved and doubled (``detector.halved_and_doubled``)."""
  out = [("default", {})]
  for name, half, double in detector.halved_and_doubled(detector.Constants()):
    out += [(f"{name} halved", half), (f"{name} doubled", double)]
  return out


def analyze_family(members: list[claims_lib.Member]) -> dict[str, claims_lib.Found]:
  """{variant: {member: [Analysis per seed]}} for every variant of ``variants``."""
  return {name: {m.name: [run.analyze(**constants) for run in m.runs] for m in members}
          for name, constants in variants()}


def verdict(claim: claims_lib.Claim, members, by_variant: dict[str, claims_lib.Found]) -> str:
  """'held' / 'not shown', with the variants of the constants under which it flips."""
  return say_verdict({name: claim.test(members, found) for name, found in by_variant.items()})


def say_verdict(held: dict[str, bool]) -> str:
  """The verdict of the 'default' variant, with the variants under which it flips."""
  base = held["default"]
  flips = [name for name, value in held.items() if name != "default" and value != base]
  word = "held" if base else "not shown"
  if not flips:
    return f"**{word}** (under all {len(held) - 1} variants)"
  return f"**{word}, fragile**: flips with {', '.join(flips)} ({len(flips)} of {len(held) - 1})"


def _spread(values: list[float], digits: str = ".3g") -> str:
  finite = [v for v in values if math.isfinite(v)]
  if not finite:
    return "-"
  mean = format(float(np.mean(finite)), digits)
  if len(finite) == 1:
    return mean
  return f"{mean} ({format(min(finite), digits)}-{format(max(finite), digits)})"


def member_row(member: claims_lib.Member, by_variant: dict[str, claims_lib.Found],
               extras) -> str:
  """One table row: seeds periodic, counts per seed, mean period, variants' range, extras."""
  found = by_variant["default"][member.name]
  counts = [len(a.onsets) for a in found]
  periods = [claims_lib.mean_period(a) for a in found]
  means = [float(np.mean([len(a.onsets) for a in v[member.name]])) for v in by_variant.values()]
  cells = [member.name, f"{sum(a.periodic for a in found)} of {len(found)}",
           ", ".join(map(str, counts)), _spread(periods),
           f"{min(means):.3g}-{max(means):.3g}"]
  cells += [fn(member, found) for _, fn in extras]
  return "| " + " | ".join(cells) + " |"


def family_lines(family: str, members: list[claims_lib.Member]) -> tuple[list[str], list[str]]:
  """(the family's Markdown table and claims with verdicts, its rows of the verdict table)."""
  spec = claims_lib.FAMILIES[family]
  members = spec.order(members)
  by_variant = analyze_family(members)
  extras = spec.columns
  head = ["member", "seeds periodic", "destabilizations per seed", "mean period (range)",
          "mean count: range over the variants"] + [h for h, _ in extras]
  lines = [f"### {family}", "", spec.note, "", "| " + " | ".join(head) + " |",
           "| --- | --- | --- | --- | --- |" + " --- |" * len(extras)]
  lines += [member_row(m, by_variant, extras) for m in members]
  lines.append("")
  rows = []
  for claim in spec.claims:
    said = verdict(claim, members, by_variant)
    lines.append(f"* {claim.statement}. Criterion: {claim.criterion} {said}")
    seeds = max(len(m.runs) for m in members)
    rows.append(f"| {claim.statement} | {family} | {seeds} | {said} |")
  return lines + [""], rows


def render(data_dir: str) -> str:
  """The recount of every family (``claims.FAMILIES`` order) with an export in ``data_dir``.

  A table of every claim's verdict, then each family's table and claims with criteria."""
  details, rows = [], []
  for family in claims_lib.FAMILIES:
    path = os.path.join(data_dir, f"{family}.json.gz")
    if os.path.exists(path):
      name, members = load(path)
      lines, claim_rows = family_lines(name, members)
      details += lines
      rows += claim_rows
  if not rows:
    return ""
  head = ["| claim | family | seeds | verdict (fragile: flips under a constant halved or "
          "doubled) |", "| --- | --- | ---: | --- |"]
  return "\n".join(head + rows + [""] + details)
