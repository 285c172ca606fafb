"""One writer per workdir: the lock, families' identity, stop means stop (in-process).

The end-to-end cases (two real programs on one workdir, damaged workdirs left
byte-identical) are in test_bad_inputs.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from si_jax.config import base_config
from si_jax.engine import experiment, lifecycle, records, train
from si_jax.engine import sweep as sweep_lib
from si_jax.engine.workdir_lock import WorkdirBusy, WorkdirLock, lock_path

HOLD = """
import sys, time
from si_jax.engine.workdir_lock import WorkdirLock
lock = WorkdirLock(sys.argv[1], "run").acquire()
print("held", flush=True)
time.sleep(120)
"""


def _holder(workdir) -> subprocess.Popen:
  """A separate process that holds ``workdir``'s lock until killed."""
  p = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], stdout=subprocess.PIPE,
                       text=True)
  assert p.stdout.readline().strip() == "held"
  return p


def test_second_writer_is_refused_naming_the_holder(tmp_path):
  holder = _holder(tmp_path)
  try:
    start = time.time()
    with pytest.raises(WorkdirBusy) as e:
      WorkdirLock(str(tmp_path)).acquire()
    assert time.time() - start < 2
    assert f"pid {holder.pid} on host {socket.gethostname()}" in str(e.value)
  finally:
    holder.kill()
    holder.wait()


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
  holder = _holder(tmp_path)
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  assert os.path.exists(lock_path(str(tmp_path)))  # its file stays: SIGKILL ran no code
  with WorkdirLock(str(tmp_path)) as lock:
    assert lock.held
    assert f"pid {os.getpid()}" in open(lock_path(str(tmp_path))).read()
  assert not os.path.exists(lock_path(str(tmp_path)))  # a release removes the file


def test_two_locks_in_one_process_conflict_unless_reentrant(tmp_path):
  """A run's lock is not re-entrant (two runs in one process are two writers); a
  family's is (its program and ``run_family`` both take it)."""
  with WorkdirLock(str(tmp_path)):
    with pytest.raises(WorkdirBusy, match=f"pid {os.getpid()}"):
      WorkdirLock(str(tmp_path)).acquire()
  with experiment.family_lock(str(tmp_path)):
    with experiment.family_lock(str(tmp_path)) as inner:
      assert inner.held
    assert os.path.exists(lock_path(str(tmp_path)))  # the outer one still holds it
  assert not os.path.exists(lock_path(str(tmp_path)))


def _config(epochs: int = 2):
  config = base_config()
  config.model.width = 4
  config.data.name, config.data.source = "digits", "embedded"
  config.data.train_size, config.data.test_size = 128, 64
  config.train.epochs = epochs
  return config


def test_open_run_holds_the_workdir_until_closed(tmp_path):
  workdir = str(tmp_path / "run")
  run = lifecycle.open_run(_config(), workdir)
  try:
    assert sorted(os.listdir(workdir)) == [".lock", "checkpoints"]
    with pytest.raises(WorkdirBusy, match=f"pid {os.getpid()} on host"):
      train.train_and_evaluate(_config(), workdir, progress=False)
    assert sorted(os.listdir(workdir)) == [".lock", "checkpoints"]  # nothing written
    assert os.listdir(os.path.join(workdir, "checkpoints")) == []
  finally:
    run.close()
  assert os.listdir(workdir) == ["checkpoints"]


def _family(name: str = "lr_sweep", lrs=(0.1, 0.3), wd: float = 0.03, epochs: int = 2):
  config = experiment.experiment_config(_config(epochs), name)
  config.optim.wd = wd
  for lr in lrs:
    experiment.add_member(config, f"lr_{str(lr).replace('.', 'p')}", f"lr {lr}",
                          {"optim.lr": lr})
  return config


def _write_identity(config, workdir) -> None:
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, lifecycle.FAMILY_FILE), "w") as f:
    json.dump(experiment.family_identity(config), f)


def test_a_family_may_grow_by_appended_members_only():
  saved = experiment.family_identity(_family())  # lr_0p1, lr_0p3
  grown = experiment.family_identity(_family(lrs=(0.1, 0.3, 1.0)))
  assert experiment.identity_differences(saved, grown) == []  # a second stage, say
  shrunk = experiment.family_identity(_family(lrs=(0.1,)))
  assert experiment.identity_differences(saved, shrunk) == [
      "members: ['lr_0p1', 'lr_0p3'] -> ['lr_0p1']"]
  inserted = experiment.family_identity(_family(lrs=(0.1, 0.2, 0.3)))
  assert experiment.identity_differences(saved, inserted)


@pytest.mark.parametrize("other,expected", [
    (_family(wd=0.5), r"optim\.wd: 0\.03 -> 0\.5"),
    (_family(name="last_layer_norm"), r"experiment\.name: 'lr_sweep' -> 'last_layer_norm'"),
    (_family(lrs=(0.1, 0.2)), r"members: \['lr_0p1', 'lr_0p3'\] -> \['lr_0p1', 'lr_0p2'\]"),
])
def test_a_family_refuses_another_familys_folder(tmp_path, other, expected):
  workdir = str(tmp_path / "family")
  _write_identity(_family(), workdir)
  before = open(os.path.join(workdir, lifecycle.FAMILY_FILE)).read()
  with pytest.raises(ValueError, match=f"holds another family .*{expected}"):
    experiment.run_family(other, workdir, vmap="no", progress=False)
  assert open(os.path.join(workdir, lifecycle.FAMILY_FILE)).read() == before
  assert sorted(os.listdir(workdir)) == [lifecycle.FAMILY_FILE]


def test_identity_allows_more_epochs_and_other_checkpointing():
  saved = experiment.family_identity(_family())
  longer = _family(epochs=5)
  longer.checkpoint.every_epochs = 1
  assert experiment.identity_differences(saved, experiment.family_identity(longer)) == []
  changed = _family()
  experiment.add_member(changed, "extra", "extra", {"optim.lr": 0.5})
  changed.experiment.members.lr_0p3.overrides.optim.lr = 0.4
  diffs = experiment.identity_differences(saved, experiment.family_identity(changed))
  assert diffs == ["lr_0p3.optim.lr: 0.3 -> 0.4"]  # the appended member is growth


def test_a_family_refuses_a_single_runs_folder_and_members_of_another_config(tmp_path):
  workdir = tmp_path / "family"
  (workdir / "lr_0p1").mkdir(parents=True)
  (workdir / "metrics.jsonl").write_text("")
  with pytest.raises(ValueError, match=r"holds a single run \(metrics\.jsonl\), not a family"):
    experiment.run_family(_family(), str(workdir), vmap="no", progress=False)
  (workdir / "metrics.jsonl").unlink()
  # a member folder holding a run of another config (a family without family.json, as
  # written before it existed): refused before anything is trained, vmapped or not
  member = experiment.member_config(_family(wd=0.5), {"optim.lr": 0.1})
  (workdir / "lr_0p1" / "config.json").write_text(member.to_json_best_effort())
  for vmap in ("no", "yes"):
    with pytest.raises(ValueError, match=r"lr_0p1 holds a run with a different config "
                       r"\(optim\.wd: 0\.5 -> 0\.03\)"):
      experiment.run_family(_family(), str(workdir), vmap=vmap, progress=False)
  assert sorted(os.listdir(workdir)) == ["lr_0p1"]


def _signal_during(trainer):
  """A stand-in for a member's training that receives SIGTERM as a run's loop would: its
  own Preemption catches it, and the run stops unfinished."""
  calls = []

  def fake(*args, **kwargs):
    calls.append(args[1])
    family = args[2] if len(args) > 2 else os.path.dirname(args[1])  # vmapped, or a member
    for member in ("lr_0p1", "lr_0p3"):  # the family holds every member, not only this one
      assert os.path.exists(lock_path(os.path.join(family, member)))
    with lifecycle.Preemption() as inner:
      if len(calls) == 1:  # one signal (a second would mean "stop at once")
        os.kill(os.getpid(), signal.SIGTERM)
      assert inner.requested
    return {"preempted": True}
  return fake, calls


@pytest.mark.parametrize("vmap", ["no", "yes"])
def test_a_signal_stops_the_whole_family_without_a_summary(tmp_path, monkeypatch, vmap):
  fake, calls = _signal_during(None)
  target = (train, "train_and_evaluate") if vmap == "no" else (sweep_lib, "train_sweep")
  monkeypatch.setattr(*target, fake)
  workdir = tmp_path / "family"
  with pytest.raises(experiment.FamilyStopped, match=r"stopped by a signal: members lr_0p1, "
                     r"lr_0p3 are unfinished and no summary or figure was written; resume "
                     r"with: python "):
    experiment.run_family(_family(), str(workdir), vmap=vmap, progress=False)
  assert len(calls) == 1  # no member after the signal
  assert not (workdir / "summary.json").exists()
  assert sorted(os.listdir(workdir)) == [lifecycle.FAMILY_FILE, "lr_0p1", "lr_0p3"]
  assert os.listdir(workdir / "lr_0p1") == []  # every lock released


def test_a_signal_before_a_loop_starts_reaches_it():
  with lifecycle.Preemption() as outer:
    os.kill(os.getpid(), signal.SIGTERM)
    with lifecycle.Preemption() as inner:
      assert inner.requested and outer.requested


def test_unfinished_members_are_marked_in_the_summary_and_table(tmp_path):
  workdir = tmp_path / "family"
  for name, epochs in (("lr_0p1", 3), ("lr_0p3", 1)):
    (workdir / name).mkdir(parents=True)
    (workdir / name / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "step": 4 * e, "loss": 2.0, "train_loss": 2.0,
                    "test_error": 0.8, "weight_norm": 5.0}) + "\n" for e in range(1, epochs + 1)))
  summary = experiment.summarize(_family(epochs=3), str(workdir))
  assert [(m["epochs"], m["planned_epochs"], m["finished"]) for m in summary["members"]] == [
      (3, 3, True), (1, 3, False)]
  rows = experiment.table(summary).splitlines()
  assert "unfinished" not in rows[2]
  assert re.search(r"\| none: too few finite loss values .*\(unfinished: 1 of 3 epochs\) \|",
                   rows[3]), rows[3]
  assert "converged" not in rows[3]


def test_a_weight_norm_that_underflows_to_zero_stops_the_run(tmp_path):
  """model.init_scale=1e-30: every SI weight squared underflows in float32, rho = 0 and
  the effective LR lr / rho^2 is infinite; the loss itself stays finite (BN's epsilon),
  so only the norm check can stop it."""
  config = _config(epochs=1)
  config.model.init_scale = 1e-30
  with pytest.raises(records.TrainingDiverged,
                     match=r"the SI weight norm underflowed to 0 at step 0 "
                     r".*raise model\.init_scale"):
    train.train_and_evaluate(config, str(tmp_path / "run"), progress=False)
  good = {"loss": 2.3, "grad_norm": 1.0, "weight_norm": 1e-3}
  records.check_finite([good], 0, "record")  # tiny but not zero: goes on
  with pytest.raises(records.TrainingDiverged, match="at step 8"):
    records.check_finite([good, dict(good, weight_norm=0.0)], 7, "record")


def test_an_older_familys_folder_is_known_by_its_summary(tmp_path):
  """Families written before family.json: their summary.json names them."""
  workdir = tmp_path / "family"
  workdir.mkdir()
  (workdir / "summary.json").write_text(json.dumps(
      {"experiment": "lr_sweep", "members": [{"name": "lr_3"}, {"name": "lr_1"}]}))
  with pytest.raises(ValueError, match=r"holds another family \(its summary\.json: 'lr_sweep' "
                     r"with members \['lr_3', 'lr_1'\]; now 'lr_sweep' with \['lr_0p1', "
                     r"'lr_0p3'\]\)"):
    experiment.run_family(_family(), str(workdir), vmap="no", progress=False)
  with pytest.raises(ValueError, match=r"holds a family \(summary\.json\), not a run"):
    train.train_and_evaluate(_config(), str(workdir), progress=False)
  assert sorted(os.listdir(workdir)) == ["summary.json"]


def test_a_deleted_step_log_is_named_as_the_short_one(tmp_path):
  config = _config(epochs=2)
  config.train.log_every = "step"
  config.checkpoint.every_epochs = 1
  workdir = tmp_path / "run"
  train.train_and_evaluate(config, str(workdir), progress=False)
  (workdir / "steps.bin").unlink()
  config.train.epochs = 3
  with pytest.raises(lifecycle.LogMismatch, match=r"run/steps\.bin is shorter than every "
                     "checkpoint"):
    train.train_and_evaluate(config, str(workdir), progress=False)
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2"]  # none discarded


def test_checkpoints_are_kept_when_the_logs_cannot_be_opened(tmp_path, monkeypatch):
  """A resume from an older checkpoint (the log was cut after it) discards the newer
  ones only once the run's logs are open: a failure there (here a full disk) keeps
  them all."""
  config = _config(epochs=3)
  config.checkpoint.every_epochs, config.checkpoint.keep = 1, 3
  workdir = tmp_path / "run"
  train.train_and_evaluate(config, str(workdir), progress=False)
  lines = (workdir / "metrics.jsonl").read_text().splitlines(keepends=True)
  (workdir / "metrics.jsonl").write_text(lines[0])  # cut after epoch 1's checkpoint

  def full_disk(*args, **kwargs):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(lifecycle.logs, "MetricWriter", full_disk)
  with pytest.raises(OSError, match="No space left"):
    train.train_and_evaluate(config, str(workdir), progress=False)
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2", "3"]
  assert (workdir / "metrics.jsonl").read_text() == lines[0]


def test_a_vmapped_family_reruns_and_resumes(tmp_path):
  """A vmapped family's members record the family's data order (data.order_seed = the
  base seed); rerunning the same family must read that as the same config."""
  saved, now = (json.loads(_config().to_json_best_effort()) for _ in range(2))
  saved["seed"] = now["seed"] = 3
  saved["data"]["order_seed"], now["data"]["order_seed"] = None, 3
  assert lifecycle.config_differences(saved, now) == []
  now["data"]["order_seed"] = 4
  assert lifecycle.config_differences(saved, now) == ["data.order_seed: 3 -> 4"]
  now["data"]["order_seed"], now["seed"] = None, 5  # both unset: the seed alone differs
  assert lifecycle.config_differences(saved, now) == ["seed: 3 -> 5"]
  config = _family(epochs=1)
  experiment.add_member(config, "seed_1", "seed 1", {"seed": 1, "optim.lr": 0.1})
  workdir = str(tmp_path / "family")
  first = experiment.run_family(config, workdir, vmap="yes", progress=False)
  again = experiment.run_family(config, workdir, vmap="yes", progress=False)
  assert json.dumps(again) == json.dumps(first)  # (NaN-safe) the same summary, untrained
  assert [m["epochs"] for m in first["members"]] == [1, 1, 1]
  experiment.check_family(config, workdir)  # --figures_only knows a vmapped family too


def test_lock_and_log_files_are_never_followed_through_links(tmp_path):
  target = tmp_path / "important.txt"
  target.write_text("keep\n")
  run = tmp_path / "run"
  run.mkdir()
  (run / ".lock").symlink_to(target)
  with pytest.raises(ValueError, match=r"\.lock: .*must be a regular file"):
    WorkdirLock(str(run)).acquire()
  (run / ".lock").unlink()
  (run / "metrics.jsonl").symlink_to(target)
  with pytest.raises(ValueError, match=r"metrics\.jsonl is a symbolic link"):
    lifecycle.open_run(_config(), str(run))
  assert target.read_text() == "keep\n" and not (run / ".lock").exists()


@pytest.mark.parametrize("text,expected", [
    ("[1, 2]", "AttributeError"), ('{"experiment": "lr_sweep", "members": {"a": 1}}',
                                   "TypeError"),
    ('{"experiment": "lr_sweep", "members": [{"name": "lr_0p1"}]}', "KeyError")])
def test_a_damaged_family_json_is_one_error(tmp_path, text, expected):
  workdir = tmp_path / "family"
  workdir.mkdir()
  (workdir / "family.json").write_text(text)
  with pytest.raises(ValueError, match=rf"family\.json is not the JSON this program writes "
                     rf"\({expected}"):
    experiment.run_family(_family(), str(workdir), vmap="no", progress=False)
  assert sorted(os.listdir(workdir)) == ["family.json"]


def test_member_problems_are_found_before_anything_is_written(tmp_path):
  workdir = tmp_path / "family"
  workdir.mkdir()
  (workdir / "lr_0p3").write_text("a file")
  with pytest.raises(ValueError, match=r"lr_0p3 \(a member's folder\) is not a directory"):
    experiment.run_family(_family(), str(workdir), vmap="no", progress=False)
  assert sorted(os.listdir(workdir)) == ["lr_0p3"]
  config = _family()
  config.experiment.members.lr_0p1.overrides.seed = 1.5
  with pytest.raises(ValueError, match=r"member 'lr_0p1': .*seed"):
    experiment.run_family(config, str(tmp_path / "other"), vmap="no", progress=False)
  (workdir / "lr_0p3").unlink()
  (workdir / "lr_0p3").mkdir()
  (workdir / "lr_0p3" / "diverged.json").write_text("")
  with pytest.raises(ValueError, match=r"lr_0p3/diverged\.json is not the record"):
    lifecycle.diverged_message(str(workdir / "lr_0p3"))


def test_figures_only_checks_the_family_it_draws(tmp_path):
  workdir = tmp_path / "family"
  _write_identity(_family(), str(workdir))
  other = _family()
  other.experiment.members.lr_0p3.overrides.optim.lr = 0.5
  with pytest.raises(ValueError, match=r"holds another family \(lr_0p3\.optim\.lr: 0\.3 -> "
                     r"0\.5\)"):
    experiment.check_family(other, str(workdir))
  experiment.check_family(_family(), str(workdir))  # its own family passes


def test_a_diverging_member_of_a_sequential_family_is_marked_and_the_others_go_on(
    tmp_path, monkeypatch):
  """As in a vmapped family: the member's diverged.json says why, the next member
  trains, and a rerun skips the diverged one."""
  calls = []

  def fake(config, workdir, progress=True):
    calls.append(os.path.basename(workdir))
    if workdir.endswith("lr_0p1"):
      raise records.TrainingDiverged("non-finite ['loss'] at step 3")
    return {"preempted": False}
  monkeypatch.setattr(train, "train_and_evaluate", fake)
  monkeypatch.setattr(experiment, "summarize", lambda config, workdir: {"members": []})
  workdir = tmp_path / "family"
  experiment.run_family(_family(), str(workdir), vmap="no", progress=False)
  assert calls == ["lr_0p1", "lr_0p3"]
  assert lifecycle.diverged_message(str(workdir / "lr_0p1")) == "non-finite ['loss'] at step 3"
  experiment.run_family(_family(), str(workdir), vmap="no", progress=False)
  assert calls == ["lr_0p1", "lr_0p3", "lr_0p3"]  # the diverged member is not retrained


def test_all_processes_of_a_job_fail_together_when_one_cannot_start(tmp_path, monkeypatch):
  """Multi-process runs: one process finding the workdir in use (or wrong) must not
  leave the others waiting at a barrier; every process gets an error at the same point
  (``distributed.agree``) and releases its own lock."""
  from si_jax.engine import distributed
  monkeypatch.setattr(distributed, "agree", lambda flag: True)  # another process failed
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=r"another process of this job could not start"):
    lifecycle.open_run(_config(), str(workdir))
  assert os.listdir(workdir) == []  # this process's lock released, nothing written
