"""si_jax.engine.kill_resume's comparison: identical runs compare equal in records and
weights, a run with another learning rate differs in all three."""

import numpy as np
import pytest

from si_jax.engine import kill_resume, train

from helpers import tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Two runs of one config and one with another learning rate (per-step logs)."""
  out = {}
  for name, lr in (("a", 0.1), ("b", 0.1), ("other_lr", 0.05)):
    workdir = str(tmp_path_factory.mktemp(name))
    config = tiny_config(**{"optim.lr": lr, "train.log_every": "step",
                            "checkpoint.every_epochs": 1})
    train.train_and_evaluate(config, workdir, progress=False)
    out[name] = workdir
  return out


def test_identical_runs_compare_equal(runs):
  same = kill_resume.compare(runs["a"], runs["b"])
  assert (same.same_epochs, same.same_steps, same.same_params) == (True, True, True)
  assert same.identical
  assert [r["epoch"] for r in kill_resume.records(runs["a"])] == [1, 2]
  assert all("wall_time" not in r for r in kill_resume.records(runs["a"], steps=True))


def test_another_learning_rate_differs_everywhere(runs):
  other = kill_resume.compare(runs["a"], runs["other_lr"])
  assert (other.same_epochs, other.same_steps, other.same_params) == (False, False, False)
  assert not other.identical


def test_final_params_are_the_newest_checkpoint_by_path(runs):
  params = kill_resume.final_params(runs["a"])
  kernels = [k for k in params if k.startswith("['params']") and k.endswith("['kernel']")]
  assert kernels and any(k.startswith("['batch_stats']") for k in params)
  assert all(isinstance(v, np.ndarray) and np.isfinite(v).all() for v in params.values())


def test_command_runs_the_quickstart_cli():
  cmd = kill_resume.command("/tmp/w", 7, ("--config.optim.momentum=0.9",))
  assert cmd[1:3] == ["-m", "si_jax.main"]
  assert "--workdir=/tmp/w" in cmd and "--config.train.epochs=7" in cmd
  assert cmd[-1] == "--config.optim.momentum=0.9"
