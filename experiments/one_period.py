"""Figs. 4/11 and 13: one training period logged per step, its phases A, B and C shaded,
then the delta-jump bounds of phase B (Fig. 13) and the angular update per phase.

  python experiments/one_period.py --config=configs/one_period.py:cpu --workdir=runs/one_period

Trains the run (or resumes / reuses it), finds its periods on the per-epoch logs
(``si_jax.phases``), and draws period ``--period`` (default 1, the first after the
warm-up) step by step into WORKDIR/one_period.png/.pdf, and Fig. 13 into
WORKDIR/fig13.png.
"""

import os

from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fig13_delta_bounds import delta_bounds_figure  # noqa: E402  (this script's sibling)
from si_jax import cli, phases, plotting, train  # noqa: E402

_CONFIG = cli.config_flag("configs/one_period.py[:variant]")
_WORKDIR = cli.workdir_flag()
_PROGRESS = cli.progress_flag()
cli.compilation_cache_flag()  # applied by cli.run before training
_PERIOD = flags.DEFINE_integer("period", 1, "which period (0 is the warm-up; Fig. 13 needs "
                               "1 or later)", lower_bound=0)


def draw_period(workdir: str, period: int, out: str) -> str:
  epochs = phases.load_series(workdir)
  analysis = phases.analyze_run(workdir, series=epochs)
  if not 0 <= period < len(analysis.periods):
    raise ValueError(f"{workdir}: {analysis.describe()}\nno period {period}")
  p = analysis.periods[period]
  steps = phases.load_series(workdir, steps=True)
  done = np.r_[0, epochs["step"].astype(int)]  # steps completed before epoch index i
  lo, hi = done[p.start], done[p.end]
  sel = (steps["step"] >= lo) & (steps["step"] < hi)
  t = steps["step"][sel]
  panels = [("loss", "batch train loss", True), ("weight_norm", r"$\rho$", False),
            ("effective_lr", r"effective LR $\eta/\rho^2$", True),
            ("effective_grad_norm", r"effective grad norm $\rho\|\nabla f\|$", True),
            ("cosine_distance", "1 - cos(adjacent steps)", True)]
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), constrained_layout=True)
  for ax, (key, title, log) in zip(axes, panels):
    (ax.semilogy if log else ax.plot)(t, steps[key][sel], lw=0.6, color="k")
    for name, (a, b) in (("C", p.c), ("A", p.a), ("B", p.b)):
      if b > a:
        ax.axvspan(done[a], done[b], color=plotting.PHASE_COLORS[name], alpha=0.15, lw=0,
                   label=f"phase {name}")
    ax.set(title=title, xlabel="step")
  axes[0].legend(fontsize=8)
  fig.suptitle(f"period {period}: epochs {p.stats['x_start']:g}-{p.stats['x_end']:g} "
               f"(C {done[p.c[0]]}-{done[p.c[1]]}, A -{done[p.a[1]]}, B -{done[p.b[1]]} steps)",
               fontsize=10)
  plotting.save_figure(fig, out)
  print(analysis.describe())
  for name, (a, b) in (("C", p.c), ("A", p.a), ("B", p.b)):
    m = (steps["step"] >= done[a]) & (steps["step"] < done[b])
    if m.any():
      print(f"phase {name}: steps {done[a]}..{done[b] - 1}: loss {np.median(steps['loss'][m]):.3g} "
            f"(median), rho {steps['weight_norm'][m][0]:.3g} -> {steps['weight_norm'][m][-1]:.3g}, "
            f"effective LR {steps['effective_lr'][m][0]:.3g} -> {steps['effective_lr'][m][-1]:.3g}, "
            f"median 1-cos {np.median(steps['cosine_distance'][m]):.3g}")
  return out


def main(argv):
  del argv  # only flags
  config, workdir = _CONFIG.value, _WORKDIR.value
  if train.train_and_evaluate(config, workdir, progress=_PROGRESS.value)["preempted"]:
    return  # the same command resumes the run, then draws
  print("figure:", draw_period(workdir, _PERIOD.value, os.path.join(workdir, "one_period.png")))
  delta_bounds_figure(workdir, os.path.join(workdir, "fig13.png"), _PERIOD.value,
                      lower_power=2.0 if config.train.mode == "gd" else 1.0)


if __name__ == "__main__":
  cli.run(main)
