"""Validates si_jax.analysis.detector: synthetic runs with planted onsets, the recorded runs.

  python -m benchmarks.detector_validation [--seeds 4] [--write docs/detector.md]
  python -m benchmarks.detector_validation --unseen RUN [RUN ...] [--write docs/detector.md]

Prints (and with --write puts between the markers of docs/detector.md) the precision
and recall within +-2 samples per condition over ``synthetic.grid``, the onsets found
on the runs with no destabilization, the onsets of the recorded runs in tests/data
and the norm's answer to each, whether every
prefix of each recorded run (every 5th sample) has the whole run's older onsets, and
each constant's halved/doubled onset counts. The constants are the detector's
defaults: nothing here sets them.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from si_jax import logs
from si_jax.analysis import detector, synthetic

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
TOLERANCE = 2  # samples between a found and a planted onset that still match

def match(found: list[int], planted: list[int], tol: int = TOLERANCE) -> list[int]:
  """Offsets (found - planted) of a one-to-one matching within ``tol``, nearest first."""
  pairs = sorted((abs(f - p), f, p) for f in found for p in planted if abs(f - p) <= tol)
  used_f, used_p, offsets = set(), set(), []
  for _, f, p in pairs:
    if f not in used_f and p not in used_p:
      used_f.add(f)
      used_p.add(p)
      offsets.append(f - p)
  return offsets


def evaluate(seeds: int) -> tuple[list[dict], float]:
  """Runs ``detect`` on every trace of ``synthetic.grid(seeds)``; returns one row per
  trace (its condition, mode, planted and found counts, matches, exact matches, and
  samples) and the seconds it took."""
  rows, start = [], time.perf_counter()
  for trace in synthetic.grid(seeds):
    result = detector.detect(trace.series, reference=synthetic.CHANCE)
    offsets = match(result.onsets, trace.onsets)
    rows.append({**trace.condition, "mode": "loss and norm" if trace.condition["norm"] == "free"
                 else "loss only", "planted": len(trace.onsets), "found": result.count,
                 "matched": len(offsets), "exact": sum(o == 0 for o in offsets),
                 "samples": len(result.phases)})
  return rows, time.perf_counter() - start


def _sums(rows: list[dict]) -> tuple[int, int, int, int, int]:
  return (len(rows), *(sum(r[k] for r in rows) for k in ("planted", "found", "matched", "exact")))


def _cell(rows: list[dict]) -> str:
  """'precision / recall' of ``rows`` ('-' without any)."""
  _, planted, found, matched, _ = _sums(rows)
  return f"{matched / max(found, 1):.3f} / {matched / max(planted, 1):.3f}" if rows else "-"


def validation_table(rows: list[dict], seconds: float, seeds: int) -> list[str]:
  periodic = [r for r in rows if r["kind"] == "periodic"]
  modes = ("loss and norm", "loss only")
  lines = [f"Synthetic runs: {len(rows)} traces (`synthetic.grid({seeds})`), {seconds:.0f} s. "
           f"Precision / recall of the onsets within +-{TOLERANCE} samples of the planted "
           "ones, by the detector's mode; 'exact': the share of matches at the planted "
           "sample.", "",
           "| condition | traces | planted | found | loss and norm | loss only | all | exact |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  conditions = [("all", None)] + [(k, v) for k in ("height", "floor", "noise", "sampling")
                                  for v in sorted({r[k] for r in periodic}, key=str)]
  for key, value in conditions:
    sel = [r for r in periodic if key == "all" or r[key] == value]
    n, planted, found, matched, exact = _sums(sel)
    name = "all" if key == "all" else f"{key} {value:g}" if isinstance(value, float) else (
        f"{key} {value}")
    cells = " | ".join(_cell([r for r in sel if r["mode"] == m]) for m in modes)
    lines.append(f"| {name} | {n} | {planted} | {found} | {cells} | {_cell(sel)} | "
                 f"{exact / max(matched, 1):.2f} |")
  lines += ["", "Spike height x noise (precision / recall, loss and norm; loss only):", "",
            "| height | " + " | ".join(synthetic.NOISE) + " |",
            "| --- |" + " ---: |" * len(synthetic.NOISE)]
  for height in synthetic.HEIGHTS:
    cells = ["; ".join(_cell([r for r in periodic if (r["height"], r["noise"], r["mode"]) == (
        height, noise, mode)]) for mode in modes) for noise in synthetic.NOISE]
    lines.append(f"| {height:g}x | " + " | ".join(cells) + " |")
  lines += ["", "Runs without a destabilization (every onset found is a false one):", "",
            "| kind | mode | traces | samples | onsets |", "| --- | --- | ---: | ---: | ---: |"]
  for kind in ("converging", "never", "oscillating", "bouncing"):
    for mode in modes:
      sel = [r for r in rows if r["kind"] == kind and r["mode"] == mode]
      lines.append(f"| {kind} | {mode} | {len(sel)} | {sum(r['samples'] for r in sel)} | "
                   f"{sum(r['found'] for r in sel)} |")
  return lines


def norm_lags(rho: np.ndarray, onsets: list[int], window: int) -> list[str]:
  """Samples from each onset until the norm first exceeds its value before it ('-' if
  not within ``window``)."""
  lags = []
  for o in onsets:
    up = np.flatnonzero(rho[o:o + window + 1] > rho[o - 1])
    lags.append(str(up[0]) if len(up) else "-")
  return lags


def recorded() -> list[tuple[str, dict]]:
  return [(p.stem, {k: np.asarray(v, np.float64) for k, v in json.loads(
      p.read_text())["series"].items()}) for p in sorted(DATA.glob("*.json"))]


def comparison_table() -> list[str]:
  """Onsets (x) of the detector on tests/data and how many samples after each the norm turns up."""
  w = detector.Constants().window
  lines = ["| run | samples | onsets (x) | norm up after (samples) |", "| --- | ---: | --- | --- |"]
  for name, s in recorded():
    ours = detector.detect(s, reference=float(np.log(10)))
    lags = ", ".join(norm_lags(s["weight_norm"], ours.onsets, w)) or "-"
    lines.append(f"| {name} | {len(ours.x)} | {_xs(ours.destabilizations)} | {lags} |")
  return lines


def _xs(values: list[float]) -> str:
  return ", ".join(f"{v:g}" for v in values) if values else "none"


def prefix_table(every: int = 5) -> list[str]:
  """For every recorded run, ``detect`` on each prefix of ``every``-th length: the prefixes
  whose onsets older than W samples differ from the whole run's (0 expected)."""
  w = detector.Constants().window
  lines = ["| run | prefixes | differing |", "| --- | ---: | ---: |"]
  for name, s in recorded():
    onsets = lambda series: detector.detect(series, reference=float(np.log(10))).onsets
    bad, count = prefixes_differing(s, onsets, every, w)
    lines.append(f"| {name} | {count} | {bad} |")
  return lines


def prefixes_differing(series: dict, onsets, every: int, window: int) -> tuple[int, int]:
  """(prefixes whose ``onsets`` older than ``window`` samples differ from the whole run's,
  prefixes tried): prefixes of every ``every``-th length."""
  n = len(next(iter(series.values())))
  whole, bad = onsets(series), 0
  for m in range(every, n, every):
    got = onsets({k: v[:m] for k, v in series.items()})
    bad += [o for o in got if o < m - window] != [o for o in whole if o < m - window]
  return bad, len(range(every, n, every))


def sensitivity_table() -> list[str]:
  names = list(detector.SCALINGS)
  c = detector.Constants()
  head = " | ".join(f"{n} {getattr(c, n):g}" for n in names)
  lines = [f"| run | onsets | {head} |", "| --- | ---: |" + " ---: |" * len(names)]
  for name, series in recorded():
    rows = detector.sensitivity(series, reference=float(np.log(10)))
    cells = " | ".join(f"{r.halved} / {r.doubled}" for r in rows)
    lines.append(f"| {name} | {rows[0].base} | {cells} |")
  return lines


def unseen_table(workdirs: list[str], every: int = 5) -> list[str]:
  """Trained runs of configurations the detector was never designed on: the onsets of the
  offline analysis, the onsets the training loop confirmed live (``onset_confirmed``), the
  prefixes (every ``every``-th sample) whose onsets older than W differ, the norm's answer."""
  from si_jax.analysis import phases
  w = detector.Constants().window
  lines = ["| run | samples | norm (config) | onsets (offline) | live = offline "
           "| prefixes differing | norm up after (samples) |",
           "| --- | ---: | --- | --- | --- | ---: | --- |"]
  for workdir in workdirs:
    series = phases.load_series(workdir)
    whole = phases.analyze_run(workdir, series=series)
    live = ([int(v) for v in series.get("onset_confirmed", []) if np.isfinite(v)]
            if "destabilizations" in series else None)  # None: the loop did not run it
    n = len(series["epoch"])
    bad, count = prefixes_differing(
        series, lambda s, d=workdir: phases.analyze_run(d, series=s).onsets, every, w)
    epochs = [int(x) for x in whole.destabilizations]
    fixed = phases.detector_options(phases.read_config(workdir) or {})["norm"] == "fixed"
    rho = series.get("weight_norm")
    lags = (", ".join(norm_lags(rho, whole.onsets, w)) or "-") if rho is not None else "not logged"
    name = "/".join(pathlib.Path(workdir).resolve().parts[-2:])
    agree = ("not run" if live is None else "yes" if live == epochs
             else f"no (live {_xs(live)})")
    mode = "fixed" if fixed else "free"
    lines.append(f"| {name} | {n} | {mode} | {_xs(epochs)} | {agree} | {bad} of {count} "
                 f"| {lags} |")
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=4, help="seeds per synthetic cell")
  parser.add_argument("--write", help="markdown file whose validation block to replace")
  parser.add_argument("--unseen", nargs="+", metavar="RUN",
                      help="only the table of these trained runs (block 'unseen' with --write)")
  args = parser.parse_args()
  if args.unseen:
    text = "\n".join(unseen_table(args.unseen))
    print(text)
    if args.write:
      logs.replace_doc_block(args.write, "unseen", text)
    return
  lines = validation_table(*evaluate(args.seeds), args.seeds)
  lines += ["", "Recorded runs (tests/data, reference loss ln 10):", ""] + comparison_table()
  lines += ["", "Prefix invariance (prefixes at every 5th sample):", ""] + prefix_table()
  lines += ["", "Onset counts with each constant halved / doubled (`detector.sensitivity`):",
            ""] + sensitivity_table()
  text = "\n".join(lines)
  print(text)
  if args.write:
    logs.replace_doc_block(args.write, "validation", text)


if __name__ == "__main__":
  main()
