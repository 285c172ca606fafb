"""Figs. 6/20: weight-space and functional similarity of the minima of different periods.

  python experiments/minima_similarity.py --config=configs/minima_similarity.py:cpu \
      --workdir=runs/minima

Trains the two runs of the config (seed 0 and an independent seed 1), finds their
periods (``si_jax.analysis.phases``) and loads the checkpoint at the end of phase A of each
period. Then: the cosine similarity of the SI weight vectors between all these
checkpoints, the test error of each, and the test error of two-member ensembles
(mean softmax) of minima of different periods of one run vs of the same period of the
two independent runs (``si_jax.engine.minima``, ``si_jax.analysis.minima``). Writes
WORKDIR/minima_similarity.png/.pdf and similarity.json.
"""

import os

from si_jax.analysis import minima as minima_analysis
from si_jax.engine import minima
from si_jax.plots import minima as minima_plots
from si_jax.programs import cli

_CONFIG = cli.config_flag("configs/minima_similarity.py[:variant]")
_WORKDIR = cli.workdir_flag()
_PROGRESS = cli.progress_flag()
cli.compilation_cache_flag()  # applied by cli.run before training


def main(argv):
  del argv  # only flags
  result, names = minima.minima_similarity(_CONFIG.value, _WORKDIR.value, _PROGRESS.value)
  out = minima_plots.draw(result, names, os.path.join(_WORKDIR.value, "minima_similarity.png"))
  print(minima_analysis.describe(result))
  print(f"figure: {out}")


if __name__ == "__main__":
  cli.run(main)
