"""Figs. 4/11 and 13: one training period logged per step, its phases A, B and C shaded,
then the delta-jump bounds of phase B (Fig. 13) and the angular update per phase.

  python experiments/one_period.py --config=configs/one_period.py:cpu --workdir=runs/one_period

Trains the run (or resumes / reuses it), finds its periods on the per-epoch logs
(``si_jax.phases``), and draws period ``--period`` (default 1, the first after the
warm-up) step by step into WORKDIR/one_period.png/.pdf, and Fig. 13 into
WORKDIR/fig13.png.
"""

import os
import subprocess
import sys

from absl import app, flags, logging
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from si_jax import phases, plotting, train  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/one_period.py[:variant]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory", required=True)
_PERIOD = flags.DEFINE_integer("period", 1, "which period (0 is the warm-up)")


def draw_period(workdir: str, period: int, out: str) -> str:
  epochs = phases.load_series(workdir)
  analysis = phases.analyze_run(workdir, series=epochs)
  if not 0 <= period < len(analysis.periods):
    raise SystemExit(f"{workdir}: {analysis.describe()}\nno period {period}")
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
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  config, workdir = _CONFIG.value, _WORKDIR.value
  try:
    train.train_and_evaluate(config, workdir)
  except (ValueError, train.TrainingDiverged) as e:
    sys.exit(f"error: {e}")
  print("figure:", draw_period(workdir, _PERIOD.value, os.path.join(workdir, "one_period.png")))
  lower = "2" if config.train.mode == "gd" else "1"
  subprocess.run([sys.executable, os.path.join(HERE, "fig13_delta_bounds.py"), workdir,
                  "--out", os.path.join(workdir, "fig13.png"), "--period", str(_PERIOD.value),
                  "--lower-power", lower], check=True)


if __name__ == "__main__":
  app.run(main)
