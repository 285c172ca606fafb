"""Figs. 10 and 12: full-batch GD at several learning rates, and the fixed-norm ablation.

  python experiments/gd_fixed_norm.py --config=configs/gd.py:cpu --workdir=runs/gd

Stage 1 trains the config's members (regular GD; GD with the SI norm fixed at scaled
initializations). Stage 2 takes the reference run (configs/gd.py REFERENCE), picks its
last checkpoint at least ``--margin`` steps before its first destabilization, and
trains from there twice: with the SI weight norm fixed at its value there
(``fixed_before``) and regularly (``regular_before``, the control that should
destabilize). Then the summary table and figures, as experiments/run_family.py.
"""

import os

from absl import flags

from si_jax.analysis import phases
from si_jax.engine import checkpoint, experiment
from si_jax.programs import cli

_CONFIG = cli.config_flag("configs/gd.py[:variant]")
_WORKDIR = cli.workdir_flag()
_PROGRESS = cli.progress_flag()
cli.cpu_devices_flag()  # both applied by cli.run before training
cli.compilation_cache_flag()
_MARGIN = flags.DEFINE_integer("margin", 20, "steps between the checkpoint and the first "
                               "destabilization of the reference run")
_REFERENCE = flags.DEFINE_string("reference", "lr_0p5", "member whose pre-destabilization "
                                 "weights start stage 2")


def add_stage_two(config, workdir: str) -> str:
  ref_dir = os.path.join(workdir, _REFERENCE.value)
  analysis = phases.analyze_run(ref_dir)
  if not analysis.onsets:
    raise ValueError(f"{ref_dir}: {analysis.describe()}; stage 2 needs a destabilization")
  first = analysis.destabilizations[0]
  saved = [e for e in checkpoint.saved_epochs(ref_dir) if e <= first - _MARGIN.value]
  if not saved:
    raise ValueError(f"{ref_dir}: no checkpoint {_MARGIN.value} steps before the first "
                     f"destabilization (step {first:g}); lower checkpoint.every_epochs")
  start = saved[-1]
  rho = phases.load_series(ref_dir)["weight_norm"][start - 1]  # logged at its last step
  remaining = config.train.epochs - start
  common = {"model.init_checkpoint": os.path.abspath(ref_dir), "model.init_epoch": start,
            "train.epochs": remaining, "model.init_scale": 1.0}
  with config.unlocked():
    experiment.add_member(config, "fixed_before", f"norm fixed at step {start}",
                          {**common, "optim.fix_si_norm": True})
    experiment.add_member(config, "regular_before", f"regular from step {start}", common)
  return (f"reference {_REFERENCE.value}: first destabilization at step {first:g}; stage 2 "
          f"starts from its checkpoint of step {start} (SI norm {rho:.4g}) for "
          f"{remaining} steps")


def main(argv):
  del argv  # only flags
  config, workdir = _CONFIG.value, _WORKDIR.value
  experiment.run_family(config, workdir, vmap="no", progress=_PROGRESS.value)
  note = add_stage_two(config, workdir)
  print(note)
  summary = experiment.run_family(config, workdir, vmap="no", progress=_PROGRESS.value)
  cli.report_family(config, workdir, summary, note)


if __name__ == "__main__":
  cli.run(main)
