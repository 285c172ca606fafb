"""The paper's four panels from run directories or in-memory series (matplotlib).

Train loss, test error, SI weight norm (rho) against epochs, and the effective
gradient norm against the effective LR (the "phase diagram" of Figs. 1-3).
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from si_jax import phases, theory  # noqa: E402


def _label(workdir: str) -> str:
  return os.path.basename(os.path.normpath(workdir))


def run_hyperparams(workdir: str) -> tuple[float, float]:
  """(lr, wd) from a run's resolved config.json."""
  with open(os.path.join(workdir, "config.json")) as f:
    optim = json.load(f)["optim"]
  return float(optim["lr"]), float(optim["wd"])


def tail_quantiles(series: dict[str, np.ndarray], key: str, tail: float = 0.5,
                   quantiles=(0.05, 0.95)) -> tuple[float, ...]:
  """Quantiles of a logged metric over the last ``tail`` of a run (its settled range)."""
  v = series[key]
  v = v[int(len(v) * (1 - tail)):]
  v = v[np.isfinite(v)]
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


def effective_series(s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(epochs, effective LR, effective gradient norm) of the phase diagram: appendix B's
  full-pass values (``train_effective_*``) at the epochs they were logged, else the
  epoch means of the in-step values."""
  if "train_effective_lr" in s and np.isfinite(s["train_effective_lr"]).sum() >= 2:
    ok = np.isfinite(s["train_effective_lr"])
    return s["epoch"][ok], s["train_effective_lr"][ok], s["train_effective_grad_norm"][ok]
  return s["epoch"], s["effective_lr"], s["effective_grad_norm"]


def plot_runs(workdirs: list[str], out: str, labels: list[str] | None = None,
              mark_spikes: bool = True, theory_overlay: bool = False) -> str:
  """Draws the four panels for one or several runs into ``out`` (PNG, PDF, ...).

  ``theory_overlay`` adds, from l, L = the 5%/95% quantiles of the effective gradient
  norm over the second half of each run, Proposition 3's band for rho
  (sqrt(kappa l) .. sqrt(kappa L)) and Remark 3's effective-LR band
  (sqrt(2 eta lam) / L .. sqrt(2 eta lam) / l).
  """
  if not workdirs:
    raise ValueError("plot_runs needs at least one run directory")
  series = [_series(w) for w in workdirs]
  analyses = ([phases.analyze_run(w, series=s) for w, s in zip(workdirs, series)]
              if mark_spikes else None)
  return _four_panels(series, out, labels or [_label(w) for w in workdirs], analyses,
                      [run_hyperparams(w) for w in workdirs] if theory_overlay else None)


def plot_series(series_list: list[dict[str, np.ndarray]], out: str,
                labels: list[str] | None = None, analyses: list[phases.Analysis] | None = None,
                hyperparams: list[tuple[float, float]] | None = None,
                mark_spikes: bool = True) -> str:
  """``plot_runs`` from in-memory series (a loop of one's own): per-epoch arrays keyed as
  in the logs (``epoch``, ``loss`` or ``train_loss``, ``weight_norm``, ``effective_lr``,
  ``effective_grad_norm``; ``test_error`` optional). ``analyses`` default to
  ``phases.analyze`` of each series; ``hyperparams`` [(lr, wd), ...] add the theory
  overlay."""
  if not series_list:
    raise ValueError("plot_series needs at least one series")
  if mark_spikes and analyses is None:
    analyses = [phases.analyze(s) for s in series_list]
  return _four_panels(series_list, out, labels or [f"run {k}" for k in range(len(series_list))],
                      analyses if mark_spikes else None, hyperparams)


def _four_panels(series_list, out, labels, analyses, hyperparams) -> str:
  """The four panels of ``plot_runs`` / ``plot_series``, drawn from series."""
  fig, axes = plt.subplots(1, 4, figsize=(18, 4), constrained_layout=True)
  for k, (s, label, color) in enumerate(zip(series_list, labels, plt.cm.tab10.colors * 10)):
    epoch = s["epoch"]
    loss = s["train_loss"] if "train_loss" in s and np.isfinite(s["train_loss"]).any() else s["loss"]
    ok = np.isfinite(loss)
    axes[0].semilogy(epoch[ok], loss[ok], color=color, label=label)
    if "test_error" in s:
      ok = np.isfinite(s["test_error"])
      axes[1].plot(epoch[ok], s["test_error"][ok], color=color)
    axes[2].plot(epoch, s["weight_norm"], color=color)
    # the line: epoch means of the in-step values (every epoch); the dots: appendix B's
    # full-pass values at the (thinned) epochs they were logged
    axes[3].loglog(s["effective_lr"], s["effective_grad_norm"], color=color, lw=0.6, alpha=0.6)
    _, elr, egn = effective_series(s)
    axes[3].plot(elr, egn, ".", color=color, ms=3)
    axes[3].plot(elr[-1:], egn[-1:], "o", color=color)
    if hyperparams:
      lr, wd = hyperparams[k]
      l, L = gradient_bounds(s)
      if wd > 0:
        norm_band = theory.equilibrium_norm_sq(l, L, lr, wd)
        elr_band = theory.equilibrium_effective_lr(l, L, lr, wd)
        axes[2].axhspan(np.sqrt(norm_band.low), np.sqrt(norm_band.high), color=color, alpha=0.1,
                        label="Prop. 3 band")
        axes[3].axvspan(elr_band.low, elr_band.high, color=color, alpha=0.1,
                        label="Remark 3 band")
        axes[2].legend(fontsize=8)
        axes[3].legend(fontsize=8)
    if analyses:
      if len(series_list) == 1:
        for ax in axes[:3]:
          shade_phases(ax, analyses[k])
      else:
        for e in analyses[k].destabilizations:
          for ax in axes[:3]:
            ax.axvline(e, color=color, ls=":", lw=0.8)
  axes[0].set(xlabel="epoch", ylabel="train loss", title="Train loss")
  axes[1].set(xlabel="epoch", ylabel="test error", title="Test error")
  axes[2].set(xlabel="epoch", ylabel=r"$\rho$ (SI weight norm)", title="Weight norm")
  axes[3].set(xlabel=r"effective LR $\eta/\rho^2$", ylabel=r"effective grad norm $\rho\|\nabla f\|$",
              title="Effective grad norm vs effective LR")
  axes[3].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no overlapping labels
  axes[0].legend(fontsize=8)
  save_figure(fig, out)
  return out


PHASE_COLORS = {"A": "tab:blue", "B": "tab:green", "C": "tab:red"}


def shade_phases(ax, analysis: phases.Analysis, alpha: float = 0.15) -> None:
  """Shades phases A, B, C of every period and marks the destabilization onsets."""
  x = analysis.x
  n = len(x)
  for p in analysis.periods:
    for name, (lo, hi) in (("C", p.c), ("A", p.a), ("B", p.b)):
      if hi > lo:
        right = x[hi] if hi < n else x[-1]
        ax.axvspan(x[lo], right, color=PHASE_COLORS[name], alpha=alpha, lw=0)
  for i in analysis.onsets:
    ax.axvline(x[i], color="k", ls=":", lw=0.7)


def plot_phases(workdirs: list[str], out: str, labels: list[str] | None = None,
                analyses: list[phases.Analysis] | None = None, columns: int = 4) -> str:
  """One panel per run: train loss (log) and SI weight norm, phases A/B/C shaded."""
  labels = labels or [_label(w) for w in workdirs]
  rows = -(-len(workdirs) // columns)
  cols = min(columns, len(workdirs))
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), squeeze=False,
                           constrained_layout=True)
  for k, (workdir, label) in enumerate(zip(workdirs, labels)):
    ax = axes[k // cols][k % cols]
    s = _series(workdir)
    a = analyses[k] if analyses else phases.analyze_run(workdir, series=s)
    loss = phases.loss_series(s)
    ok = np.isfinite(loss)
    ax.semilogy(a.x[ok], loss[ok], color="k", lw=0.8)
    twin = ax.twinx()
    rho = s["weight_norm"]
    twin.plot(a.x, rho, color="tab:purple", lw=0.8)
    twin.tick_params(labelsize=7, colors="tab:purple")
    twin.ticklabel_format(axis="y", useOffset=False)
    if np.nanmax(rho) - np.nanmin(rho) < 1e-3 * np.nanmean(rho):  # a fixed norm: show it flat
      twin.set_ylim(0.9 * np.nanmean(rho), 1.1 * np.nanmean(rho))
    shade_phases(ax, a)
    lengths = a.period_lengths()
    what = (f"{len(a.onsets)} destab., period {np.mean(lengths):.0f}" if a.periodic and lengths
            else f"{len(a.onsets)} destab." if a.periodic else "no periodic behavior")
    ax.set_title(f"{label}: {what}", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("step" if "epoch" not in s or len(a.x) != len(np.unique(s["epoch"])) else "epoch",
                  fontsize=8)
  for k in range(len(workdirs), rows * cols):
    axes[k // cols][k % cols].axis("off")
  handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.3) for c in PHASE_COLORS.values()]
  fig.legend(handles + [plt.Line2D([], [], color="k"), plt.Line2D([], [], color="tab:purple")],
             [f"phase {p}" for p in PHASE_COLORS] + ["train loss", r"$\rho$"],
             loc="outside lower center", ncol=5, fontsize=8)
  save_figure(fig, out)
  return out


def plot_effective_ranges(workdirs: list[str], out: str, labels: list[str]) -> str:
  """Effective LR and effective gradient norm over epochs for every run (Fig. 16), from
  appendix B's full pass where logged (``effective_series``)."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
  for workdir, label, color in zip(workdirs, labels, plt.cm.tab10.colors * 10):
    s = _series(workdir)
    ls = "--" if "init" in label else "-"
    epoch, elr, egn = effective_series(s)
    axes[0].semilogy(epoch, elr, ls, color=color, lw=0.8, label=label)
    axes[1].semilogy(epoch, egn, ls, color=color, lw=0.8)
  axes[0].set(xlabel="epoch", title=r"effective LR $\eta/\rho^2$")
  axes[1].set(xlabel="epoch", title=r"effective gradient norm $\rho\|\nabla f\|$")
  axes[0].legend(fontsize=7)
  save_figure(fig, out)
  return out


def save_figure(fig, out: str) -> None:
  """Writes ``out`` and, for a .png, the same figure as .pdf beside it."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=110)
  if out.endswith(".png"):
    fig.savefig(out[:-4] + ".pdf")
  plt.close(fig)
