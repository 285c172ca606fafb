"""Checkpoints, exact resume, preemption, kills, bad checkpoints, config mismatches."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from si_jax import checkpoint, logs, train
from test_train import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))
import kill_resume  # noqa: E402


def strip(records):
  return [{k: v for k, v in r.items() if k != "wall_time"} for r in records]


def config(epochs=4, **kw):
  c = tiny_config(**{"train.epochs": epochs, "checkpoint.every_epochs": 1,
                     "train.log_every": "step", **kw})
  return c


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ref"))
  summary = train.train_and_evaluate(config(), workdir, progress=False)
  return workdir, summary


def test_resume_is_bit_identical(reference, tmp_path):
  ref_dir, ref = reference
  part = train.train_and_evaluate(config(epochs=2), str(tmp_path), progress=False)
  assert part["final"]["epoch"] == 2
  # a crash after the checkpoint but before more logs: stale lines must vanish
  with open(tmp_path / logs.METRICS_FILE, "a") as f:
    f.write(json.dumps({"epoch": 99, "stale": True}) + "\n")
  with open(tmp_path / logs.STEPS_FILE, "a") as f:
    f.write('{"step": 12345, "trunc')  # a half-written line
  resumed = train.train_and_evaluate(config(), str(tmp_path), progress=False)
  assert strip(logs.read_run(str(tmp_path))) == strip(logs.read_run(ref_dir))
  assert strip(logs.read_run(str(tmp_path), steps=True)) == strip(logs.read_run(ref_dir, steps=True))
  jax.tree.map(np.testing.assert_array_equal, resumed["state"].params, ref["state"].params)
  jax.tree.map(np.testing.assert_array_equal, resumed["state"].opt_state, ref["state"].opt_state)
  assert int(resumed["state"].step) == int(ref["state"].step)


def test_retention_keeps_latest_and_snapshots(tmp_path):
  train.train_and_evaluate(config(epochs=6, **{"checkpoint.keep": 2,
                                               "checkpoint.snapshot_epochs": (1, 3)}),
                           str(tmp_path), progress=False)
  assert checkpoint.Checkpointer(str(tmp_path)).epochs() == [1, 3, 5, 6]


def test_partial_checkpoint_write_is_ignored_and_corrupted_one_falls_back(reference, tmp_path):
  ref_dir, _ = reference
  work = tmp_path / "run"
  shutil.copytree(ref_dir, work)
  ckdir = work / "checkpoints"
  epochs = sorted(int(d) for d in os.listdir(ckdir) if d.isdigit())
  assert epochs[-2:] == [3, 4]
  # a kill during the write of epoch 5 leaves a temporary directory behind
  tmp = ckdir / "5.orbax-checkpoint-tmp-1234"
  shutil.copytree(ckdir / "4", tmp)
  # and the newest complete checkpoint (epoch 4) gets truncated files
  for root, _, files in os.walk(ckdir / "4" / "state"):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "r+b") as f:
        f.truncate(max(0, os.path.getsize(path) // 3))
  template = train.create_task_and_state(config(), _dataset())[1]
  restored_state, meta = checkpoint.Checkpointer(str(work)).restore_latest(template)
  assert meta["epoch"] == 3  # fell back to the previous good one
  # a resume from there still reproduces the reference exactly
  train.train_and_evaluate(config(), str(work), progress=False)
  assert strip(logs.read_run(str(work))) == strip(logs.read_run(ref_dir))


def test_no_readable_checkpoint_says_what_to_do(reference, tmp_path):
  ref_dir, _ = reference
  work = tmp_path / "run"
  shutil.copytree(ref_dir, work)
  for d in os.listdir(work / "checkpoints"):
    if d.isdigit():
      shutil.rmtree(work / "checkpoints" / d / "state")
  template = train.create_task_and_state(config(), _dataset())[1]
  with pytest.raises(checkpoint.CheckpointError, match="Delete that directory"):
    checkpoint.Checkpointer(str(work)).restore_latest(template)


def test_disk_full_during_save_fails_clearly_and_keeps_previous(tmp_path, monkeypatch):
  train.train_and_evaluate(config(epochs=2), str(tmp_path), progress=False)
  real_save = checkpoint.ocp.CheckpointManager.save

  def full_disk(self, step, *args, **kwargs):
    if step == 3:
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "save", full_disk)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"epoch 3 .*No space left.*checkpoint of epoch 2 is intact"):
    train.train_and_evaluate(config(epochs=4), str(tmp_path), progress=False)
  assert checkpoint.Checkpointer(str(tmp_path)).epochs() == [1, 2]


def test_different_config_is_refused_unless_allowed(tmp_path):
  train.train_and_evaluate(config(epochs=1), str(tmp_path), progress=False)
  other = config(epochs=2, **{"optim.lr": 0.05, "model.width": 8})
  with pytest.raises(train.ConfigMismatch, match=r"model.width: 4 -> 8; optim.lr: 0.1 -> 0.05"):
    train.train_and_evaluate(other, str(tmp_path), progress=False)
  lr_only = config(epochs=2, **{"optim.lr": 0.05})
  summary = train.train_and_evaluate(lr_only, str(tmp_path), progress=False,
                                     allow_config_change=True)
  from si_jax import optim
  assert float(optim.hyperparams(summary["state"].opt_state)["learning_rate"]) == pytest.approx(0.05)


def test_divergence_keeps_last_good_checkpoint(tmp_path):
  train.train_and_evaluate(config(epochs=1), str(tmp_path), progress=False)
  diverging = config(epochs=3, **{"optim.lr": 1e30})
  with pytest.raises(train.TrainingDiverged, match=r"last good checkpoint \(epoch 1\)"):
    train.train_and_evaluate(diverging, str(tmp_path), progress=False, allow_config_change=True)
  assert checkpoint.Checkpointer(str(tmp_path)).epochs() == [1]


SUBPROCESS_EPOCHS = 30


@pytest.fixture(scope="module")
def subprocess_reference(tmp_path_factory):
  """An uninterrupted run in its own process (kill_resume.command, 30 epochs)."""
  workdir = str(tmp_path_factory.mktemp("subprocess_ref"))
  out = kill_resume.run(workdir, SUBPROCESS_EPOCHS)
  assert out.returncode == 0, out.stderr[-2000:]
  return workdir


def test_sigterm_checkpoints_and_resume_matches(subprocess_reference, tmp_path):
  ref_work = subprocess_reference
  work = str(tmp_path / "run")
  cmd = kill_resume.command(work, SUBPROCESS_EPOCHS)
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(work, logs.METRICS_FILE)
  deadline = time.time() + 120
  while time.time() < deadline and not (os.path.exists(metrics) and os.path.getsize(metrics)):
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  assert "preempted after epoch" in err and "Resume with the same command" in err
  n_done = len(logs.read_run(work))
  assert 1 <= n_done < SUBPROCESS_EPOCHS
  resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"resuming {work} from the checkpoint of epoch {n_done}" in resumed.stderr
  assert strip(logs.read_run(work)) == strip(logs.read_run(ref_work))
  assert strip(logs.read_run(work, steps=True)) == strip(logs.read_run(ref_work, steps=True))


def test_sigkill_at_random_moments(subprocess_reference, tmp_path):
  """Two random SIGKILLs (experiments/kill_resume.py does 20): the same final run, also
  across processes (determinism)."""
  ref, killed = subprocess_reference, str(tmp_path / "killed")
  kills = kill_resume.kill_and_resume(killed, SUBPROCESS_EPOCHS, kills=2, seed=1, min_wait=1.0,
                                      max_wait=4.0)
  assert kills == 2
  assert kill_resume.records(ref, "metrics.jsonl") == kill_resume.records(killed, "metrics.jsonl")
  assert kill_resume.records(ref, "steps.jsonl") == kill_resume.records(killed, "steps.jsonl")
  a, b = kill_resume.final_params(ref), kill_resume.final_params(killed)
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _dataset():
  from si_jax import data as data_lib
  return data_lib.load_dataset("digits", "embedded", train_size=300, test_size=100)
