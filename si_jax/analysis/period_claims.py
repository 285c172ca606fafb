"""One period's claims (Figs. 4, 11, 13) and the minima's (H), over seeds, as data.

Claims about one period logged per step (appendix D) and about the minima of different
periods (appendix H), over seeds, kept as data and rendered.
A period claim reads, per seed, what ``period_steps.period_numbers`` measures on period 1
of a run logged per step (its phases, and Fig. 13's envelopes fitted on the first half of
phase B and checked on the second); the minima claim reads ``minima.similarity``'s result
with each seed as the reference. The criteria were written 2026-12-05, before seeds 1 and
2 were trained (seed 0 had been run and described). ``export`` keeps the per-step runs
(``export_minima`` the similarity results) under docs/data/periods; ``render`` writes the
report's tables and verdicts from those files alone, with each verdict's sensitivity to
the detector's constants (each halved and doubled) where the detector decides the period.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import os
from typing import Any, Callable, Sequence

import numpy as np

from si_jax.analysis import period_steps, recount

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


WRITTEN = ("(written 2026-12-05, before seeds 1 and 2 of `configs/one_period.py:cpu` and "
           "`:gd_cpu` and all three of `:cifar_cpu` were trained)")


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
    f"below phase A's {WRITTEN}.", _three_phases)
BOUNDS_HELD_OUT = PeriodClaim(
    "The delta-jump bounds hold in phase B (Fig. 13, appendix D)",
    "in every seed, the effective gradient norm lies inside the envelopes [l(t), L(t)] "
    "fitted on the first half of period 1's phase B at 80% or more of the second half's "
    f"steps {WRITTEN}.", lambda n: n["inside"] >= 0.8)
COS_GROWS = PeriodClaim(
    "1 - cos grows in the second half of phase B (appendix D)",
    "in every seed, the median 1 - cos of the second half of period 1's phase B is above "
    f"the first half's {WRITTEN}.", lambda n: n["cos_ratio"] > 1)
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


EPOCH_COLUMNS = ("epoch", "step", "loss", "train_loss", "weight_norm", "effective_lr")
STEP_COLUMNS = ("step", "epoch", "loss", "weight_norm", "effective_lr", "effective_grad_norm",
                "cosine_distance")
SECTIONS = {  # file name: (what the runs are, p of Fig. 13's lower envelope)
    "one_period": ("SGD: the quickstart (lr 0.1, wd 0.03) logged per step for 100 epochs "
                   "(`configs/one_period.py:cpu --config.seed=K`)", 1.0),
    "one_period_gd": ("Full-batch GD on 512 digits (lr 0.5, wd 0.01), 3,000 steps "
                      "(`configs/one_period.py:gd_cpu --config.seed=K`)", 2.0),
    "one_period_cifar": ("SGD on 2,048 CIFAR-10-proxy images (lr 0.1, wd 0.01) logged per "
                         "step for 80 epochs (`configs/one_period.py:cifar_cpu "
                         "--config.seed=K`)", 1.0),
}
MINIMA = "minima.json"


def render(data_dir: str) -> str:
  """Every per-step section (``SECTIONS`` order) and the minima with data in ``data_dir``."""
  lines = []
  for name in SECTIONS:
    path = os.path.join(data_dir, f"{name}.json.gz")
    if os.path.exists(path):
      lines += section_lines(name, load(path))
  if os.path.exists(os.path.join(data_dir, MINIMA)):
    with open(os.path.join(data_dir, MINIMA)) as f:
      lines += minima_lines(json.load(f))
  return "\n".join(lines)


def export(run_dirs: Sequence[str], out_path: str) -> None:
  """Keeps what the report reads of ``run_dirs`` (one per seed, in seed order) in ``out_path``.

  The per-epoch and per-step columns to 7 digits, and the configs' data/optim/train."""
  runs = []
  for seed, path in enumerate(run_dirs):
    run = period_steps.LoggedRun.read(path)
    runs.append({
        "seed": seed,
        "config": {k: run.config[k] for k in ("data", "optim", "train")},
        "epochs": {k: recount.rounded(run.epochs[k], 7) for k in EPOCH_COLUMNS
                   if k in run.epochs},
        "steps": {k: recount.rounded(run.steps[k], 7) for k in STEP_COLUMNS}})
  recount.write_json_gz(out_path, {"runs": runs})


def load(path: str) -> list[period_steps.LoggedRun]:
  """The runs of an ``export`` file, in seed order."""
  with gzip.open(path, "rt") as f:
    data = json.load(f)
  series = lambda columns: {k: recount.floats(v) for k, v in columns.items()}
  return [period_steps.LoggedRun(f"seed {r['seed']}", series(r["epochs"]), series(r["steps"]),
                                 r["config"])
          for r in data["runs"]]


def _numbers(run, lower_power: float, constants: dict) -> Numbers | None:
  try:
    return period_steps.period_numbers(run, 1, lower_power, **constants)
  except ValueError:  # no complete period 1 under these constants
    return None


def _verdict(claim: PeriodClaim, by_variant: dict[str, list]) -> str:
  return recount.say_verdict({
      name: all(n is not None for n in seeds) and claim.holds(seeds)
      for name, seeds in by_variant.items()})


def _phase_rows(numbers: list[Numbers | None]) -> list[str]:
  rows = ["| seed | period 1 (epochs; GD: one step each) | phase | steps | batch loss (median) "
          "| rho | effective LR | median 1 - cos |",
          "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for seed, n in enumerate(numbers):
    if n is None:
      rows.append(f"| {seed} | no complete period 1 | | | | | | |")
      continue
    for name, v in n["phases"].items():
      rows.append(f"| {seed} | {n['epochs'][0]:g}-{n['epochs'][1]:g} | {name} | "
                  f"{v['steps'][0]}-{v['steps'][1]} | {v['loss']:.2g} | {v['rho'][0]:.3g} -> "
                  f"{v['rho'][1]:.3g} | {v['elr'][0]:.2g} -> {v['elr'][1]:.2g} | {v['cos']:.2g} |")
  return rows


def _bound_rows(numbers: list[Numbers | None]) -> list[str]:
  rows = ["| seed | phase B steps (fit / check), t0 | c, C | held-out steps inside [l, L] "
          "| median 1 - cos, 2nd / 1st half | rise across the 2nd half: 1 - cos, bound with l, "
          "bound with L |", "| --- | --- | --- | --- | --- | --- |"]
  for seed, n in enumerate(numbers):
    if n is None:
      rows.append(f"| {seed} | no complete period 1 | | | | |")
      continue
    (b0, b1), split, inside = n["b"], n["split"], round(n["inside"] * n["n_check"])
    rise = ", ".join(f"x{r:.3g}" for r in n["rise"])
    rows.append(f"| {seed} | {b0}-{split - 1} / {split}-{b1}, {n['t0']} | {n['c']:.3g}, "
                f"{n['C']:.3g} | {100 * n['inside']:.1f}% ({inside} of {n['n_check']}) | "
                f"{n['cos_ratio']:.2g} | {rise} |")
  return rows


def section_lines(name: str, runs: list[period_steps.LoggedRun]) -> list[str]:
  """One per-step section's tables (phases, Fig. 13) and claims with their verdicts."""
  note, power = SECTIONS[name]
  by_variant = {variant: [_numbers(r, power, constants) for r in runs]
                for variant, constants in recount.variants()}
  lines = [f"### {name}", "", f"{note}; {len(runs)} seeds.", ""]
  lines += _phase_rows(by_variant["default"]) + [""] + _bound_rows(by_variant["default"]) + [""]
  lines += [f"* {c.statement}. Criterion: {c.criterion} {_verdict(c, by_variant)}"
            for c in CLAIMS]
  return lines + [""]


def export_minima(workdirs: Sequence[str], out_path: str) -> None:
  """Keeps each reference seed's ``similarity.json`` (``workdirs``, by seed) in ``out_path``."""
  results = []
  for path in workdirs:
    with open(os.path.join(path, "similarity.json")) as f:
      result = json.load(f)
    result["cosine"] = [recount.rounded(row, 7) for row in result["cosine"]]
    results.append(result)
  with open(out_path, "w") as f:
    json.dump({"results": results}, f, separators=(",", ":"))


def minima_numbers(result: dict) -> Numbers:
  """The cosines the minima claim reads, and the runs' names.

  The reference run's (the first's) cosines between its periods' minima (>= 1): of
  ``adjacent`` periods and of periods three or more ``apart``; its ``independent`` cosines
  with the other run's same periods."""
  points = result["checkpoints"]
  cosine = np.asarray(result["cosine"])
  reference = points[0]["run"]
  own = [(i, p["period"]) for i, p in enumerate(points) if p["run"] == reference and p["period"]]
  pairs = list(itertools.combinations(own, 2))
  return {"reference": reference, "other": next(p["run"] for p in points if p["run"] != reference),
          "minima": len(points),
          "adjacent": [float(cosine[i, j]) for (i, a), (j, b) in pairs if abs(a - b) == 1],
          "apart": [float(cosine[i, j]) for (i, a), (j, b) in pairs if abs(a - b) >= 3],
          "independent": result["independent_cosine"]}


def _mean(values: Sequence[float], spread: str) -> str:
  if not values:
    return "-"
  extra = f"{min(values):.2g}-{max(values):.2g}" if spread == "range" else f"max {max(values):.2g}"
  return f"{np.mean(values):.2g} ({extra})"


def minima_lines(data: dict) -> list[str]:
  """The minima table over reference seeds, the claim's verdict, and the ensembles' numbers."""
  results = data["results"]
  n_test = results[0]["test_examples"]
  numbers = [minima_numbers(r) for r in results]
  lines = ["### minima_similarity", "", "The SI weights at the end of phase A of each period "
           "(`configs/minima_similarity.py:cpu`, `:cpu_seed1`, `:cpu_seed2`: each seed the "
           "reference once, the next seed its independent run); cosine similarities.", "",
           "| reference run | independent run | minima | adjacent periods | three or more apart "
           "| independent run, same period | test error: single, ensembles of two periods, of "
           "the two runs |", "| --- | --- | ---: | --- | --- | --- | --- |"]
  for n, r in zip(numbers, results):
    errors = [np.mean([c["test_error"] for c in r["checkpoints"]]),
              np.mean(r["within_run_ensemble_error"]), np.mean(r["independent_ensemble_error"])]
    lines.append(f"| {n['reference']} | {n['other']} | {n['minima']} | "
                 f"{_mean(n['adjacent'], 'range')} | {_mean(n['apart'], 'max')} | "
                 f"{_mean(n['independent'], 'max')} | "
                 f"{', '.join(f'{100 * e:.2f}%' for e in errors)} |")
  held = len(numbers) >= 3 and MINIMA_APART.holds(numbers)  # "each of seeds 0, 1 and 2"
  lines += ["", f"* {MINIMA_APART.statement}. Criterion: {MINIMA_APART.criterion} "
            f"**{'held' if held else 'not shown'}** (the detector's variants not tried: each "
            "would need the runs' checkpoints)"]
  gaps = [abs(np.mean(r["within_run_ensemble_error"]) - np.mean(r["independent_ensemble_error"]))
          for r in results]
  lines.append(f"* Ensembles of minima of different periods against ensembles of independent "
               f"runs (H): no claim judged; with {n_test} test images one image is "
               f"{100 / n_test:.2g}% of test error, and the two kinds of ensembles' mean test "
               f"errors differ by {min(gaps) * n_test:.1f}-{max(gaps) * n_test:.1f} images.")
  return lines + [""]
