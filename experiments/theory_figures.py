"""Figures 8, 9 and 14 of the appendix from the theory module (seconds on a CPU).

  python experiments/theory_figures.py --out=figures/

Fig. 8: Eq. (12)'s map phi; Fig. 9: a beta-undetermined sequence converging to
Proposition 5's interval; Fig. 14: GD on the toy function x^2 / (x^2 + y^2) with and
without weight decay (``si_jax.plots.theory_figures``).
"""

from absl import flags

from si_jax.plots import theory_figures
from si_jax.programs import cli

_OUT = flags.DEFINE_string("out", "figures", "output directory")


def main(argv):
  del argv  # only flags
  for path in theory_figures.write_all(_OUT.value):
    print(path)


if __name__ == "__main__":
  cli.run(main)
