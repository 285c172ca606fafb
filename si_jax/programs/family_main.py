"""Launches every member of an experiment family, analyses the periods, draws the figures.

  si-jax-family --config=configs/lr_sweep.py:cpu --workdir=runs/lr_sweep
  python experiments/run_family.py --config=configs/lr_sweep.py:cpu --workdir=runs/lr_sweep

Writes WORKDIR/<member>/ (single-run layout), WORKDIR/summary.json (phase analysis per
member), WORKDIR/summary.md (the table) and the figures WORKDIR/<family>.png/.pdf (the
four panels of Figs. 1-3 for all members), <family>_phases.png/.pdf (one panel per
member, phases A/B/C shaded) and, for lr-wd products, <family>_ranges.png (Fig. 16).
Rerunning resumes unfinished members and skips finished ones; --figures_only redraws.
With --config.model.conv_impl=patches a sweep runs as one vmapped program on a CPU too
(1.62x faster end to end than sequential runs; benchmarks/family_speed.py); with
--cpu_devices=N (N > 1) on a ('runs', 'data') mesh.
"""

from __future__ import annotations

import json
import os

from absl import flags

from si_jax.programs import cli
from si_jax.engine import experiment, lifecycle

_CONFIG = cli.config_flag()
_WORKDIR = cli.workdir_flag()
_VMAP = cli.vmap_flag()
_PROGRESS = cli.progress_flag()
cli.cpu_devices_flag()  # both applied by cli.run before training
cli.compilation_cache_flag()
_FIGURES_ONLY = flags.DEFINE_bool("figures_only", False, "only analyse and draw existing runs")


def main(argv: list[str]) -> None:
  del argv  # only flags
  config, workdir = _CONFIG.value, _WORKDIR.value
  if _FIGURES_ONLY.value and not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir} is not a directory: no family to draw")
  lifecycle.make_workdir(workdir)
  with experiment.family_lock(workdir):  # summary, table and figures by this writer only
    if _FIGURES_ONLY.value:
      summary = experiment.summarize(config, workdir)
      lifecycle.write_atomically(os.path.join(workdir, "summary.json"),
                                 json.dumps(summary, indent=1))
    else:
      summary = experiment.run_family(config, workdir, vmap=_VMAP.value,
                                      progress=_PROGRESS.value)
    cli.report_family(config, workdir, summary)


def run() -> None:
  """The ``si-jax-family`` console script."""
  cli.run(main)


if __name__ == "__main__":
  run()
