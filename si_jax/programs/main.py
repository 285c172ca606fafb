"""Command-line entry point: train one run from an ml_collections config.

  python -m si_jax.main --config=configs/quickstart.py --workdir=/tmp/run \
      [--config.optim.lr=0.05 ...]

Writes WORKDIR/config.json, metrics.jsonl (steps.bin), TensorBoard events, figure.png,
and prints where the figure is and how many destabilizations the run showed.
"""

from __future__ import annotations

import os

from absl import flags

from si_jax.analysis import phases
from si_jax.engine import train
from si_jax.plots import plotting
from si_jax.programs import cli

_CONFIG = cli.config_flag()
_WORKDIR = cli.workdir_flag()
cli.cpu_devices_flag()  # both applied by cli.run before main
cli.compilation_cache_flag()
cli.distributed_flags()
_PLOT = flags.DEFINE_bool("plot", True, "draw the four-panel figure at the end")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "resume a workdir even though its config differs")


def report(summary: dict, workdir: str, plot: bool) -> None:
  """Prints the run's final numbers and destabilizations; draws its figure."""
  final = summary["final"]
  print(f"done in {summary['wall_time']:.0f}s: epoch {final['epoch']}, "
        f"train loss {final.get('train_loss', float('nan')):.4g}, "
        f"test error {final.get('test_error', float('nan')):.4f}")
  analysis = phases.analyze_run(workdir)
  spikes = [int(e) for e in analysis.destabilizations]
  print(f"destabilizations (train-loss spikes) at epochs: {spikes or 'none'} ({len(spikes)})")
  print(analysis.describe().splitlines()[0])
  print(f"metrics: {os.path.join(workdir, 'metrics.jsonl')}")
  if plot:
    print(f"figure: {plotting.plot_runs([workdir], os.path.join(workdir, 'figure.png'))}")


def main(argv: list[str]) -> None:
  """Trains one run from --config in --workdir, then reports its destabilizations."""
  del argv  # only flags (cli.run checks)
  cli.join_cluster()  # after cli.run's JAX settings: joining starts the backend
  summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                     allow_config_change=_ALLOW_CHANGE.value)
  if not summary["preempted"]:
    report(summary, _WORKDIR.value, _PLOT.value)


def run() -> None:
  """The ``si-jax-train`` console script."""
  cli.run(main)


if __name__ == "__main__":
  run()
