"""The paper's four panels from run directories (matplotlib).

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


def gradient_bounds(series: dict[str, np.ndarray], tail: float = 0.5,
                    quantiles=(0.05, 0.95)) -> tuple[float, float]:
  """Global effective-gradient bounds (l, L) of a run: quantiles over its last ``tail``."""
  g = series["effective_grad_norm"]
  g = g[int(len(g) * (1 - tail)):]
  g = g[np.isfinite(g)]
  return tuple(float(q) for q in np.quantile(g, quantiles))


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
  labels = labels or [_label(w) for w in workdirs]
  fig, axes = plt.subplots(1, 4, figsize=(18, 4), constrained_layout=True)
  for workdir, label, color in zip(workdirs, labels, plt.cm.tab10.colors * 10):
    s = phases.load_series(workdir)
    epoch = s["epoch"]
    loss = s["train_loss"] if "train_loss" in s and np.isfinite(s["train_loss"]).any() else s["loss"]
    ok = np.isfinite(loss)
    axes[0].semilogy(epoch[ok], loss[ok], color=color, label=label)
    if "test_error" in s:
      ok = np.isfinite(s["test_error"])
      axes[1].plot(epoch[ok], s["test_error"][ok], color=color)
    axes[2].plot(epoch, s["weight_norm"], color=color)
    axes[3].loglog(s["effective_lr"], s["effective_grad_norm"], color=color, lw=0.8)
    axes[3].plot(s["effective_lr"][-1:], s["effective_grad_norm"][-1:], "o", color=color)
    if theory_overlay:
      lr, wd = run_hyperparams(workdir)
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
    if mark_spikes:
      for e in phases.find_destabilizations(s):
        for ax in axes[:3]:
          ax.axvline(e, color=color, ls=":", lw=0.8)
  axes[0].set(xlabel="epoch", ylabel="train loss", title="Train loss")
  axes[1].set(xlabel="epoch", ylabel="test error", title="Test error")
  axes[2].set(xlabel="epoch", ylabel=r"$\rho$ (SI weight norm)", title="Weight norm")
  axes[3].set(xlabel=r"effective LR $\eta/\rho^2$", ylabel=r"effective grad norm $\rho\|\nabla f\|$",
              title="Effective grad norm vs effective LR")
  axes[0].legend(fontsize=8)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out
