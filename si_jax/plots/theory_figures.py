"""Figures 8, 9 and 14 of the appendix, from ``analysis.theory`` and ``analysis.toy``.

Fig. 8: gamma_{t+1} = phi(gamma_t) of Eq. (12) for alpha = 0.1, with facts (13c-g).
Fig. 9: a beta-undetermined sequence (alpha = 0.1, beta_t ~ U(1, 10)) converging to
        Proposition 5's interval [sqrt(a/alpha), sqrt(b/alpha)], with Lemma 2's bounds.
Fig. 14: GD on f(x, y) = x^2 / (x^2 + y^2) from (0.01, 1), lr 1: without weight decay
        it converges; with weight decay 0.01 it is periodic (three phases).
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from si_jax.analysis import theory, theory_claims, toy  # noqa: E402
from si_jax.plots import plotting  # noqa: E402


def figure8(out: str, alpha: float = 0.1) -> str:
  """Fig. 8 into ``out``: Eq. (12)'s map phi, its pre-stationary point (13c), minimum (13g)."""
  gamma = np.linspace(0.02, 3, 500)
  lm = theory.phi_landmarks(alpha)
  fig, ax = plt.subplots(figsize=(5, 4), constrained_layout=True)
  ax.plot(gamma, theory.phi(gamma, alpha), label=r"$\varphi(\gamma_t)$")
  ax.plot(gamma, gamma, "k:", lw=0.8, label=r"$\gamma_{t+1}=\gamma_t$")
  ax.axhline(1, color="gray", lw=0.6)
  ax.plot([lm["pre_stationary"], 1], [1, 1], "o", label="pre-stationary (13c)")
  ax.plot(lm["argmin"], lm["min"], "s", label="minimum (13g)")
  ax.set(xlabel=r"$\gamma_t$", ylabel=r"$\gamma_{t+1}$", ylim=(0, 3),
         title=rf"Eq. (12), $\alpha$ = {alpha}")
  ax.legend(fontsize=8)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def figure9(out: str, alpha=0.1, a=1.0, b=10.0, x0=40.0, steps=150, seed=0) -> str:
  """Fig. 9 into ``out``: Eq. (10) with beta_t ~ U(a, b), Lemma 2's and Prop. 5's bounds."""
  x, xa, xb, band = theory_claims.fig9_sequences(alpha, a, b, x0, steps, seed)
  fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
  ax.axhspan(band.low, band.high, edgecolor="0.3", hatch="//", zorder=0, label="Prop. 5 interval",
             **plotting.THEORY_BAND)
  ax.plot(x, label=r"$x_t$, $\beta_t\sim U(a,b)$")
  ax.plot(xa, "--", label=r"$x_{a,t}$ (Lemma 2)")
  ax.plot(xb, "--", label=r"$x_{b,t}$ (Lemma 2)")
  ax.set(xlabel="t", ylabel=r"$x_t$", title=rf"Eq. (10): $\alpha$={alpha}, a={a}, b={b}")
  ax.legend(fontsize=8)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def figure14(out: str, steps: int = 600) -> str:
  """Fig. 14 into ``out``: GD on the toy function without and with weight decay 0.01.

  The bottom row: one period of the periodic run, its phases shaded.
  """
  runs = {"no weight decay": toy.gradient_descent(wd=0.0, steps=steps),
          "weight decay 0.01": toy.gradient_descent(wd=0.01, steps=steps)}
  fig, axes = plt.subplots(3, 3, figsize=(13, 9), constrained_layout=True)
  for row, (name, r) in zip(axes[:2], runs.items()):
    row[0].semilogy(r["loss"])
    row[0].set(title=f"{name}: f(x, y)", xlabel="step")
    row[1].plot(r["weight_norm"])
    row[1].set(title=r"weight norm $\rho$", xlabel="step")
    row[2].semilogy(r["effective_lr"], r["effective_grad_norm"], lw=0.8)
    row[2].set(title="effective grad norm vs effective LR", xlabel=r"$\eta/\rho^2$")
  # bottom row: one period of the periodic run, from one weight-norm minimum (the end
  # of phase B) to the next; C: the norm jumps up, A: until the loss minimum, B: after.
  r = runs["weight decay 0.01"]
  rho = r["weight_norm"]
  minima = toy.norm_minima(rho)
  start, end = minima[-3], minima[-2]
  peak = start + int(np.argmax(rho[start:end]))
  low = peak + int(np.argmin(r["loss"][peak:end]))
  t = np.arange(start, end + 1)
  for ax, key, title in zip(axes[2], ("loss", "weight_norm", "effective_lr"),
                            ("loss", r"$\rho$", "effective LR")):
    ax.plot(t, r[key][start:end + 1], color=plotting.RUN_COLORS[0])
    for name, lo, hi in (("C", start, peak), ("A", peak, low), ("B", low, end)):
      plotting.shade_phase(ax, name, lo, hi)
    for onset in (start, end):  # the period runs from one destabilization to the next
      plotting.mark_onset(ax, onset)
    ax.set(title=f"one period: {title}", xlabel="step", yscale="log" if key == "loss" else "linear")
  plotting.figure_key(fig, "ABC", ["line"])
  fig.suptitle(r"Fig. 14: GD on $f(x,y)=x^2/(x^2+y^2)$ from (0.01, 1), lr 1")
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def write_all(out_dir: str) -> list[str]:
  """Writes Figs. 8, 9 and 14 into ``out_dir`` (created if needed); returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  return [fn(os.path.join(out_dir, name)) for fn, name in (
      (figure8, "fig8_phi.png"), (figure9, "fig9_beta_sequence.png"),
      (figure14, "fig14_toy.png"))]
