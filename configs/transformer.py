"""A pre-LN transformer trained with SGD and weight decay: periodic behaviour or not?

  python -m si_jax.main --config=configs/transformer.py:cpu --workdir=/tmp/si_transformer
  python experiments/run_family.py --config=configs/transformer.py:wd_cpu --workdir=runs/tr_wd
  python experiments/run_family.py --config=configs/transformer.py:variants_cpu \
      --workdir=runs/transformer_variants

Modular addition (``si_jax.data.sequence``); the SI groups (embeddings, output projections)
at lr 1, the rest at 0.1; ``wd_cpu`` varies weight decay; ``variants_cpu`` has QK-norm
(``model.name='transformer_qknorm'``: the query and key projections as SI groups too) and
the SI norm held fixed. What the runs show: docs/reproduction.md.
"""

from si_jax.config import base_config
from si_jax.engine.experiment import add_member, experiment_config

VARIANTS = ("cpu", "wd_cpu", "variants_cpu")
WDS = (0.01, 0.003, 0.001)  # wd_cpu's members


def cpu_config():
  """One transformer run on modular addition, minutes on 2 CPU cores."""
  config = base_config()
  config.model.name = "transformer"
  config.model.width = 32
  config.model.norm = "layer"
  config.model.train_non_si = True
  config.data.name, config.data.source = "modadd31", "embedded"
  config.optim.lr = 1.0
  config.optim.non_si_lr = config.optim.lr / 10
  config.optim.wd = 0.003
  config.train.epochs = 300
  config.checkpoint.every_epochs = 50
  return config


def get_config(arg: str | None = None):
  if arg not in VARIANTS:
    raise ValueError(f"unknown config variant {arg!r}: configs/transformer.py has {VARIANTS}")
  config = cpu_config()
  if arg == "wd_cpu":
    config = experiment_config(config, "transformer_wd")
    for wd in WDS:
      add_member(config, "wd_" + f"{wd:g}".replace(".", "p"), f"wd {wd:g}", {"optim.wd": wd})
  elif arg == "variants_cpu":
    config = experiment_config(config, "transformer_variants")
    add_member(config, "qk_norm", "QK-norm", {"model.name": "transformer_qknorm"})
    add_member(config, "fixed_norm", "SI norm fixed", {"optim.fix_si_norm": True})
  return config
