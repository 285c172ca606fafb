"""Fig. 13 (appendix D) on a run logged per step: the effective gradient norm and the
cosine distance of adjacent steps in phase B of one period, with the delta-jump bounds of
envelopes l(t) = c/(t - t0)^p <= g~_t <= L(t) = C/(t - t0) fitted on the first
``--fit_fraction`` of phase B and checked on the rest, and Eq. (8)'s prediction from the
measured g~_t (``si_jax.plots.period_steps.plot_delta_bounds``).

  python -m si_jax.main --config=configs/quickstart.py --workdir=runs/qs_steps \
      --config.train.log_every=step --config.train.epochs=120
  python experiments/fig13_delta_bounds.py runs/qs_steps --out=fig13.png [--period=1] \
      [--fit_fraction=0.5] [--lower_power=2 for GD]
"""

from absl import flags

from si_jax.plots import period_steps
from si_jax.programs import cli

_OUT = flags.DEFINE_string("out", None, "output image (png, pdf, svg)", required=True)
_PERIOD = flags.DEFINE_integer("period", 1, "which period (1 is the first after the warm-up)",
                               lower_bound=1)
_LOWER_POWER = flags.DEFINE_float("lower_power", 1.0,
                                  "exponent of the lower envelope: 1 for SGD, 2 for GD")
_FIT_FRACTION = flags.DEFINE_float("fit_fraction", 0.5, "the envelopes are fitted on this "
                                   "first part of phase B and checked on the rest",
                                   lower_bound=0.0, upper_bound=1.0)


def main(argv):
  period_steps.plot_delta_bounds(argv[1], _OUT.value, _PERIOD.value, _LOWER_POWER.value,
                                 _FIT_FRACTION.value)


if __name__ == "__main__":
  cli.run(main, positional=1)
