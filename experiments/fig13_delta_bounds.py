"""Fig. 13 (appendix D) on a run logged per step: effective gradient norm and the
cosine distance between adjacent steps in phase B of one period, with the delta-jump
bounds implied by fitted envelopes l(t) = c/(t - t0)^p <= g~_t <= L(t) = C/(t - t0),
and Eq. (8)'s prediction from the measured g~_t overlaid on the measured 1 - cos.

  python -m si_jax.main --config=configs/quickstart.py --workdir=runs/qs_steps \
      --config.train.log_every=step --config.train.epochs=120
  python experiments/fig13_delta_bounds.py runs/qs_steps --out=fig13.png [--period=1]

Period k runs from the k-th destabilization to the next and its phase B is the one
``si_jax.phases.analyze`` finds on the per-epoch logs (from the first epoch whose train
loss is within a factor ``--near`` (10) of the period's minimum to the epoch before the
next destabilization); t_valid is its first step (the fit makes (17) hold for every
step after it).
"""

from __future__ import annotations

from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from si_jax import cli, phases, plotting, theory  # noqa: E402


def phase_b_steps(workdir: str, period: int, near: float) -> tuple[int, int, int]:
  """(t0, first step of phase B, last step of phase B), from the per-epoch logs.

  t0 is the step count at the end of the destabilization's first epoch.
  """
  epochs = phases.load_series(workdir)
  analysis = phases.analyze_run(workdir, series=epochs, b_decades=float(np.log10(near)))
  if not 1 <= period <= len(analysis.onsets) or not analysis.periods[period].complete:
    raise ValueError(f"{workdir}: destabilizations at epochs {analysis.destabilizations}; "
                     f"period {period} needs two of them. Train longer or pick another --period.")
  p = analysis.periods[period]
  done = epochs["step"].astype(int)  # steps completed at the end of each epoch
  return int(done[p.start]), int(done[p.b[0] - 1]), int(done[p.end - 1] - 1)


def report_equilibrium(steps, t0, b_start, b_end, lr, wd, momentum=0.0) -> None:
  """Measured angular update per step against the equilibrium sqrt(2 eta lam / (1 + mu)):
  phase C is the destabilization epoch that ends at t0, A runs from t0 to phase B."""
  predicted = theory.equilibrium_angular_update(lr, wd, momentum)
  angle = theory.angular_update(steps["cosine_distance"])
  step, epoch = steps["step"], steps["epoch"]
  spike_epoch = epoch[step == t0 - 1][0]
  c_start = int(step[epoch == spike_epoch].min())
  for name, lo, hi in (("C", c_start, t0 - 1), ("A", t0, b_start - 1), ("B", b_start, b_end)):
    sel = (step >= lo) & (step <= hi)
    if sel.any():
      ratio = angle[sel] / predicted
      print(f"phase {name} (steps {lo}..{hi}): angular update / sqrt(2 eta lam) "
            f"median {np.median(ratio):.3g}, range {ratio.min():.3g}..{ratio.max():.3g}")


def delta_bounds_figure(run: str, out: str, period: int = 1, near: float = 10.0,
                        lower_power: float = 1.0) -> str:
  """Draws Fig. 13 for ``period`` of the run into ``out`` and prints the equilibrium
  check per phase, the envelope constants and how well Eq. (8) and the bounds hold.

  ``lower_power``: the exponent p of the lower envelope l(t) = c/(t - t0)^p (1 for SGD,
  2 for GD).
  """
  lr, wd = plotting.run_hyperparams(run)
  steps = phases.load_series(run, steps=True)
  t0, b_start, b_end = phase_b_steps(run, period, near)
  sel = (steps["step"] >= b_start) & (steps["step"] <= b_end)
  t, g, rho, cd = (steps[k][sel] for k in ("step", "effective_grad_norm", "weight_norm",
                                          "cosine_distance"))
  fit = theory.fit_gradient_envelopes(t, g, t0=t0, t_valid=b_start, lower_power=lower_power)
  low, high = fit(t)
  cd_low, cd_high = theory.cosine_distance_bounds(rho, low, high, lr, wd)
  predicted = theory.cosine_distance(rho, g, lr, wd)
  fig, axes = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
  axes[0].semilogy(t, g, lw=0.5, label=r"$\tilde g_t$")
  axes[0].semilogy(t, low, "--", label=rf"$\ell(t)={fit.c:.3g}/(t-t_0)^{{{fit.lower_power:g}}}$")
  axes[0].semilogy(t, high, "--", label=rf"$L(t)={fit.C:.3g}/(t-t_0)$")
  axes[0].set(xlabel="step", title="effective gradient norm, phase B")
  axes[1].semilogy(t, cd, lw=0.5, label="measured 1 - cos")
  axes[1].semilogy(t, predicted, ":", lw=0.8, label=r"Eq. (8) from measured $\tilde g_t$")
  axes[1].semilogy(t, cd_low, "--", label=r"bound with $\ell(t)$")
  axes[1].semilogy(t, cd_high, "--", label=r"bound with $L(t)$")
  axes[1].set(xlabel="step", title=f"cosine distance of adjacent steps (lr {lr:g}, wd {wd:g})")
  for ax in axes:
    ax.legend(fontsize=8)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  report_equilibrium(steps, t0, b_start, b_end, lr, wd)
  residual = np.abs(cd / predicted - 1)
  inside = np.mean((cd >= cd_low * (1 - 1e-3)) & (cd <= cd_high * (1 + 1e-3)))
  print(f"{out}: phase B steps {b_start}..{b_end} (t0={t0}); c={fit.c:.4g}, C={fit.C:.4g}; "
        f"Eq. (8) residual median {np.median(residual):.2e}, max {residual.max():.2e}; "
        f"measured 1 - cos inside the bounds at {100 * inside:.1f}% of steps")
  return out


def main(argv):
  values = flags.FLAGS
  delta_bounds_figure(argv[1], values.out, values.period, values.near, values.lower_power)


if __name__ == "__main__":  # flags only here: experiments/one_period.py imports the figure
  flags.DEFINE_string("out", None, "output image (png, pdf, svg)", required=True)
  flags.DEFINE_integer("period", 1, "which period (1 is the first after the warm-up)",
                        lower_bound=1)
  flags.DEFINE_float("near", 10.0, "phase B starts when the loss is within this factor of "
                     "its minimum", lower_bound=1.0)
  flags.DEFINE_float("lower_power", 1.0, "exponent of the lower envelope: 1 for SGD, 2 for GD")
  cli.run(main, positional=1)
