"""Figs. 4/11 and 13: one training period logged per step, its phases A, B and C shaded,
then the delta-jump bounds of phase B (Fig. 13) and the angular update per phase.

  python experiments/one_period.py --config=configs/one_period.py:cpu --workdir=runs/one_period

Trains the run (or resumes / reuses it), finds its periods on the per-epoch logs
(``si_jax.analysis.phases``), and draws period ``--period`` (default 1, the first after the
warm-up) step by step into WORKDIR/one_period.png/.pdf, and Fig. 13 into
WORKDIR/fig13.png.
"""

import os

import matplotlib
from absl import flags

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from fig13_delta_bounds import delta_bounds_figure  # noqa: E402  (this script's sibling)

from si_jax.analysis import phases  # noqa: E402
from si_jax.engine import train  # noqa: E402
from si_jax.plots import plotting  # noqa: E402
from si_jax.programs import cli  # noqa: E402

_CONFIG = cli.config_flag("configs/one_period.py[:variant]")
_WORKDIR = cli.workdir_flag()
_PROGRESS = cli.progress_flag()
cli.compilation_cache_flag()  # applied by cli.run before training
_PERIOD = flags.DEFINE_integer("period", 1, "which period (0 is the warm-up; Fig. 13 needs "
                               "1 or later)", lower_bound=0)


PANELS = [("loss", "batch train loss", True), ("weight_norm", r"$\rho$", False),
          ("effective_lr", r"effective LR $\eta/\rho^2$", True),
          ("effective_grad_norm", r"effective grad norm $\rho\|\nabla f\|$", True),
          ("cosine_distance", "1 - cos(adjacent steps)", True)]


def draw_period(workdir: str, period: int, out: str) -> str:
  """Draws ``period`` of the run step by step (``PANELS``), its phases shaded and its
  destabilization onsets marked, into ``out``; prints the analysis and the phases."""
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
  report_phases(steps, p, done)
  return out


def _mark_phases(ax, p: phases.Period, done: np.ndarray, onsets: list[int], t: np.ndarray,
                 y: np.ndarray, periodic: bool) -> None:
  """Period ``p``'s phases shaded and its ``onsets`` (steps) drawn across ``ax`` for a
  periodic run; for a run without periodic behavior only the onsets, as markers on (t, y)."""
  if not periodic:
    plotting.mark_onsets(ax, t, y, [int(i) for i in np.searchsorted(t, onsets) if i < len(t)])
    return
  for name, (a, b) in (("C", p.c), ("A", p.a), ("B", p.b)):
    if b > a:
      plotting.shade_phase(ax, name, done[a], done[b])
  for step in onsets:
    plotting.mark_onset(ax, step)


def report_phases(steps: dict[str, np.ndarray], p: phases.Period, done: np.ndarray) -> None:
  """Prints each phase of period ``p``: its steps, median loss, rho, effective LR and
  median 1 - cos (``done``: steps completed before each epoch index)."""
  for name, (a, b) in (("C", p.c), ("A", p.a), ("B", p.b)):
    m = (steps["step"] >= done[a]) & (steps["step"] < done[b])
    if m.any():
      print(f"phase {name}: steps {done[a]}..{done[b] - 1}: loss {np.median(steps['loss'][m]):.3g} "
            f"(median), rho {steps['weight_norm'][m][0]:.3g} -> {steps['weight_norm'][m][-1]:.3g}, "
            f"effective LR {steps['effective_lr'][m][0]:.3g} -> "
            f"{steps['effective_lr'][m][-1]:.3g}, "
            f"median 1-cos {np.median(steps['cosine_distance'][m]):.3g}")


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
