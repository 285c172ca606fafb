"""Learning-rate schedules (appendix J): do they end or thin the periodic behavior?

  python experiments/run_family.py --config=configs/schedules.py:cpu --workdir=runs/schedules

The quickstart's run (lr 0.1, wd 0.03, 300 epochs) with the released code's schedules:
constant, cosine, linear (1 for the first quarter, then down to 1/10) and step (divided
by 10 at each quarter), ``si_jax.optim.lr_schedule``. Expected (appendix J): a schedule
hides the periodic behavior. Variants: ``cpu``, '' (paper). Results: docs/reproduction.md.
"""

from si_jax.engine.experiment import add_member, experiment_config, scaled_base

SCHEDULES = ("constant", "cosine", "linear", "step")


def get_config(arg: str | None = None):
  config, scale = scaled_base(arg, allowed=("cpu", "paper"))
  config = experiment_config(config, "schedules")
  if scale == "paper":
    config.optim.schedule_unit = "epoch"  # the released code steps its schedules per epoch
  for name in SCHEDULES:
    add_member(config, name, f"{name} schedule", {"optim.schedule": name})
  return config
