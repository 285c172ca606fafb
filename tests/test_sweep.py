"""A vmapped sweep member equals the same run trained alone."""

import pytest

from si_jax import logs, sweep, train
from test_train import tiny_config

MEMBERS = [{"optim.lr": 0.1, "optim.wd": 0.01},
           {"optim.lr": 0.05, "optim.wd": 0.03, "seed": 1},
           {"optim.lr": 0.1, "optim.wd": 0.01, "init_scale": 2.0, "model.last_layer_norm": 5.0}]
KEYS = ("loss", "weight_norm", "grad_norm", "effective_lr", "cosine_distance", "test_loss",
        "train_loss")


def test_members_match_single_runs(tmp_path):
  config = tiny_config(**{"train.epochs": 3, "checkpoint.every_epochs": 0})
  finals = sweep.train_sweep(config, MEMBERS, str(tmp_path / "sweep"), progress=False)
  assert len(finals) == 3
  for i, overrides in enumerate(MEMBERS):
    single_dir = str(tmp_path / f"single_{i}")
    train.train_and_evaluate(sweep.member_config(config, overrides), single_dir, progress=False)
    got = logs.read_run(str(tmp_path / "sweep" / f"member_{i}"))
    want = logs.read_run(single_dir)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
      for k in KEYS:
        assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-9), (i, g["epoch"], k)
  # member 2 starts at twice member 0's SI norm with 1/4 of its effective LR
  first = [logs.read_run(str(tmp_path / "sweep" / f"member_{i}"))[0] for i in (0, 2)]
  assert first[1]["effective_lr"] < 0.5 * first[0]["effective_lr"]


def test_bad_member_field():
  with pytest.raises(ValueError, match="sweep members may set only"):
    sweep.member_config(tiny_config(), {"optim.momentum": 0.9})
