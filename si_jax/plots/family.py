"""A family's figures, drawn from its members' logs (``si_jax.engine.experiment``)."""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from si_jax.analysis import phases
from si_jax.engine import experiment
from si_jax.plots import plotting


def _drawable(workdir: str, members) -> list[tuple[str, str, dict[str, Any]]]:
  """(run dir, label, per-epoch series) of the members that logged at least one epoch."""
  out = []
  for name, label, _ in members:
    d = os.path.join(workdir, name)
    series = phases.load_series(d)
    if "epoch" in series:
      out.append((d, label, series))
  return out


def draw_family(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """Draws a family's figures (PNG + PDF) into ``workdir``; returns their paths.

  <name>.png (Figs. 1-3's panels), <name>_phases.png and, for products, <name>_ranges.png
  (Fig. 16). Raises ValueError when no member has logged an epoch.
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
  out = []
  for file, fig in figures.items():
    out.append(os.path.join(workdir, file))
    plotting.save_figure(fig, out[-1])
  return out
