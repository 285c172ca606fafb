"""Figs. 4/11 and 13: one training period logged per step, its phases A, B and C shaded,
then the delta-jump bounds of phase B (Fig. 13) and the angular update per phase.

  python experiments/one_period.py --config=configs/one_period.py:cpu --workdir=runs/one_period

Trains the run (or resumes / reuses it), finds its periods on the per-epoch logs
(``si_jax.analysis.phases``), and draws period ``--period`` (default 1, the first after the
warm-up) step by step into WORKDIR/one_period.png/.pdf, and Fig. 13 into
WORKDIR/fig13.png (``si_jax.plots.period_steps.train_and_plot``).
"""

from absl import flags

from si_jax.plots import period_steps
from si_jax.programs import cli

_CONFIG = cli.config_flag("configs/one_period.py[:variant]")
_WORKDIR = cli.workdir_flag()
_PROGRESS = cli.progress_flag()
cli.compilation_cache_flag()  # applied by cli.run before training
_PERIOD = flags.DEFINE_integer("period", 1, "which period (0 is the warm-up; Fig. 13 needs "
                               "1 or later)", lower_bound=0)


def main(argv):
  del argv  # only flags
  period_steps.train_and_plot(_CONFIG.value, _WORKDIR.value, _PERIOD.value, _PROGRESS.value)


if __name__ == "__main__":
  cli.run(main)
