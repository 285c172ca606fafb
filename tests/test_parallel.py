"""Data parallelism: 1 and 4 (forced host) devices give the same trajectory."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import functools, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + sys.argv[1]
import jax, numpy as np
sys.path.insert(0, "tests")
from test_train import tiny_config
from si_jax import train
config = tiny_config(**{"train.epochs": 3, "train.log_every": "step",
                        "checkpoint.every_epochs": 0, "data.train_size": 256})
assert jax.local_device_count() == int(sys.argv[1])
train.train_and_evaluate(config, sys.argv[2], progress=False)
# the compiled step of the data-parallel run reduces across devices
if jax.local_device_count() > 1:
  ds = train.load_dataset(config)
  task, state = train.create_task_and_state(config, ds)
  step = jax.jit(functools.partial(train.train_step, task, mesh=train.data_mesh()))
  hlo = step.lower(state, ds.train_images, ds.train_labels, np.arange(128, dtype=np.int32)).compile().as_text()
  print("ALL_REDUCE" if "all-reduce" in hlo else "NO_ALL_REDUCE")
"""


def run(devices, workdir):
  out = subprocess.run([sys.executable, "-c", SCRIPT, str(devices), workdir], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(workdir, "steps.jsonl")) as f:
    return [json.loads(line) for line in f], out.stdout


def test_four_devices_match_one(tmp_path):
  one, _ = run(1, str(tmp_path / "one"))
  four, stdout = run(4, str(tmp_path / "four"))
  assert "ALL_REDUCE" in stdout.split()  # the batch really is split across devices
  assert len(one) == len(four) == 6
  for a, b in zip(one, four):
    for k in ("loss", "accuracy", "weight_norm", "grad_norm", "cosine_distance"):
      assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-9), (a["step"], k)


SWEEP = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + sys.argv[1]
import jax
sys.path.insert(0, "tests")
from test_train import tiny_config
from si_jax import sweep
config = tiny_config(**{"train.epochs": 2, "checkpoint.every_epochs": 0, "data.train_size": 256})
members = [{"optim.lr": 0.1}, {"optim.lr": 0.05, "optim.wd": 0.03}]
if jax.local_device_count() > 1:
  print("MESH", dict(sweep.sweep_mesh(len(members)).shape))
sweep.train_sweep(config, members, sys.argv[2], progress=False)
"""


def test_sweep_on_a_runs_by_data_mesh_matches_one_device(tmp_path):
  """2 members on 4 devices: a 2 x 2 ('runs', 'data') mesh gives the 1-device sweep."""
  results = {}
  for devices in (1, 4):
    workdir = str(tmp_path / f"d{devices}")
    out = subprocess.run([sys.executable, "-c", SWEEP, str(devices), workdir], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    if devices == 4:
      assert "MESH {'runs': 2, 'data': 2}" in out.stdout
    results[devices] = [[json.loads(line) for line in open(os.path.join(workdir, f"member_{i}",
                                                                        "metrics.jsonl"))]
                        for i in range(2)]
  for member_one, member_four in zip(results[1], results[4]):
    assert len(member_one) == len(member_four) == 2
    for a, b in zip(member_one, member_four):
      for k in ("loss", "weight_norm", "grad_norm", "cosine_distance", "train_loss", "test_loss"):
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-9), (a["epoch"], k)
  assert results[1][0][0]["loss"] != pytest.approx(results[1][1][0]["loss"], rel=1e-3)
