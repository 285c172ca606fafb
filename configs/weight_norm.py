"""Weight normalization instead of batch norm (appendix J, Li et al.): periodic or not?

  python experiments/run_family.py --config=configs/weight_norm.py:cpu --workdir=runs/weight_norm

The ConvNet with each filter's kernel divided by its norm and no feature normalization
(``model.norm='weight'``) at the quickstart's settings (lr 0.1, wd 0.03, 300 epochs); the
batch-norm run of the same settings is the lr sweep's lr 0.1 member. No claim of the paper
is judged: an observation. Variants: ``cpu``, '' (paper). Results: docs/reproduction.md.
"""

from si_jax.engine.experiment import add_member, experiment_config, scaled_base


def get_config(arg: str | None = None):
  config, _ = scaled_base(arg, allowed=("cpu", "paper"))
  config = experiment_config(config, "weight_norm")
  add_member(config, "weight_norm", "weight normalization", {"model.norm": "weight"})
  return config
