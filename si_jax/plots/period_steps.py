"""Figs. 4/11 and 13: one training period logged per step, and phase B's delta-jump bounds.

``plot_period`` draws a period step by step with its phases A, B and C shaded;
``plot_delta_bounds`` draws Fig. 13 (appendix D) from ``period_steps.phase_b_analysis``:
the effective gradient norm between its envelopes, and the cosine distance of adjacent
steps between the bounds they imply, with Eq. (8)'s prediction from the measured g~.
"""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from si_jax.analysis import period_steps, phases  # noqa: E402
from si_jax.engine import train  # noqa: E402
from si_jax.plots import plotting  # noqa: E402

PANELS = [("loss", "batch train loss", True), ("weight_norm", r"$\rho$", False),
          ("effective_lr", r"effective LR $\eta/\rho^2$", True),
          ("effective_grad_norm", r"effective grad norm $\rho\|\nabla f\|$", True),
          ("cosine_distance", "1 - cos(adjacent steps)", True)]
FIT_REGION = {"facecolor": "none", "edgecolor": "0.55", "hatch": "..", "lw": 0}  # grey dots


def plot_period(workdir: str, period: int, out: str) -> str:
  """Draws ``period`` of the run step by step (``PANELS``) into ``out`` (and a .pdf).

  Its phases are shaded and its destabilization onsets marked; prints the analysis and
  the phases. Returns ``out``.
  """
  epochs = phases.load_series(workdir)
  analysis = phases.analyze_run(workdir, series=epochs)
  if not 0 <= period < len(analysis.periods):
    raise ValueError(f"{workdir}: {analysis.describe()}\nno period {period}")
  p = analysis.periods[period]
  steps = phases.load_series(workdir, steps=True)
  done = np.r_[0, epochs["step"].astype(int)]  # steps completed before epoch index i
  sel = (steps["step"] >= done[p.start]) & (steps["step"] < done[p.end])
  # the period starts at a destabilization (but the warm-up); a complete one ends at the next
  onsets = [done[i] for i in ([p.start] if p.index else []) + ([p.end] if p.complete else [])]
  fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.6), constrained_layout=True)
  for ax, (key, title, log) in zip(axes, PANELS):
    t, y = steps["step"][sel], steps[key][sel]
    (ax.semilogy if log else ax.plot)(t, y, lw=0.6, color=plotting.RUN_COLORS[0])
    _mark_phases(ax, p, done, onsets, t, y, analysis.periodic)
    ax.set(title=title, xlabel="step")
    plotting.readable_log_ticks(ax)
  shaded = "".join(n for n, (a, b) in (("A", p.a), ("B", p.b), ("C", p.c)) if b > a)
  plotting.figure_key(fig, shaded if analysis.periodic else "",
                      ["line" if analysis.periodic else "marker"] if onsets else [])
  what = (f"C {done[p.c[0]]}-{done[p.c[1]]}, A -{done[p.a[1]]}, B -{done[p.b[1]]} steps"
          if analysis.periodic else "no periodic behavior: phases not shaded")
  fig.suptitle(f"period {period}: epochs {p.stats['x_start']:g}-{p.stats['x_end']:g} ({what})",
               fontsize=10)
  plotting.save_figure(fig, out)
  print(analysis.describe())
  for line in period_steps.phase_lines(steps, p, done):
    print(line)
  return out


def _mark_phases(ax, p: phases.Period, done: np.ndarray, onsets: list[int], t: np.ndarray,
                 y: np.ndarray, periodic: bool) -> None:
  """Shades period ``p``'s phases and draws its ``onsets`` (steps) across ``ax``.

  For a run without periodic behavior only the onsets, as markers on (t, y).
  """
  if not periodic:
    plotting.mark_onsets(ax, t, y, [int(i) for i in np.searchsorted(t, onsets) if i < len(t)])
    return
  for name, (a, b) in (("C", p.c), ("A", p.a), ("B", p.b)):
    if b > a:
      plotting.shade_phase(ax, name, done[a], done[b])
  for step in onsets:
    plotting.mark_onset(ax, step)


def figure_delta_bounds(a: dict[str, Any]) -> Figure:
  """Fig. 13's two panels over phase B (shaded in its colour) from ``phase_b_analysis``.

  The envelopes' fitting part is dotted grey; the measured values are in the run colour,
  the envelopes and the bounds dashed (``plotting``'s colours, none a phase colour).
  """
  fit, t = a["held"].fit, a["t"]
  run, low, high, eq8 = plotting.RUN_COLORS[:4]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), constrained_layout=True)
  axes[0].semilogy(t, a["g"], lw=0.5, color=run, label=r"$\tilde g_t$")
  axes[0].semilogy(t, a["low"], "--", color=low,
                   label=rf"$\ell(t)={fit.c:.3g}/(t-t_0)^{{{fit.lower_power:g}}}$")
  axes[0].semilogy(t, a["high"], "--", color=high, label=rf"$L(t)={fit.C:.3g}/(t-t_0)$")
  axes[0].set(xlabel="step", title="effective gradient norm, phase B")
  axes[1].semilogy(t, a["cd"], lw=0.5, color=run, label="measured 1 - cos")
  axes[1].semilogy(t, a["predicted"], ":", lw=0.8, color=eq8,
                   label=r"Eq. (8) from measured $\tilde g_t$")
  axes[1].semilogy(t, a["cd_low"], "--", color=low, label=r"bound with $\ell(t)$")
  axes[1].semilogy(t, a["cd_high"], "--", color=high, label=r"bound with $L(t)$")
  axes[1].set(xlabel="step", title=f"cosine distance of adjacent steps (lr {a['lr']:g}, "
              f"wd {a['wd']:g})")
  for ax in axes:
    plotting.shade_phase(ax, "B", t[0], t[-1])
    ax.axvspan(t[0], a["held"].t_split, zorder=0.5, **FIT_REGION)
    ax.legend(fontsize=8)
    plotting.readable_log_ticks(ax)
  plotting.figure_key(fig, "B", extra=[(Patch(**FIT_REGION), "envelopes fitted here")])
  return fig


def plot_delta_bounds(run: str, out: str, period: int = 1, lower_power: float = 1.0,
                      fit_fraction: float = 0.5) -> dict[str, Any]:
  """Draws Fig. 13 for ``period`` of the run into ``out``; prints its numbers.

  Prints ``period_steps.phase_b_report``; returns ``period_steps.phase_b_analysis``'s dict.

  ``lower_power``: the exponent p of the lower envelope l(t) = c/(t - t0)^p (1 for SGD,
  2 for GD); ``fit_fraction``: the first part of phase B the envelopes are fitted on.
  """
  a = period_steps.phase_b_analysis(run, period, lower_power, fit_fraction)
  fig = figure_delta_bounds(a)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  for line in period_steps.phase_b_report(a, out):
    print(line)
  return a


def train_and_plot(config, workdir: str, period: int = 1, progress: bool = True) -> None:
  """Trains (or resumes, or reuses) the run, then draws ``period`` and its Fig. 13.

  ``plot_period`` into WORKDIR/one_period.png, ``plot_delta_bounds`` into WORKDIR/fig13.png
  (the lower envelope's power 2 for full-batch GD, else 1). A preempted run draws nothing.
  """
  if train.train_and_evaluate(config, workdir, progress=progress)["preempted"]:
    return  # the same command resumes the run, then draws
  print("figure:", plot_period(workdir, period, os.path.join(workdir, "one_period.png")))
  plot_delta_bounds(workdir, os.path.join(workdir, "fig13.png"), period,
                    lower_power=2.0 if config.train.mode == "gd" else 1.0)
