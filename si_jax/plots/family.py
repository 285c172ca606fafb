"""A family's figures, drawn from its members' logs (``si_jax.engine.experiment``)."""

from __future__ import annotations

import json
import os
from typing import Any

import matplotlib.pyplot as plt
import ml_collections

from si_jax.analysis import forecast, phases
from si_jax.engine import experiment
from si_jax.plots import plotting, regimes


def _drawable(workdir: str, members) -> list[tuple[str, str, dict[str, Any]]]:
  """(run dir, label, per-epoch series) of the members that logged at least one epoch."""
  out = []
  for name, label, _ in members:
    d = os.path.join(workdir, name)
    series = phases.load_series(d)
    if "epoch" in series:
      out.append((d, label, series))
  return out


def _sphere_rows(workdir: str) -> list[dict[str, Any]]:
  """The members' end points (``regimes.member_points``) of a sphere family with a summary."""
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    summary = json.load(f)
  if not any("regime" in m for m in summary.get("members", [])):
    return []
  drawn = {"members": [m for m in summary["members"] if "regime" in m]}
  return regimes.member_points(drawn, workdir)


def draw_family(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """Draws a family's figures (PNG + PDF) into ``workdir``; returns their paths.

  <name>.png (Figs. 1-3's panels), <name>_phases.png, for products <name>_ranges.png
  (Fig. 16), with forecasts <name>_forecast.png, on the sphere <name>_regimes.png.
  Raises ValueError when no member has logged an epoch.
  """
  # no empty panel for a member
  drawable = _drawable(workdir, experiment.member_overrides(config))
  if not drawable:
    raise ValueError(f"{workdir}: no member has logged an epoch; nothing to draw")
  dirs, labels, series = [list(t) for t in zip(*drawable)]
  analyses = [phases.analyze_run(d, series=s) for d, s in zip(dirs, series)]
  name = config.experiment.name
  figures = {f"{name}.png": plotting.figure_four_panels(series, labels, analyses),
             f"{name}_phases.png": plotting.figure_phases(series, labels, analyses)}
  if config.experiment.figure == "product":
    figures[f"{name}_ranges.png"] = plotting.figure_effective_ranges(series, labels)
  sphere = _sphere_rows(workdir)
  if sphere:
    figures[f"{name}_regimes.png"] = regimes.figure_regimes(sphere, title=name)
  scored = [(label, forecast.summary(forecast.score_workdir(d))["at_50%"])
            for d, label in zip(dirs, labels)]
  if any(rows for _, rows in scored):
    figures[f"{name}_forecast.png"] = figure_forecast(scored)
  out = []
  for file, fig in figures.items():
    out.append(os.path.join(workdir, file))
    plotting.save_figure(fig, out[-1])
  return out


def figure_forecast(scored: list[tuple[str, list[dict[str, Any]]]]):
  """Predicted against actual onsets, the forecast made half-way through phase B.

  ``scored``: (label, ``forecast.summary(...)['at_50%']``) per member. Filled markers with
  the 80% interval: the forecast; hollow: the naive previous-period forecast."""
  fig, ax = plt.subplots(figsize=(5.5, 5))
  low, high = [], []
  for k, (label, rows) in enumerate(scored):
    if not rows:
      continue
    color = plotting.run_style(k)[0]
    actual = [r["actual"] for r in rows]
    predicted = [r["predicted"] for r in rows]
    below = [p - r["low"] for p, r in zip(predicted, rows)]
    above = [(r["high"] if r["high"] is not None else p * 2) - p for p, r in zip(predicted, rows)]
    ax.errorbar(actual, predicted, yerr=[below, above], fmt="o", color=color, capsize=3,
                label=f"{label}: forecast, 80% interval")
    ax.plot(actual, [r["naive"] for r in rows], "o", mfc="none", color=color,
            label=f"{label}: previous period")
    low.append(min(actual + predicted))
    high.append(max(actual + predicted))
  span = [min(low), max(high)]
  ax.plot(span, span, ":", color="grey", label="predicted = actual")
  ax.set_xlabel("actual onset (epoch)")
  ax.set_ylabel("predicted onset (epoch), made half-way through phase B")
  ax.set_title("Next destabilization: forecast vs actual")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return fig
