"""Fixed learning rate, different weight decays (appendix F.3, Fig. 18).

  python experiments/run_family.py --config=configs/wd_sweep.py:cpu --workdir=runs/wd_sweep

Expected: periodic behavior for a middle range of weight decays; a larger weight decay, shorter
periods. Variants: ``cpu``, ``cifar_cpu``, '' (paper), ``cifar100``, ``resnet``,
``resnet_cifar100``. Results: docs/reproduction.md.
"""

from si_jax.engine.experiment import add_member, experiment_config, scaled_base


def get_config(arg: str | None = None):
  config, scale = scaled_base(arg)
  config = experiment_config(config, "wd_sweep")
  wds = {"cpu": (0.3, 0.1, 0.03, 0.01, 0.003, 0.001),
         "cifar_cpu": (0.1, 0.03, 0.01, 0.001)}.get(scale, (0.01, 0.001, 0.0001, 0.00001))
  for wd in wds:
    add_member(config, "wd_" + f"{wd:g}".replace(".", "p").replace("-", "m"), f"wd {wd:g}",
               {"optim.wd": wd})
  return config
