"""Launches every member of an experiment family, analyses the periods, draws the figures.

  si-jax-family --config=configs/lr_sweep.py:cpu --workdir=runs/lr_sweep

Writes WORKDIR/<member>/ (single-run layout), WORKDIR/summary.json and summary.md (the
members' periods), and the figures <family>.png/.pdf (Figs. 1-3's panels),
<family>_phases.png/.pdf and, for lr-wd products, <family>_ranges.png (Fig. 16).
Rerunning resumes unfinished members; --figures_only redraws; --vmap chooses whether
members run as one vmapped program.
"""

from __future__ import annotations

import json
import os

from absl import flags

from si_jax.engine import experiment, lifecycle
from si_jax.programs import cli

_CONFIG = cli.config_flag()
_WORKDIR = cli.workdir_flag()
_VMAP = cli.vmap_flag()
_PROGRESS = cli.progress_flag()
cli.cpu_devices_flag()  # both applied by cli.run before training
cli.compilation_cache_flag()
_FIGURES_ONLY = flags.DEFINE_bool("figures_only", False, "only analyse and draw existing runs")


def main(argv: list[str]) -> None:
  """Trains (or only draws, --figures_only) the family of --config in --workdir."""
  del argv  # only flags
  config, workdir = _CONFIG.value, _WORKDIR.value
  if _FIGURES_ONLY.value and not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir} is not a directory: no family to draw")
  lifecycle.make_workdir(workdir)
  with experiment.family_lock(workdir):  # summary, table and figures by this writer only
    if _FIGURES_ONLY.value:
      experiment.check_family(config, workdir)  # this family's folder, its members' runs
      summary = experiment.summarize(config, workdir)
      lifecycle.write_atomically(os.path.join(workdir, "summary.json"),
                                 json.dumps(summary, indent=1))
    else:
      summary = experiment.run_family(config, workdir, vmap=_VMAP.value,
                                      progress=_PROGRESS.value)
    with lifecycle.Preemption():  # a signal now lets the table and figures finish
      cli.report_family(config, workdir, summary)


def run() -> None:
  """The ``si-jax-family`` console script."""
  cli.run(main)


if __name__ == "__main__":
  run()
