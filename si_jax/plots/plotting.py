"""The paper's figures from run directories or in-memory series (matplotlib).

Figs. 1-3's four panels, phase-shaded panels and Fig. 16's ranges, all drawn with the style
constants below (docs/design_notes.md)."""

from __future__ import annotations

import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import cm, colors, ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from si_jax.analysis import phases, theory  # noqa: E402

PHASE_COLORS = {"A": "tab:blue", "B": "tab:green", "C": "tab:red"}
PHASE_ALPHA = 0.15
ONSET_LABEL = "destabilization onset"
ONSET_LINE = {"color": "k", "ls": ":", "lw": 0.9}  # across a panel whose phases are shaded
ONSET_MARKER = {"marker": "v", "ms": 6, "mec": "k", "mew": 0.6, "ls": "none"}  # on a curve
THEORY_BAND = {"facecolor": "none", "ls": "--", "lw": 0.8, "alpha": 0.5}  # edge: run colour
THEORY_HATCHES = {"Prop. 3 band": "//", "Remark 3 band": "\\\\"}
RUN_COLORS = ("k", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
              "tab:cyan", "tab:gray")
RUN_MARKERS = ("o", "s", "^", "D", "P", "X", "h")  # 7 against 8 colours: 56 distinct runs
TIME_CMAP = "viridis"


def run_style(k: int) -> tuple[str, str]:
  """(colour, phase-diagram marker) of the k-th run of a figure."""
  return RUN_COLORS[k % len(RUN_COLORS)], RUN_MARKERS[k % len(RUN_MARKERS)]


def shade_phase(ax, name: str, x0: float, x1: float, alpha: float = PHASE_ALPHA) -> None:
  """Shades x0..x1 of ``ax`` in phase ``name``'s colour ("A", "B" or "C")."""
  ax.axvspan(x0, x1, color=PHASE_COLORS[name], alpha=alpha, lw=0, zorder=0)


def mark_onset(ax, x: float) -> None:
  """A destabilization onset at ``x``, across ``ax`` (a panel whose phases are shaded)."""
  ax.axvline(x, **ONSET_LINE)


def mark_onsets(ax, x: np.ndarray, y: np.ndarray, onsets: list[int], color="k") -> None:
  """``ONSET_MARKER``s on the curve (x, y) at the sample indices ``onsets`` (finite y)."""
  i = [j for j in onsets if np.isfinite(y[j])]
  if i:
    ax.plot(x[i], y[i], color=color, zorder=3, **ONSET_MARKER)


def key_entries(phase_names: str = "", onsets=(), bands=()) -> list[tuple]:
  """(handle, label) pairs for ``phase_names`` ("ABC"), ``onsets`` styles and ``bands``."""
  entries = [(Patch(color=PHASE_COLORS[p], alpha=PHASE_ALPHA, lw=0), f"phase {p}")
             for p in sorted(phase_names)]
  if "line" in onsets:
    entries.append((Line2D([], [], **ONSET_LINE), ONSET_LABEL))
  if "marker" in onsets:  # grey: drawn in the colour of the curve it sits on
    entries.append((Line2D([], [], color="0.6", **ONSET_MARKER),
                    ONSET_LABEL + (" (no periodic behavior)" if "line" in onsets else "")))
  for name in bands:
    entries.append((Patch(edgecolor="0.3", hatch=THEORY_HATCHES[name], **THEORY_BAND), name))
  return entries


def figure_key(fig, phase_names: str = "", onsets=(), bands=(), extra=()) -> None:
  """The legend of ``key_entries`` plus ``extra`` below the panels of ``fig``, if any."""
  entries = key_entries(phase_names, onsets, bands) + list(extra)
  if entries:
    handles, labels = zip(*entries)
    fits = max(1, int(fig.get_figwidth() / 1.9))  # entries of ~1.9 inches side by side
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(entries), fits),
               fontsize=8)


def _log_ticks_inside(lo: float, hi: float, subs) -> int:
  """How many of ``subs`` times the powers of ten lie in [lo, hi]."""
  powers = 10.0 ** np.arange(np.floor(np.log10(lo)), np.ceil(np.log10(hi)) + 1)
  t = np.outer(powers, subs).ravel()
  return int(np.sum((t >= lo) & (t <= hi)))


def readable_log_ticks(ax) -> None:
  """Two or more labelled major ticks on each log axis of ``ax``, once it holds its data."""
  for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
    lo, hi = sorted(lim)
    if axis.get_scale() != "log" or lo <= 0 or _log_ticks_inside(lo, hi, (1.0,)) >= 2:
      continue
    if _log_ticks_inside(lo, hi, (1.0, 2.0, 5.0)) >= 2:
      axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    else:
      axis.set_major_locator(ticker.MaxNLocator(nbins=4))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _label(workdir: str) -> str:
  return os.path.basename(os.path.normpath(workdir))


def run_hyperparams(workdir: str) -> tuple[float, float]:
  """(lr, wd) from a run's resolved config.json."""
  with open(os.path.join(workdir, "config.json")) as f:
    optim = json.load(f)["optim"]
  return float(optim["lr"]), float(optim["wd"])


def tail_quantiles(series: dict[str, np.ndarray], key: str, tail: float = 0.5,
                   quantiles=(0.05, 0.95)) -> tuple[float, ...]:
  """Quantiles of a logged metric over the last ``tail`` of a run (ValueError: none finite)."""
  v = series[key]
  v = v[int(len(v) * (1 - tail)):]
  v = v[np.isfinite(v)]
  if not len(v):
    raise ValueError(f"no finite {key} over the last {tail:.0%} of the run: no range to take")
  return tuple(float(q) for q in np.quantile(v, quantiles))


def gradient_bounds(series: dict[str, np.ndarray], tail: float = 0.5,
                    quantiles=(0.05, 0.95)) -> tuple[float, float]:
  """Global effective-gradient bounds (l, L) of a run: quantiles over its last ``tail``."""
  return tail_quantiles(series, "effective_grad_norm", tail, quantiles)


def _series(workdir: str) -> dict[str, np.ndarray]:
  """A run's per-epoch series; ValueError if it has none to draw."""
  s = phases.load_series(workdir)
  if "epoch" not in s:
    raise ValueError(f"{workdir}: metrics.jsonl holds no record yet (the run has not "
                     "finished an epoch)")
  return s


MEASURES = ("batch_mean", "full_pass")


def effective_series(s: dict[str, np.ndarray], measure: str = "full_pass",
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(epochs, effective LR, effective gradient norm) of one of two measurements.

  'batch_mean': each epoch's mean of the per-batch values (Fig. 16, as the released code logs);
  'full_pass': appendix B's full train-set gradient where logged. ValueError for another."""
  if measure not in MEASURES:
    raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
  if measure == "full_pass" and "train_effective_lr" in s and np.isfinite(
      s["train_effective_lr"]).sum() >= 2:
    ok = np.isfinite(s["train_effective_lr"])
    return s["epoch"][ok], s["train_effective_lr"][ok], s["train_effective_grad_norm"][ok]
  return s["epoch"], s["effective_lr"], s["effective_grad_norm"]


def _finite(*arrays) -> np.ndarray:
  """Where every array holds a finite positive value (drawable on a log axis)."""
  arrays = [np.asarray(a, np.float64) for a in arrays]
  return np.logical_and.reduce([np.isfinite(a) & (a > 0) for a in arrays])


def check_drawable(s: dict[str, np.ndarray], name: str, bands: bool = False) -> None:
  """Raises ValueError naming ``name`` when ``s`` has nothing to draw on a log panel.

  Nothing: no finite positive train loss or (ELR, gradient norm) pair, or (``bands``) no
  finite effective gradient norm over the second half."""
  _, elr, egn = effective_series(s)
  grad = s["effective_grad_norm"]
  if not _finite(_train_loss(s)).any():
    what = "train loss"
  elif not (_finite(elr, egn).any() or _finite(s["effective_lr"], grad).any()):
    what = "effective LR and effective gradient norm"
  elif bands and not np.isfinite(grad[int(len(grad) * 0.5):]).any():
    what = "effective gradient norm over the second half (the theory bands' l, L)"
  else:
    return
  raise ValueError(f"{name}: no finite {what} to draw (all NaN, infinite or not positive: "
                   "did the run diverge?)")


def plot_runs(workdirs: list[str], out: str, labels: list[str] | None = None,
              mark_spikes: bool = True, theory_overlay: bool = False) -> str:
  """Draws the four panels for one or several runs into ``out`` (PNG, PDF, ...); returns ``out``.

  ``theory_overlay``: Proposition 3's band for rho and Remark 3's effective-LR band.

  Raises:
    ValueError: no run, or one with nothing to draw (``check_drawable``, naming it)."""
  if not workdirs:
    raise ValueError("plot_runs needs at least one run directory")
  series = [_series(w) for w in workdirs]
  hyperparams = [run_hyperparams(w) for w in workdirs] if theory_overlay else None
  for k, (w, s) in enumerate(zip(workdirs, series)):
    check_drawable(s, w, bands=bool(hyperparams) and hyperparams[k][1] > 0)
  analyses = ([phases.analyze_run(w, series=s) for w, s in zip(workdirs, series)]
              if mark_spikes else None)
  return _four_panels(series, out, labels or [_label(w) for w in workdirs], analyses,
                      hyperparams)


def plot_series(series_list: list[dict[str, np.ndarray]], out: str,
                labels: list[str] | None = None, analyses: list[phases.Analysis] | None = None,
                hyperparams: list[tuple[float, float]] | None = None,
                mark_spikes: bool = True) -> str:
  """``plot_runs`` from in-memory per-epoch series keyed as in the logs; returns ``out``.

  ``analyses`` default to ``phases.analyze``; ``hyperparams`` [(lr, wd), ...] add theory bands."""
  if not series_list:
    raise ValueError("plot_series needs at least one series")
  labels = labels or [f"run {k}" for k in range(len(series_list))]
  for k, (s, label) in enumerate(zip(series_list, labels)):
    check_drawable(s, label, bands=bool(hyperparams) and hyperparams[k][1] > 0)
  if mark_spikes and analyses is None:
    analyses = [phases.analyze(s) for s in series_list]
  return _four_panels(series_list, out, labels, analyses if mark_spikes else None, hyperparams)


def _four_panels(series_list, out, labels, analyses, hyperparams) -> str:
  """Saves ``figure_four_panels`` into ``out``."""
  save_figure(figure_four_panels(series_list, labels, analyses, hyperparams), out)
  return out


def _train_loss(s: dict[str, np.ndarray]) -> np.ndarray:
  """The full-pass train loss where logged at all, else the in-step batch loss."""
  return s["train_loss"] if "train_loss" in s and np.isfinite(s["train_loss"]).any() else s["loss"]


def _logged(s: dict[str, np.ndarray], key: str) -> bool:
  return key in s and bool(np.isfinite(s[key]).any())


EPOCH_PANELS = {  # key: (y label, title, log scale)
    "train_loss": ("train loss", "Train loss", True),
    "test_error": ("test error", "Test error", False),
    "weight_norm": (r"$\rho$ (SI weight norm)", "Weight norm", False),
}


def figure_four_panels(series_list: list[dict[str, np.ndarray]], labels: list[str],
                       analyses: list[phases.Analysis] | None = None,
                       hyperparams: list[tuple[float, float]] | None = None,
                       groups: list[int] | None = None) -> Figure:
  """The panels of ``plot_runs``: train loss, test error (if logged), rho, phase diagram.

  ``analyses``: phases shaded for one periodic run, else onset markers; ``hyperparams``: bands;
  ``groups``: the member of each series (seeds of one member), its first seed drawn and
  labelled as a run, the others as thin lines of its colour."""
  groups = list(range(len(series_list))) if groups is None else groups
  keys = [k for k in EPOCH_PANELS if k != "test_error" or any(_logged(s, k) for s in series_list)]
  fig, axes = plt.subplots(1, len(keys) + 1, figsize=(4.6 * (len(keys) + 1), 4.2),
                           constrained_layout=True)
  panels, diagram = dict(zip(keys, axes)), axes[-1]
  epochs = np.concatenate([s["epoch"] for s in series_list])
  time = colors.Normalize(np.nanmin(epochs), np.nanmax(epochs))
  shade = bool(analyses) and len(series_list) == 1 and analyses[0].periodic
  onsets, bands, runs = set(), [], []
  for k, (s, label) in enumerate(zip(series_list, labels)):
    color, marker = run_style(groups[k])
    first = groups.index(groups[k]) == k
    curves = _draw_epoch_curves(panels, s, color, lw=1.0 if first else 0.4)
    if first:
      _draw_phase_diagram(diagram, s, color, marker, time)
      seeds = groups.count(groups[k])
      runs.append((Line2D([], [], color=color, marker=marker, mfc="white", mec=color),
                   label if seeds == 1 else
                   f"{re.sub(r', seed [0-9]+$', '', label)} ({seeds} seeds, first bold)"))
    if hyperparams and _draw_bands(panels["weight_norm"], diagram, s, *hyperparams[k], color):
      bands = list(THEORY_HATCHES)
    if analyses:
      onsets |= _draw_onsets(panels, curves, analyses[k], color, shade)
  for key, ax in panels.items():
    ylabel, title, _ = EPOCH_PANELS[key]
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
  diagram.set(xlabel=r"effective LR $\eta/\rho^2$",
              ylabel=r"effective grad norm $\rho\|\nabla f\|$",
              title="Effective grad norm vs effective LR")
  fig.colorbar(cm.ScalarMappable(norm=time, cmap=TIME_CMAP), ax=diagram, label="epoch")
  axes[0].legend(*zip(*runs), fontsize=8)
  # mini-batch gradients are larger than the full-batch one: the line sits above the dots
  diagram.legend([Line2D([], [], color="0.4", lw=0.7),
                  Line2D([], [], ls="", marker="o", mfc=plt.get_cmap(TIME_CMAP)(0.6), mec="0.4")],
                 ["mean over the epoch's mini-batches (as the released code logs)",
                  "whole train set at the epoch's weights (appendix B)"], fontsize=7)
  figure_key(fig, "ABC" if shade else "", onsets, bands)
  for ax in axes:
    readable_log_ticks(ax)
  return fig


def _draw_epoch_curves(panels, s, color, lw: float = 1.0) -> dict[str, np.ndarray]:
  """Draws a run's curves against epochs into ``panels``; returns them by panel."""
  curves = {"train_loss": _train_loss(s), "weight_norm": s["weight_norm"]}
  if _logged(s, "test_error"):
    curves["test_error"] = s["test_error"]
  for key, y in curves.items():
    ok = np.isfinite(y)
    ax = panels[key]
    (ax.semilogy if EPOCH_PANELS[key][2] else ax.plot)(s["epoch"][ok], y[ok], color=color,
                                                      lw=lw)
  return curves


def _draw_phase_diagram(ax, s, color, marker, time) -> None:
  """The run's epoch means as a line and its full-pass values as markers (by epoch)."""
  ax.plot(s["effective_lr"], s["effective_grad_norm"], color=color, lw=0.7, alpha=0.7)
  epoch, elr, egn = effective_series(s)
  ax.scatter(elr, egn, c=epoch, cmap=TIME_CMAP, norm=time, marker=marker, s=16,
             edgecolors=color, linewidths=0.4, zorder=3)
  ax.set(xscale="log", yscale="log")


def _draw_bands(ax_rho, ax_diagram, s, lr: float, wd: float, color) -> bool:
  """Draws Proposition 3's rho band and Remark 3's effective-LR band; whether drawn (wd > 0)."""
  if wd <= 0:
    return False
  l, L = gradient_bounds(s)
  norm_sq = theory.equilibrium_norm_sq(l, L, lr, wd)
  elr = theory.equilibrium_effective_lr(l, L, lr, wd)
  ax_rho.axhspan(np.sqrt(norm_sq.low), np.sqrt(norm_sq.high), edgecolor=color, zorder=0.5,
                 hatch=THEORY_HATCHES["Prop. 3 band"], **THEORY_BAND)
  ax_diagram.axvspan(elr.low, elr.high, edgecolor=color, zorder=0.5,
                     hatch=THEORY_HATCHES["Remark 3 band"], **THEORY_BAND)
  return True


def _draw_onsets(panels, curves, analysis: phases.Analysis, color, shade: bool) -> set[str]:
  """Shaded phases and onset lines (``shade``), else onset markers; the styles drawn."""
  if shade:
    for ax in panels.values():
      shade_phases(ax, analysis)
    return {"line"} if analysis.onsets else set()
  for key, y in curves.items():
    mark_onsets(panels[key], analysis.x, y, analysis.onsets, color)
  return {"marker"} if analysis.onsets else set()


def shade_phases(ax, analysis: phases.Analysis, alpha: float = PHASE_ALPHA) -> bool:
  """Shades phases A, B, C and draws onset lines across ``ax`` if periodic; whether it did."""
  if not analysis.periodic:
    return False
  x = analysis.x
  n = len(x)
  for p in analysis.periods:
    for name, (lo, hi) in (("C", p.c), ("A", p.a), ("B", p.b)):
      if hi > lo:
        shade_phase(ax, name, x[lo], x[hi] if hi < n else x[-1], alpha)
  for i in analysis.onsets:
    mark_onset(ax, x[i])
  return True


RHO_COLOR = "tab:purple"  # the twin axis of plot_phases


def plot_phases(workdirs: list[str], out: str, labels: list[str] | None = None,
                analyses: list[phases.Analysis] | None = None, columns: int = 4) -> str:
  """One panel per run: train loss and rho, phases shaded where periodic; returns ``out``."""
  series = [_series(w) for w in workdirs]
  if not analyses:
    analyses = [phases.analyze_run(w, series=s) for w, s in zip(workdirs, series)]
  save_figure(figure_phases(series, labels or [_label(w) for w in workdirs], analyses,
                            columns), out)
  return out


def figure_phases(series_list: list[dict[str, np.ndarray]], labels: list[str],
                  analyses: list[phases.Analysis], columns: int = 4) -> Figure:
  """The figure of ``plot_phases``, from series and their analyses."""
  rows = -(-len(series_list) // columns)
  cols = min(columns, len(series_list))
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), squeeze=False,
                           constrained_layout=True)
  onsets = set()
  for k, (s, a, label) in enumerate(zip(series_list, analyses, labels)):
    _phase_panel(axes[k // cols][k % cols], s, a, label)
    if a.onsets:
      onsets.add("line" if a.periodic else "marker")
  for k in range(len(series_list), rows * cols):
    axes[k // cols][k % cols].axis("off")
  figure_key(fig, "ABC" if any(a.periodic for a in analyses) else "", onsets,
             extra=[(Line2D([], [], color="k"), "train loss"),
                    (Line2D([], [], color=RHO_COLOR), r"$\rho$")])
  return fig


def _phase_panel(ax, s: dict[str, np.ndarray], a: phases.Analysis, label: str) -> None:
  """A run's loss (log) and rho (twin axis) against epochs, its phases shaded."""
  loss = phases.loss_series(s)
  ok = np.isfinite(loss)
  ax.semilogy(a.x[ok], loss[ok], color="k", lw=0.8)
  twin = ax.twinx()
  rho = s["weight_norm"]
  twin.plot(a.x, rho, color=RHO_COLOR, lw=0.8)
  twin.tick_params(labelsize=7, colors=RHO_COLOR)
  twin.ticklabel_format(axis="y", useOffset=False)
  if np.nanmax(rho) - np.nanmin(rho) < 1e-3 * np.nanmean(rho):  # a fixed norm: show it flat
    twin.set_ylim(0.9 * np.nanmean(rho), 1.1 * np.nanmean(rho))
  if not shade_phases(ax, a):
    mark_onsets(ax, a.x, loss, a.onsets)
  lengths = a.period_lengths()
  what = (f"{len(a.onsets)} destab., period {np.mean(lengths):.0f}" if a.periodic and lengths
          else f"{len(a.onsets)} destab." if a.periodic else "no periodic behavior")
  ax.set_title(f"{label}: {what}", fontsize=9)
  ax.tick_params(labelsize=7)
  ax.set_xlabel("step" if "epoch" not in s or len(a.x) != len(np.unique(s["epoch"])) else "epoch",
                fontsize=8)
  readable_log_ticks(ax)


def plot_effective_ranges(workdirs: list[str], out: str, labels: list[str]) -> str:
  """Effective LR and effective gradient norm over epochs of every run (Fig. 16)."""
  save_figure(figure_effective_ranges([_series(w) for w in workdirs], labels), out)
  return out


def figure_effective_ranges(series_list: list[dict[str, np.ndarray]],
                            labels: list[str], measure: str = "batch_mean") -> Figure:
  """The figure of ``plot_effective_ranges``, from series (Fig. 16, ``effective_series``)."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
  for k, (s, label) in enumerate(zip(series_list, labels)):
    color, _ = run_style(k)
    ls = "--" if "init" in label else "-"
    epoch, elr, egn = effective_series(s, measure)
    axes[0].semilogy(epoch, elr, ls, color=color, lw=0.8, label=label)
    axes[1].semilogy(epoch, egn, ls, color=color, lw=0.8)
  axes[0].set(xlabel="epoch", title=r"effective LR $\eta/\rho^2$")
  what = ("mean over the epoch's mini-batches" if measure == "batch_mean"
          else "whole train set (appendix B)")
  axes[1].set(xlabel="epoch",
              title=r"effective gradient norm $\rho\|\nabla f\|$" + f", {what}")
  axes[0].legend(fontsize=7)
  for ax in axes:
    readable_log_ticks(ax)
  return fig


def save_figure(fig, out: str) -> None:
  """Writes ``out`` and, for a .png, the same figure as .pdf beside it."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=110)
  if out.endswith(".png"):
    fig.savefig(out[:-4] + ".pdf")
  plt.close(fig)
