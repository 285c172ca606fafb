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


def _summary_members(workdir: str) -> dict[str, dict[str, Any]]:
  """The members of the family's summary.json by run directory ({} before it is written)."""
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return {os.path.join(workdir, m["name"]): m for m in json.load(f).get("members", [])}


def _forecast_rows(dirs: list[str], summarized: dict[str, dict[str, Any]]) -> list:
  """Each member's forecasts at mid phase B: from its summary, else scored from its log."""
  return [summarized[d]["forecast"]["at_50%"] if "forecast" in summarized.get(d, {})
          else forecast.summary(forecast.score_workdir(d))["at_50%"] for d in dirs]


def draw_family(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """Draws a family's figures (PNG + PDF) into ``workdir``; returns their paths.

  Figs. 1-3's panels, phases, Fig. 16's ranges for products, forecasts, regimes on the sphere.
  Raises ValueError when no member has logged an epoch."""
  # no empty panel for a member
  drawable = _drawable(workdir, experiment.member_overrides(config))
  if not drawable:
    raise ValueError(f"{workdir}: no member has logged an epoch; nothing to draw")
  dirs, labels, series = [list(t) for t in zip(*drawable)]
  analyses = [phases.analyze_run(d, series=s) for d, s in zip(dirs, series)]
  name = config.experiment.name
  member_of = {run: k for k, runs in enumerate(experiment.seed_groups(config).values())
               for run in runs}
  groups = [member_of[os.path.basename(d)] for d in dirs]
  figures = {f"{name}.png": plotting.figure_four_panels(series, labels, analyses,
                                                        groups=groups),
             f"{name}_phases.png": plotting.figure_phases(series, labels, analyses)}
  if config.experiment.figure == "product":
    figures[f"{name}_ranges.png"] = plotting.figure_effective_ranges(series, labels)
  summarized = _summary_members(workdir)
  on_sphere = [m for m in summarized.values() if "regime" in m]
  if on_sphere:
    figures[f"{name}_regimes.png"] = regimes.figure_regimes(
        regimes.member_points({"members": on_sphere}, workdir), title=name)
  scored = list(zip(labels, _forecast_rows(dirs, summarized)))
  if any(rows for _, rows in scored):
    figures[f"{name}_forecast.png"] = figure_forecast(scored)
  out = []
  for file, fig in figures.items():
    out.append(os.path.join(workdir, file))
    plotting.save_figure(fig, out[-1])
  return out


def figure_forecast(scored: list[tuple[str, list[dict[str, Any]]]]):
  """Predicted against actual onsets, the forecast made half-way through phase B.

  ``scored``: (label, ``forecast.summary(...)['at_50%']``) per member. Filled markers with the
  80% interval: the forecast; hollow: the naive previous-period forecast."""
  fig, ax = plt.subplots(figsize=(5.5, 5))
  low, high = [], []
  for k, (label, rows) in enumerate((label, rows) for label, rows in scored if rows):
    color = plotting.run_style(k)[0]  # a colour per scored run: the others draw nothing
    actual = [r["actual"] for r in rows]
    predicted = [r["predicted"] for r in rows]
    below = [p - r["low"] for p, r in zip(predicted, rows)]
    above = [(r["high"] if r["high"] is not None else p * 2) - p for p, r in zip(predicted, rows)]
    ax.errorbar(actual, predicted, yerr=[below, above], fmt="o", color=color, capsize=3,
                label=label)
    ax.plot(actual, [r["naive"] for r in rows], "o", mfc="none", color=color)
    low.append(min(actual + predicted))
    high.append(max(actual + predicted))
  span = [min(low), max(high)]
  ax.plot(span, span, ":", color="grey", label="predicted = actual")
  ax.errorbar([], [], yerr=[[], []], fmt="o", color="grey", capsize=3,
              label="filled: forecast, 80% interval")
  ax.plot([], [], "o", mfc="none", color="grey", label="hollow: the previous period again")
  ax.set_xlabel("actual onset (epoch)")
  ax.set_ylabel("predicted onset (epoch), made half-way through phase B")
  ax.set_title("Next destabilization: forecast vs actual")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return fig


SEED_PANELS = (("train loss", True), (r"$\rho$ (SI weight norm)", True), ("effective LR", True))


def _member_label(member) -> str:
  """'lr 0.3' for overrides {'optim.lr': 0.3}; the member's name where it has none."""
  parts = [f"{key.rsplit('.', 1)[-1]} {value:.3g}" if isinstance(value, (int, float))
           else f"{key.rsplit('.', 1)[-1]} {value}" for key, value in member.overrides.items()]
  return ", ".join(parts) or member.name


def figure_seeds(family: str, members) -> plt.Figure:
  """A recounted family's seeds (``recount.load``): train loss, rho and effective LR.

  One colour per member, its first seed bold and labelled, the others thin; a dot on the
  loss at each onset the causal detector confirms with its default constants."""
  fig, axes = plt.subplots(1, len(SEED_PANELS), figsize=(15, 4.2), constrained_layout=True)
  for k, member in enumerate(members):
    color, _ = plotting.run_style(k)
    for i, run in enumerate(member.runs):
      s, n = run.series, len(member.runs)
      loss, x = phases.loss_series(s), s["epoch"]  # the loss the detector reads
      label = f"{_member_label(member)} ({n} seed{'s' if n > 1 else ''})" if i == 0 else None
      for ax, y in zip(axes, (loss, s["weight_norm"], s["effective_lr"])):
        ax.plot(x, y, color=color, lw=1.0 if i == 0 else 0.4, label=label)
      onsets = run.analyze().onsets
      axes[0].scatter(x[onsets], loss[onsets], color=color, s=14 if i == 0 else 7, zorder=3,
                      edgecolors="black", linewidths=0.3)
  for ax, (ylabel, log) in zip(axes, SEED_PANELS):
    ax.set(xlabel="epoch", ylabel=ylabel, yscale="log" if log else "linear")
  axes[0].legend(fontsize=7, title="first seed bold; dots: onsets", title_fontsize=7)
  fig.suptitle(f"{family}: every seed of every member (data: docs/data/recount)")
  return fig
