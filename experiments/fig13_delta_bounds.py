"""Fig. 13 (appendix D) on a run logged per step: effective gradient norm and the
cosine distance between adjacent steps in phase B of one period, with the delta-jump
bounds implied by envelopes l(t) = c/(t - t0)^p <= g~_t <= L(t) = C/(t - t0), and
Eq. (8)'s prediction from the measured g~_t overlaid on the measured 1 - cos.

The paper handpicks c and C so that the envelopes hold on phase B; fitted on the very
steps they are checked on they would hold by construction. Here they are fitted on the
first ``--fit_fraction`` (half) of phase B and checked on the rest (the fraction of
held-out steps inside is printed), and the paper's statement that both bounds and
1 - cos grow in the second half of phase B is measured: the ratio of the medians of
the two parts and the rise of a line fitted to the log values over the second part.

  python -m si_jax.main --config=configs/quickstart.py --workdir=runs/qs_steps \
      --config.train.log_every=step --config.train.epochs=120
  python experiments/fig13_delta_bounds.py runs/qs_steps --out=fig13.png [--period=1] \
      [--fit_fraction=0.5] [--lower_power=2 for GD]

Period k runs from the k-th destabilization to the next and its phase B is the one
``si_jax.analysis.phases.analyze`` finds on the per-epoch logs (the detector's converged
stretch, to the epoch before the next destabilization); t_valid is its first step (the fit
makes (17) hold on every fitted step, and only the held-out steps test it).
"""

from __future__ import annotations

import matplotlib
from absl import flags

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from si_jax.analysis import phases, theory  # noqa: E402
from si_jax.plots import plotting  # noqa: E402
from si_jax.programs import cli  # noqa: E402


def phase_b_steps(workdir: str, period: int) -> tuple[int, int, int]:
  """(t0, first step of phase B, last step of phase B), from the per-epoch logs.

  t0 is the first iteration of the period (appendix D): the first step of the epoch in
  which the destabilization starts.
  """
  epochs = phases.load_series(workdir)
  analysis = phases.analyze_run(workdir, series=epochs)
  if not 1 <= period <= len(analysis.onsets) or not analysis.periods[period].complete:
    raise ValueError(f"{workdir}: destabilizations at epochs {analysis.destabilizations}; "
                     f"period {period} needs two of them. Train longer or pick another --period.")
  p = analysis.periods[period]
  done = epochs["step"].astype(int)  # steps completed at the end of each epoch
  return int(done[p.start - 1]), int(done[p.b[0] - 1]), int(done[p.end - 1] - 1)


def report_equilibrium(steps, t0, b_start, b_end, lr, wd, momentum=0.0) -> None:
  """Measured angular update per step against the equilibrium sqrt(2 eta lam / (1 + mu)):
  phase C is the destabilization epoch that starts at t0, A runs from its end to phase B."""
  predicted = theory.equilibrium_angular_update(lr, wd, momentum)
  angle = theory.angular_update(steps["cosine_distance"])
  step, epoch = steps["step"], steps["epoch"]
  spike_epoch = epoch[step == t0][0]
  c_end = int(step[epoch == spike_epoch].max())
  for name, lo, hi in (("C", t0, c_end), ("A", c_end + 1, b_start - 1), ("B", b_start, b_end)):
    sel = (step >= lo) & (step <= hi)
    if sel.any():
      ratio = angle[sel] / predicted
      print(f"phase {name} (steps {lo}..{hi}): angular update / sqrt(2 eta lam) "
            f"median {np.median(ratio):.3g}, range {ratio.min():.3g}..{ratio.max():.3g}")


def phase_b_analysis(run: str, period: int = 1, lower_power: float = 1.0,
                     fit_fraction: float = 0.5) -> dict:
  """Phase B of ``period``: envelopes fitted on its first ``fit_fraction`` of steps and
  checked on the rest (``theory.held_out_bounds``), and the trends of the measured
  1 - cos and of both bounds from the first part to the second (``theory.half_trend``).

  Returns the per-step arrays (t, g, rho, cd, the bounds, Eq. (8) from the measured g~)
  and the numbers: t0, the split, the fit, the held-out fractions, the trends.
  """
  if not 0 < fit_fraction < 1:
    raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction!r}")
  lr, wd = plotting.run_hyperparams(run)
  steps = phases.load_series(run, steps=True)
  t0, b_start, b_end = phase_b_steps(run, period)
  sel = (steps["step"] >= b_start) & (steps["step"] <= b_end)
  t, g, rho, cd = (steps[k][sel] for k in ("step", "effective_grad_norm", "weight_norm",
                                          "cosine_distance"))
  t_split = b_start + round(fit_fraction * (b_end - b_start + 1))
  held = theory.held_out_bounds(t, g, rho, cd, lr, wd, t0=t0, t_split=t_split,
                                t_valid=b_start, lower_power=lower_power)
  low, high = held.fit(t)
  cd_low, cd_high = theory.cosine_distance_bounds(rho, low, high, lr, wd)
  trends = {name: theory.half_trend(t, v, t_split)
            for name, v in (("1 - cos", cd), ("bound with l(t)", cd_low),
                            ("bound with L(t)", cd_high))}
  return {"lr": lr, "wd": wd, "t0": t0, "b_start": b_start, "b_end": b_end, "held": held,
          "trends": trends, "t": t, "g": g, "rho": rho, "cd": cd, "low": low, "high": high,
          "cd_low": cd_low, "cd_high": cd_high,
          "predicted": theory.cosine_distance(rho, g, lr, wd), "steps": steps}


FIT_REGION = {"facecolor": "none", "edgecolor": "0.55", "hatch": "..", "lw": 0}  # grey dots


def draw(a: dict, out: str) -> None:
  """Writes ``figure(a)`` into ``out``."""
  fig = figure(a)
  fig.savefig(out, dpi=110)
  plt.close(fig)


def figure(a: dict) -> Figure:
  """Fig. 13's two panels over phase B (shaded in its colour), the envelopes' fitting
  part of it dotted grey; the measured values in the run colour, the envelopes and the
  bounds dashed (``plotting``'s colours, none of them a phase colour)."""
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


def delta_bounds_figure(run: str, out: str, period: int = 1,
                        lower_power: float = 1.0, fit_fraction: float = 0.5) -> dict:
  """Draws Fig. 13 for ``period`` of the run into ``out`` and prints the equilibrium
  check per phase, the envelope constants fitted on the first ``fit_fraction`` of phase
  B, how often the bounds hold on the held-out rest, how well Eq. (8) holds, and whether
  1 - cos and the bounds grow in the second part (appendix D's claim). Returns
  ``phase_b_analysis``'s dict.

  ``lower_power``: the exponent p of the lower envelope l(t) = c/(t - t0)^p (1 for SGD,
  2 for GD).
  """
  a = phase_b_analysis(run, period, lower_power, fit_fraction)
  draw(a, out)
  report_equilibrium(a["steps"], a["t0"], a["b_start"], a["b_end"], a["lr"], a["wd"])
  held, residual = a["held"], np.abs(a["cd"] / a["predicted"] - 1)
  split = int(held.t_split)
  print(f"{out}: phase B steps {a['b_start']}..{a['b_end']} (t0={a['t0']}); envelopes fitted "
        f"on steps {a['b_start']}..{split - 1} ({held.n_fit}): c={held.fit.c:.4g}, "
        f"C={held.fit.C:.4g}; on the held-out steps {split}..{a['b_end']} ({held.n_check}): "
        f"g~ inside [l, L] at {100 * held.gradient_inside:.1f}%, measured 1 - cos inside "
        f"the bounds at {100 * held.cosine_inside:.1f}%")
  print(f"Eq. (8) from the measured g~ vs measured 1 - cos: residual median "
        f"{np.median(residual):.2e}, max {residual.max():.2e}")
  for name, trend in a["trends"].items():
    print(f"{name}: median after / before step {split} = {trend.median_ratio:.3g}; a line "
          f"through log({name}) over steps {split}..{a['b_end']} rises x{trend.growth:.3g}: "
          f"{trend.verdict}")
  return a


def main(argv):
  values = flags.FLAGS
  delta_bounds_figure(argv[1], values.out, values.period, values.lower_power,
                      values.fit_fraction)


if __name__ == "__main__":  # flags only here: experiments/one_period.py imports the figure
  flags.DEFINE_string("out", None, "output image (png, pdf, svg)", required=True)
  flags.DEFINE_integer("period", 1, "which period (1 is the first after the warm-up)",
                        lower_bound=1)
  flags.DEFINE_float("lower_power", 1.0, "exponent of the lower envelope: 1 for SGD, 2 for GD")
  flags.DEFINE_float("fit_fraction", 0.5, "the envelopes are fitted on this first part of "
                     "phase B and checked on the rest", lower_bound=0.0, upper_bound=1.0)
  cli.run(main, positional=1)
