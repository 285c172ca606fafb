"""Checkpoints, exact resume, preemption, kills, bad checkpoints, config mismatches.

Every run here trains with momentum 0.9 and data augmentation, so a resume that lost
the momentum buffer, the step counter (the augmentation key is fold_in(rng, step)) or
the BN running statistics could not reproduce the uninterrupted run bit for bit.
"""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from si_jax import logs
from si_jax.engine import checkpoint, kill_resume, train

from helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STATEFUL = {"optim.momentum": 0.9, "data.augment": True}


def strip(records):
  return [{k: v for k, v in r.items() if k != "wall_time"} for r in records]


def config(epochs=4, **kw):
  return tiny_config(**{"train.epochs": epochs, "checkpoint.every_epochs": 1,
                        "data.train_size": 300,  # 128 + 128 + 44: a partial last batch
                        "train.log_every": "step", **STATEFUL, **kw})


def assert_same_run(workdir, ref_dir):
  """Both logs equal record for record (wall time aside), the newest checkpoints' weights
  and BN statistics bit for bit."""
  assert strip(logs.read_run(workdir)) == strip(logs.read_run(ref_dir))
  assert strip(logs.read_run(workdir, steps=True)) == strip(logs.read_run(ref_dir, steps=True))
  (pa, sa, ea), (pb, sb, eb) = checkpoint.load_weights(workdir), checkpoint.load_weights(ref_dir)
  assert ea == eb
  jax.tree.map(np.testing.assert_array_equal, (pa, sa), (pb, sb))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ref"))
  summary = train.train_and_evaluate(config(), workdir, progress=False)
  return workdir, summary


def test_resume_is_bit_identical(reference, tmp_path, capsys):
  ref_dir, ref = reference
  part = train.train_and_evaluate(config(epochs=2), str(tmp_path), progress=False)
  assert part["final"]["epoch"] == 2 and checkpoint.saved_epochs(str(tmp_path)) == [1, 2]
  # a crash after the checkpoint but before more logs: stale lines must vanish
  with open(tmp_path / logs.METRICS_FILE, "a") as f:
    f.write(json.dumps({"epoch": 99, "stale": True}) + "\n")
  with open(tmp_path / logs.STEPS_FILE, "a") as f:
    f.write('{"step": 12345, "trunc')  # a half-written line
  capsys.readouterr()
  resumed = train.train_and_evaluate(config(), str(tmp_path), progress=False)
  # 300 examples in batches of 128: 3 steps per epoch
  assert f"resuming {tmp_path} from the checkpoint of epoch 2 (step 6)" in capsys.readouterr().err
  assert_same_run(str(tmp_path), ref_dir)
  a, b = resumed["state"], ref["state"]  # the returned states too, momentum buffer included
  jax.tree.map(np.testing.assert_array_equal, (a.params, a.batch_stats, a.opt_state),
               (b.params, b.batch_stats, b.opt_state))
  assert int(a.step) == int(b.step) == 12


def test_a_restored_state_is_uncommitted_as_a_fresh_one(reference):
  # orbax restores committed arrays; jit would compile the resumed run's step again
  ref_dir, ref = reference
  template = ref["state"]
  ckpt = checkpoint.Checkpointer(ref_dir, every_epochs=1)
  try:
    state, meta = ckpt.restore_latest(template)
  finally:
    ckpt.close()
  assert meta["epoch"] == 4
  fresh = jax.tree.leaves(checkpoint._to_saveable(template))  # BN statistics, key data too
  restored = jax.tree.leaves(checkpoint._to_saveable(state))
  assert len(fresh) == len(restored) > 10
  assert [x.committed for x in restored] == [x.committed for x in fresh] == [False] * len(fresh)
  assert [x.aval for x in restored] == [x.aval for x in fresh]
  jax.tree.map(np.testing.assert_array_equal, restored, fresh)


def test_retention_keeps_latest_and_snapshots(tmp_path):
  train.train_and_evaluate(config(epochs=6, **{"checkpoint.keep": 2,
                                               "checkpoint.snapshot_epochs": (1, 3)}),
                           str(tmp_path), progress=False)
  assert checkpoint.saved_epochs(str(tmp_path)) == [1, 3, 5, 6]


def test_partial_checkpoint_write_is_ignored_and_corrupted_one_falls_back(reference, tmp_path,
                                                                          capsys):
  ref_dir, _ = reference
  work = tmp_path / "run"
  shutil.copytree(ref_dir, work)
  ckdir = work / "checkpoints"
  assert checkpoint.saved_epochs(str(work)) == [3, 4]
  # a kill during the write of epoch 5 leaves a temporary directory behind
  shutil.copytree(ckdir / "4", ckdir / "5.orbax-checkpoint-tmp-1234")
  # and the newest complete checkpoint (epoch 4) gets truncated files
  for root, _, files in os.walk(ckdir / "4" / "state"):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "r+b") as f:
        f.truncate(max(0, os.path.getsize(path) // 3))
  # 4 epochs are done, but only the checkpoint of epoch 3 is readable: the run redoes
  # epoch 4 from there and reproduces the reference exactly
  capsys.readouterr()
  train.train_and_evaluate(config(), str(work), progress=False)
  assert f"resuming {work} from the checkpoint of epoch 3" in capsys.readouterr().err
  assert_same_run(str(work), ref_dir)


def test_no_readable_checkpoint_says_what_to_do(reference, tmp_path):
  ref_dir, _ = reference
  work = tmp_path / "run"
  shutil.copytree(ref_dir, work)
  for d in os.listdir(work / "checkpoints"):
    if d.isdigit():
      shutil.rmtree(work / "checkpoints" / d / "state")
  with pytest.raises(checkpoint.CheckpointError, match="Delete that directory"):
    train.train_and_evaluate(config(), str(work), progress=False)


def test_disk_full_during_save_fails_clearly_and_keeps_previous(reference, tmp_path, monkeypatch):
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
  assert checkpoint.saved_epochs(str(tmp_path)) == [1, 2]
  # as the message says: rerunning the same command resumes and ends as the reference
  monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "save", real_save)
  train.train_and_evaluate(config(epochs=4), str(tmp_path), progress=False)
  assert_same_run(str(tmp_path), reference[0])


def test_different_config_is_refused_unless_allowed(tmp_path):
  train.train_and_evaluate(config(epochs=1), str(tmp_path), progress=False)
  other = config(epochs=2, **{"optim.lr": 0.05, "model.width": 8})
  with pytest.raises(ValueError, match=r"model.width: 4 -> 8; optim.lr: 0.1 -> 0.05"):
    train.train_and_evaluate(other, str(tmp_path), progress=False)
  lr_only = config(epochs=2, **{"optim.lr": 0.05})
  train.train_and_evaluate(lr_only, str(tmp_path), progress=False, allow_config_change=True)
  # the steps of epoch 2 were taken with the new lr: effective_lr = lr / rho^2 (logged)
  steps = logs.read_run(str(tmp_path), steps=True)
  assert [s["epoch"] for s in steps] == [0] * 3 + [1] * 3
  for s in steps:
    lr = 0.1 if s["epoch"] == 0 else 0.05
    assert s["effective_lr"] * s["weight_norm"] ** 2 == pytest.approx(lr, rel=1e-5)


def test_divergence_keeps_last_good_checkpoint(tmp_path):
  train.train_and_evaluate(config(epochs=1), str(tmp_path), progress=False)
  diverging = config(epochs=3, **{"optim.lr": 1e30})
  with pytest.raises(FloatingPointError, match=r"last good checkpoint \(epoch 1\)"):
    train.train_and_evaluate(diverging, str(tmp_path), progress=False, allow_config_change=True)
  assert checkpoint.saved_epochs(str(tmp_path)) == [1]
  assert [r["epoch"] for r in logs.read_run(str(tmp_path))] == [1]  # no diverged record


SUBPROCESS_EPOCHS = 30
CLI_STATEFUL = ("--config.optim.momentum=0.9", "--config.data.augment=True")


def command(workdir):
  """The quickstart CLI (512 examples, 4 steps an epoch, a checkpoint every epoch)."""
  return kill_resume.command(workdir, SUBPROCESS_EPOCHS, CLI_STATEFUL)


@pytest.fixture(scope="module")
def subprocess_reference(tmp_path_factory):
  """An uninterrupted run in its own process."""
  workdir = str(tmp_path_factory.mktemp("subprocess_ref"))
  out = subprocess.run(command(workdir), cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  return workdir


def test_sigterm_checkpoints_and_resume_matches(subprocess_reference, tmp_path):
  work = str(tmp_path / "run")
  proc = subprocess.Popen(command(work), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  metrics = os.path.join(work, logs.METRICS_FILE)
  deadline = time.time() + 300
  while time.time() < deadline and not (os.path.exists(metrics) and os.path.getsize(metrics)):
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  assert "preempted after epoch" in err and "Resume with the same command" in err
  n_done = len(logs.read_run(work))
  assert 1 <= n_done < SUBPROCESS_EPOCHS
  assert checkpoint.saved_epochs(work)[-1] == n_done
  resumed = subprocess.run(command(work), cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"resuming {work} from the checkpoint of epoch {n_done}" in resumed.stderr
  assert_same_run(work, subprocess_reference)


def _has_checkpoint(workdir) -> bool:
  ckdir = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
  return os.path.isdir(ckdir) and any(d.isdigit() for d in os.listdir(ckdir))


def _logged_epochs(workdir) -> int:
  path = os.path.join(workdir, logs.METRICS_FILE)
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return f.read().count("\n")


def kill_and_resume(workdir, rng: random.Random) -> tuple[list[bool], list[str]]:
  """Runs ``command(workdir)`` to completion with two SIGKILLs: the first at a uniform
  random time in [0.5, 4] s after the start (often before any checkpoint), the second
  at a random moment after a random number (2 .. 15) of epoch records (a step, a
  checkpoint write, between a checkpoint and its log line). Returns whether a
  checkpoint existed at each kill, and the stderr of every start."""
  had_checkpoint, stderrs = [], []
  for kill in (0, 1, None):
    proc = subprocess.Popen(command(workdir), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    if kill == 0:
      time.sleep(rng.uniform(0.5, 4.0))
    elif kill == 1:
      target = rng.randint(2, SUBPROCESS_EPOCHS // 2)
      while proc.poll() is None and _logged_epochs(workdir) < target and time.time() < deadline:
        time.sleep(0.01)
      time.sleep(rng.uniform(0.0, 0.2))
    if kill is not None and proc.poll() is None:
      had_checkpoint.append(_has_checkpoint(workdir))
      proc.kill()
    stderrs.append(proc.communicate(timeout=600)[1])
    if kill is None or proc.returncode == 0:
      assert proc.returncode == 0, stderrs[-1][-2000:]
  return had_checkpoint, stderrs


def test_sigkill_at_random_moments(subprocess_reference, tmp_path):
  """Two SIGKILLs (experiments/kill_resume.py does 20), at least one after a checkpoint
  was written: the resumed run ends exactly as the uninterrupted one, also across
  processes (determinism)."""
  killed = str(tmp_path / "killed")
  had_checkpoint, stderrs = kill_and_resume(killed, random.Random(1))
  assert len(had_checkpoint) == 2 and had_checkpoint[1]
  resumes = [e for e in stderrs[1:] if f"resuming {killed} from the checkpoint of epoch" in e]
  assert resumes, stderrs[-1][-2000:]
  assert_same_run(killed, subprocess_reference)


@pytest.mark.parametrize("every, snapshots, due", [
    (3, (5,), [3, 5, 6, 9, 10]),  # the interval, a snapshot and the last epoch (10)
    (0, (), [10]),                 # no interval: the last epoch only
    (4, (4, 7), [4, 7, 8, 10]),
])
def test_save_decision_is_orbaxs_policy(tmp_path, every, snapshots, due):
  ckpt = checkpoint.Checkpointer(str(tmp_path), 2, snapshots, every, final_epoch=10)
  assert [e for e in range(1, 11) if ckpt.due(e)] == due
  ckpt.close()


def _flip_one_byte(path) -> None:
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 1
  path.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_refused_before_orbax_reads_it(reference, tmp_path,
                                                               monkeypatch, capsys):
  """One flipped bit in the newest checkpoint's array data (its size unchanged): its list
  of files refuses it, orbax is never asked to read it (a failed orbax read leaves orbax's
  threads failing after it), and the run resumes from the one before."""
  ref_dir, _ = reference
  work = tmp_path / "run"
  shutil.copytree(ref_dir, work)
  data = sorted((p for p in (work / "checkpoints" / "4" / "state").rglob("*")
                 if p.is_file() and "ocdbt" in str(p.parent) and p.stat().st_size > 0),
                key=lambda p: -p.stat().st_size)
  _flip_one_byte(data[0])
  read = []
  real_restore = checkpoint.ocp.CheckpointManager.restore
  monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "restore",
                      lambda self, step, *a, **k: read.append(step) or real_restore(
                          self, step, *a, **k))
  train.train_and_evaluate(config(), str(work), progress=False)
  err = capsys.readouterr().err
  assert "4 is unreadable (OSError: [Errno 5] state/" in err and "other bytes than saved" in err
  assert 4 not in read and 3 in read
  assert_same_run(str(work), ref_dir)


def test_files_list_names_a_missing_or_resized_file(reference, tmp_path):
  ref_dir, _ = reference
  step = tmp_path / "4"
  shutil.copytree(os.path.join(ref_dir, "checkpoints", "4"), step)
  checkpoint._check_files(str(step))  # intact
  meta = next(p for p in step.rglob("*") if p.is_file() and p.parent.name == "meta")
  meta.write_bytes(meta.read_bytes() + b" ")
  with pytest.raises(OSError, match=r"meta/.* changed: (\d+) bytes, (\d+) when saved"):
    checkpoint._check_files(str(step))
  meta.unlink()
  with pytest.raises(OSError, match=r"meta/.* is missing"):
    checkpoint._check_files(str(step))
  (step / checkpoint.FILES).write_text("{")
  with pytest.raises(OSError, match="list of files is damaged"):
    checkpoint._check_files(str(step))


def test_load_weights_names_a_damaged_checkpoint(reference, tmp_path):
  """A warm start from a damaged checkpoint: one message naming it, the file and the
  epochs to choose from; a temporary list left beside the list is not a file of it."""
  ref_dir, _ = reference
  work = tmp_path / "run"
  shutil.copytree(ref_dir, work)
  step = work / "checkpoints" / "4"
  (step / (checkpoint.FILES + ".tmp")).write_text("{}")
  assert checkpoint.load_weights(str(work))[2] == 4
  _flip_one_byte(next(p for p in step.rglob("*") if p.is_file() and p.parent.name == "meta"))
  with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint .*/checkpoints/4 is damaged "
                     r"\(meta/\S+ changed: other bytes than saved\); choose another of \[3, 4\]"):
    checkpoint.load_weights(str(work))


@pytest.mark.parametrize("limit, free, expected", [
    (1000, 10**12, r"Errno 27\] the state needs \d+ bytes, over this process's file-size "
     r"limit of 1000"),
    (None, 1000, r"Errno 28\] the state needs \d+ bytes, 1000 are free"),
])
def test_a_save_without_room_fails_before_orbax_writes(tmp_path, monkeypatch, limit, free,
                                                       expected):
  """Below the state's bytes of file-size limit or free disk: the save fails with its
  reason before orbax starts (whose writer threads would fail after it), and nothing of
  the epoch is left."""
  train.train_and_evaluate(config(epochs=1), str(tmp_path), progress=False)
  infinite = checkpoint.resource.RLIM_INFINITY
  monkeypatch.setattr(checkpoint.resource, "getrlimit",
                      lambda _: (limit if limit is not None else infinite, infinite))
  monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                      lambda _: shutil._ntuple_diskusage(10**13, 10**13 - free, free))
  monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "save", lambda *a, **k: 1 / 0)
  with pytest.raises(checkpoint.CheckpointError, match=r"epoch 2 .*" + expected):
    train.train_and_evaluate(config(epochs=2), str(tmp_path), progress=False)
  assert checkpoint.saved_epochs(str(tmp_path)) == [1]
