"""Collects one-seed CPU-scale figure families into tables (docs/reproduction_history.md's).

  python experiments/reproduction_report.py runs/cpu --figures=docs/figures
  python experiments/reproduction_report.py runs/cifar_cpu --figures=docs/figures --prefix=cifar_

Expects the workdirs of the commands in docs/reproduction_history.md under RUNS
(lr_sweep, wd_sweep, lr_wd_product, last_layer_norm, practical, gd, one_period, minima);
prints for each family its table and the one-seed claim checks, and writes down-scaled
copies of the figures (PNG, at most 1100 px wide) into --figures. Families not run yet
are skipped (``si_jax.plots.reproduction``). The report's verdicts over seeds are
``experiments/detector_recount.py``'s and ``experiments/period_report.py``'s.
"""

from absl import flags

from si_jax.plots import reproduction
from si_jax.programs import cli

_FIGURES = flags.DEFINE_string("figures", "docs/figures",
                               "where the down-scaled figure copies go")
_PREFIX = flags.DEFINE_string("prefix", "", "prepended to the copies' names (cifar_: the "
                              "CIFAR-proxy families beside the digits ones)")


def main(argv):
  reproduction.reproduction_report(argv[1], _FIGURES.value, _PREFIX.value)


if __name__ == "__main__":
  cli.run(main, positional=1)
