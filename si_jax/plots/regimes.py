"""The sphere family's figure: its members' end points against the ELR, regimes shaded.

Kodryan et al. 2022's main figure: train loss, test error, effective gradient norm and angle
to init against the ELR, a marker per seed, regimes from ``si_jax.analysis.regimes``."""

from __future__ import annotations

import os
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from si_jax.analysis import phases

REGIME_COLORS = {"convergence": "tab:green", "chaotic equilibrium": "tab:orange",
                 "divergence": "tab:red"}
PANELS = (("train_loss", "final train loss", True), ("test_error", "final test error", False),
          ("effective_grad_norm", "mean effective gradient norm", True),
          ("angle_to_init", "angle to init (rad)", False))
GREY = "0.8"  # an ELR whose seeds disagree, or without a regime


def member_points(summary: dict[str, Any], workdir: str) -> list[dict[str, Any]]:
  """Per member: its ELR (``optim.lr``), seed, regime and end point (last-quarter medians)."""
  rows = []
  for m in summary["members"]:
    series = phases.load_series(os.path.join(workdir, m["name"]))
    row = {"elr": float(m["overrides"]["optim.lr"]), "seed": m["overrides"].get("seed", 0),
           "regime": m.get("regime", "?")}
    for key, _, _ in PANELS:
      values = np.asarray(series.get(key, []), np.float64)
      tail = values[len(values) * 3 // 4:]
      tail = tail[np.isfinite(tail)]
      row[key] = float(np.median(tail)) if len(tail) else float("nan")
    rows.append(row)
  return rows


def _shade(ax, rows: list[dict[str, Any]]) -> bool:
  """Shades each ELR's span (half-way to its neighbours in log); True if one is ``GREY``."""
  by_elr = {}
  for r in rows:
    by_elr.setdefault(r["elr"], set()).add(r["regime"])
  elrs = sorted(by_elr)
  logs = np.log10(elrs)
  edges = np.concatenate([[logs[0] - 0.125], (logs[1:] + logs[:-1]) / 2, [logs[-1] + 0.125]])
  grey = False
  for k, elr in enumerate(elrs):
    found = by_elr[elr]
    color = REGIME_COLORS.get(found.pop(), GREY) if len(found) == 1 else GREY
    ax.axvspan(10 ** edges[k], 10 ** edges[k + 1], color=color, alpha=0.15, lw=0)
    grey |= color == GREY
  return grey


def figure_regimes(rows: list[dict[str, Any]], title: str = "") -> Figure:
  """The four panels of ``PANELS`` against the ELR (log), seeds as markers, regimes shaded."""
  if not rows:
    raise ValueError("no members to draw")
  fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.6),
                           constrained_layout=True)
  seeds = sorted({r["seed"] for r in rows})
  for ax, (key, label, log) in zip(axes, PANELS):
    grey = _shade(ax, rows)
    for k, seed in enumerate(seeds):
      mine = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["elr"])
      ax.plot([r["elr"] for r in mine], [r[key] for r in mine], "os^vD"[k % 5] + "-",
              color="k", lw=0.6, ms=4, mfc="white" if k else "k", label=f"seed {seed}")
    ax.set(xscale="log", yscale="log" if log else "linear", xlabel="effective LR (ELR)",
           title=label)
  handles = [Patch(color=c, alpha=0.3, label=name) for name, c in REGIME_COLORS.items()]
  if grey:
    handles.append(Patch(color=GREY, alpha=0.3, label="seeds disagree (or no regime)"))
  axes[0].legend(handles=handles + axes[0].get_legend_handles_labels()[0], fontsize=7)
  if title:
    fig.suptitle(title)
  return fig
