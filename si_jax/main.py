"""Command-line entry point: train one run from an ml_collections config.

  python -m si_jax.main --config=configs/quickstart.py --workdir=/tmp/run \
      [--config.optim.lr=0.05 ...]

Writes WORKDIR/config.json, metrics.jsonl (steps.jsonl), figure.png, and prints
where the figure is and how many destabilizations the run showed.
"""

from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

from si_jax import phases, plotting, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for logs and figures.")
_PLOT = flags.DEFINE_bool("plot", True, "Draw the four-panel figure at the end.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  final = summary["final"]
  print(f"done in {summary['wall_time']:.0f}s: epoch {final['epoch']}, "
        f"train loss {final.get('train_loss', float('nan')):.4g}, "
        f"test error {final.get('test_error', float('nan')):.4f}")
  spikes = phases.find_destabilizations(phases.load_series(_WORKDIR.value))
  print(f"destabilizations (train-loss spikes) at epochs: {spikes or 'none'} ({len(spikes)})")
  print(f"metrics: {os.path.join(_WORKDIR.value, 'metrics.jsonl')}")
  if _PLOT.value:
    path = plotting.plot_runs([_WORKDIR.value], os.path.join(_WORKDIR.value, "figure.png"))
    print(f"figure: {path}")


if __name__ == "__main__":
  app.run(main)
