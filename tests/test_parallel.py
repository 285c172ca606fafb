"""Data parallelism: 1 and 4 (forced host) devices give the same trajectory, for one run
and for a vmapped family on a ('runs', 'data') mesh."""

import json
import os
import subprocess
import sys

import pytest

from si_jax import logs

import independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import functools, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + sys.argv[1]
import jax, numpy as np
from helpers import tiny_config
from si_jax.engine import sharding, state as state_lib, step, train
config = tiny_config(**{"train.epochs": 3, "train.log_every": "step",
                        "checkpoint.every_epochs": 0, "data.train_size": 256})
assert jax.local_device_count() == int(sys.argv[1])
train.train_and_evaluate(config, sys.argv[2], progress=False)
# the compiled step of the data-parallel run reduces across devices
if jax.local_device_count() > 1:
  ds = state_lib.load_dataset(config)
  ctx, state = state_lib.create_state(config, ds)
  fn = jax.jit(functools.partial(step.train_step, ctx, mesh=sharding.mesh_for(None)))
  lowered = fn.lower(state, ds.train_images, ds.train_labels, np.arange(128, dtype=np.int32))
  hlo = lowered.compile().as_text()
  print("ALL_REDUCE" if "all-reduce" in hlo else "NO_ALL_REDUCE")
"""



def _child_env() -> dict[str, str]:
  """The environment of a child script that imports tests/helpers.py (and si_jax first
  from this tree, as the mutation check needs)."""
  paths = [os.path.join(ROOT, "tests"), ROOT, os.environ.get("PYTHONPATH", "")]
  return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}

def read(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def run(devices, workdir):
  out = subprocess.run([sys.executable, "-c", SCRIPT, str(devices), workdir], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env=_child_env())
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def test_four_devices_match_one(tmp_path):
  run(1, str(tmp_path / "one"))
  stdout = run(4, str(tmp_path / "four"))
  assert "ALL_REDUCE" in stdout.split()  # the batch really is split across devices
  for steps in (True, False):
    one = logs.read_run(str(tmp_path / "one"), steps=steps)
    four = logs.read_run(str(tmp_path / "four"), steps=steps)
    assert len(one) == (6 if steps else 3)
    independent.assert_same_records(four, one)  # reductions in other orders


SWEEP = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + sys.argv[1]
import jax
from helpers import tiny_config
from si_jax.engine import sharding, sweep
config = tiny_config(**{"train.epochs": 2, "checkpoint.every_epochs": 0, "data.train_size": 256})
members = [{"optim.lr": 0.1}, {"optim.lr": 0.05, "optim.wd": 0.03}]
if jax.local_device_count() > 1:
  print("MESH", dict(sharding.mesh_for(len(members)).shape))
sweep.train_sweep(config, members, sys.argv[2], progress=False)
"""


def test_sweep_on_a_runs_by_data_mesh_matches_one_device(tmp_path):
  """2 members on 4 devices: a 2 x 2 ('runs', 'data') mesh gives the 1-device sweep."""
  results = {}
  for devices in (1, 4):
    workdir = str(tmp_path / f"d{devices}")
    out = subprocess.run([sys.executable, "-c", SWEEP, str(devices), workdir], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env=_child_env())
    assert out.returncode == 0, out.stderr[-3000:]
    if devices == 4:
      assert "MESH {'runs': 2, 'data': 2}" in out.stdout
    results[devices] = [read(os.path.join(workdir, f"member_{i}", "metrics.jsonl"))
                        for i in range(2)]
  for member_one, member_four in zip(results[1], results[4]):
    assert len(member_one) == 2
    independent.assert_same_records(member_four, member_one)
  # the members are different runs (so a mix-up of the runs axis would show)
  assert results[1][0][0]["loss"] != pytest.approx(results[1][1][0]["loss"], rel=1e-3)
