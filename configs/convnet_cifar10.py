"""Scale-invariant ConvNet on CIFAR-10 with SGD and weight decay (Figs. 1-3, 17).

Paper scale (appendix B): width 32, last-layer norm 10, batch 128, no momentum, no
augmentation, lr 0.01, wd 0.001, 1001 epochs (the released Figure-2 runs). Periods
of a few hundred epochs appear after a warm-up (hours on one GPU).

  python -m si_jax.main --config=configs/convnet_cifar10.py --workdir=runs/convnet \
      --config.data.data_dir=DIR          # DIR holds cifar-10-batches-py/ or the .tar.gz

``:cpu`` shrinks it to run in minutes on 2 CPU cores: width 8 on the first 2,048
training images (2,000 test images), lr 0.1, wd 0.01, 150 epochs. Expected (what
si_jax.analysis.phases reports on the JPEG proxy of CIFAR-10, tests/data/ holds the log):
destabilizations at epochs 50, 59, 75, 93, 120 and 141, each within one epoch of a jump of
the weight norm (51, 60, 75, 94, 120, 142; the one at 50 is small: loss x4.5, norm +2.3%);
the train loss floors at ~0.03 between them. About 6.5 minutes on 2 quiet CPU cores
(2.5 s an epoch, evaluation and the thinned gradient pass included; 26 minutes measured
on a loaded machine). ``configs/*.py:cifar_cpu`` runs families of it for 120 epochs.

  python -m si_jax.main --config=configs/convnet_cifar10.py:cpu --workdir=runs/convnet_cpu \
      --config.data.data_dir=DIR
"""

from si_jax.config import base_config


def get_config(arg: str | None = None):
  config = base_config()
  config.data.name = "cifar10"
  config.data.source = "archive"
  config.model.width = 32
  config.optim.lr = 0.01
  config.optim.wd = 0.001
  config.train.epochs = 1001
  if arg == "cpu":
    config.model.width = 8
    config.data.train_size = 2048
    config.data.test_size = 2000
    config.optim.lr = 0.1
    config.optim.wd = 0.01
    config.train.epochs = 150
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; use '' or 'cpu'")
  return config
