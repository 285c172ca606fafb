"""The second mutation round: each test pins one number a plausible bug changes, against
an independent computation (a closed form, a hand loop, a second code path), not
against the module under test. tests/MUTATIONS.md lists the bug each one catches.

Runs are tiny (width 4, 300 digits, 2-3 epochs) and shared through module fixtures.
"""

import math
import os
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import config as config_lib
from si_jax import logs, models, si_groups
from si_jax.engine import batching, lifecycle, records, train
from si_jax.engine import state as state_lib

import independent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  """Width-4 ConvNet on 300/100 embedded digits, lr 0.1, wd 0.01, batches of 128 (3 steps
  an epoch, the last of 44 examples), no checkpoints, no TensorBoard."""
  config = config_lib.base_config()
  config.model.width = 4
  config.data.name, config.data.source = "digits", "embedded"
  config.data.train_size, config.data.test_size = 300, 100
  config.optim.lr, config.optim.wd = 0.1, 0.01
  config.train.epochs, config.train.tensorboard = 2, "off"
  config.checkpoint.every_epochs = 0
  config_lib.set_fields(config, overrides)
  return config


def cosine(t, total):
  """The cosine multiplier written out: (1 + cos(pi t / T)) / 2."""
  return (1 + math.cos(math.pi * t / total)) / 2


def si_norm(params) -> float:
  """rho over the ConvNet's SI tensors (every conv kernel: bias-free, followed by BN)."""
  return math.sqrt(sum(float(np.sum(np.square(np.asarray(v["kernel"], np.float64))))
                       for k, v in params.items() if k.startswith("conv_")))


# --- SI groups: the confirmation by finite rescaling, worst case over argument sets ----

W = np.array([0.6, 0.0, 0.8], np.float32)  # ||w|| = 1
V = np.array([0.5, -1.0], np.float32)
X_FLAT = np.array([0.0, 1.0, 1.0], np.float32)  # x[0] = 0: f(c w) = f(w) for every c
X_BUMP = np.array([1.0, 1.0, 1.0], np.float32)


def bump_fn(p, x):
  """f = (w / ||w||, x0 (||w||^2 - 1)^2 + <v, x[1:]>). At ||w|| = 1 the bump's derivative
  along c w is 4 c (c^2 - 1) ||w||^4 = 0: Euler's residual is 0 for every x, but
  f(c w) != f(w) for c != 1 where x0 != 0 (w is not SI there)."""
  sq = jnp.sum(p["w"] ** 2)
  return jnp.concatenate([p["w"] / jnp.sqrt(sq), (x[0] * (sq - 1) ** 2 + p["v"] @ x[1:])[None]])


def euler_fn(p, x):
  """f = (w / ||w||, x0 ||w||^2 + <v, x[1:]>): d/dc f(c w) at c = 1 is (0, 2 x0 ||w||^2)."""
  sq = jnp.sum(p["w"] ** 2)
  return jnp.concatenate([p["w"] / jnp.sqrt(sq), (x[0] * sq + p["v"] @ x[1:])[None]])


def bump_change(x, c):
  """||f(c w) - f(w)|| / ||f(w)|| of ``bump_fn`` by hand (||w|| = 1)."""
  other = float(V @ x[1:])  # f(w) = (w, <v, x[1:]>), ||w|| = 1
  return abs(float(x[0])) * (c * c - 1) ** 2 / math.sqrt(1 + other**2)


def test_si_confirmation_rescales_and_does_not_trust_euler_alone():
  params = {"w": W, "v": V}
  with pytest.warns(UserWarning, match="w is in no SI group but its Euler residual"):
    found, report = si_groups.find_si_groups(bump_fn, params, X_BUMP, return_report=True)
  assert found == {}
  euler, value, _ = report.rejected["w"]
  assert euler <= si_groups.DEFAULT_RTOL  # (E) holds: only the rescaling shows it
  worst = max(bump_change(X_BUMP, c) for c in si_groups.DEFAULT_SCALES)  # c = 2: 9 / sqrt(1.25)
  assert value == pytest.approx(worst, rel=1e-5)
  # verify_si_groups: the worst scale, not the best (c = 0.5 gives 0.5625 / sqrt(1.25))
  got = si_groups.verify_si_groups(bump_fn, params, {"w": [("w",)]}, X_BUMP)["w"]
  assert got == pytest.approx(worst, rel=1e-5)


@pytest.mark.parametrize("first, more", [(X_FLAT, X_BUMP), (X_BUMP, X_FLAT)])
def test_si_confirmation_takes_the_worst_argument_set(first, more):
  """w is SI on X_FLAT's inputs, not on X_BUMP's: a group must hold on every input."""
  params = {"w": W, "v": V}
  with pytest.warns(UserWarning, match="w is in no SI group"):
    found, report = si_groups.find_si_groups(bump_fn, params, first, more_args=[(more,)],
                                             return_report=True)
  assert "w" not in found
  worst = max(bump_change(x, c) for x in (first, more) for c in si_groups.DEFAULT_SCALES)
  assert report.rejected["w"][1] == pytest.approx(worst, rel=1e-5)
  got = si_groups.verify_si_groups(bump_fn, params, {"w": [("w",)]}, first, more_args=[(more,)])
  assert got["w"] == pytest.approx(worst, rel=1e-5)
  # Euler's residual, worst over the argument sets: 2 ||w||^2 / ||f|| where x0 = 1, else 0
  res = si_groups.verify_si_groups(euler_fn, params, {"w": [("w",)]}, first, more_args=[(more,)],
                                   with_euler=True)["w"]
  assert res["euler"] == pytest.approx(2 / math.sqrt(1 + (1 + float(V @ X_BUMP[1:])) ** 2),
                                       rel=1e-5)


# --- schedules: their length T in updates --------------------------------------------

@pytest.mark.parametrize("mode, drop_last, per_epoch", [
    ("sgd", False, 3),  # 300 = 128 + 128 + 44: the partial last batch is an update
    ("sgd", True, 2),   # the 44 dropped
    ("gd", False, 1),   # one full-batch step an epoch, whatever the batch size
])
def test_schedule_length_is_the_number_of_updates(mode, drop_last, per_epoch):
  config = tiny_config(**{"train.epochs": 5, "train.mode": mode, "train.drop_last": drop_last})
  assert state_lib.total_steps(config, 300) == 5 * per_epoch
  if mode == "sgd":  # the batches the loop takes, counted
    assert state_lib.total_steps(config, 300) == sum(
        len(batching.epoch_batches(config, e, 300)) for e in range(5))


@pytest.fixture(scope="module")
def sgd_cosine_run(tmp_path_factory):
  """SGD, cosine over T = 2 epochs x 3 steps = 6, per-step logs, the gradient pass, the
  invariance checks every step and the SI groups re-checked every epoch."""
  workdir = str(tmp_path_factory.mktemp("sgd_cosine"))
  config = tiny_config(**{"optim.schedule": "cosine", "train.log_every": "step",
                          "train.grad_pass_every": 1, "train.invariance_every": 1,
                          "train.check_groups_every": 1})
  out = train.train_and_evaluate(config, workdir, progress=False)
  return out, logs.read_run(workdir), logs.read_run(workdir, steps=True)


def test_sgd_schedule_spans_the_partial_last_batch(sgd_cosine_run):
  _, _, steps = sgd_cosine_run
  assert [s["step"] for s in steps] == list(range(6))
  for s in steps:  # step 5 (the last) at 0.067 eta, not at T = 4's 0.146 eta
    assert s["learning_rate"] == pytest.approx(0.1 * cosine(s["step"], 6), rel=1e-5, abs=1e-9)


def test_grad_pass_effective_lr_is_the_scheduled_lr(sgd_cosine_run):
  """train_effective_lr = eta s(t) / rho^2 at the epoch's weights, t the epoch's last step:
  rho from the next step's record (epoch 1) and from the final weights (epoch 2)."""
  out, epochs, steps = sgd_cosine_run
  rhos = [steps[3]["weight_norm"], si_norm(out["state"].params)]
  for record, rho, last in zip(epochs, rhos, (2, 5)):
    assert record["train_weight_norm"] == pytest.approx(rho, rel=1e-5)
    assert record["train_effective_lr"] == pytest.approx(0.1 * cosine(last, 6) / rho**2, rel=1e-5)


def test_epoch_record_holds_the_worst_invariance_residual(sgd_cosine_run):
  _, epochs, steps = sgd_cosine_run
  keys = [k for k in epochs[0] if k.startswith("invariance/")]
  assert "invariance/value" in keys
  spread = False
  for record in epochs:
    mine = [s for s in steps if s["epoch"] == record["epoch"] - 1]
    for k in keys:
      values = [s[k] for s in mine]
      assert record[k] == max(values), k
      spread |= max(values) > np.mean(values)
  assert spread  # the worst differs from the mean somewhere: the check has teeth


def test_epoch_summary_takes_the_worst_checked_residual():
  """Hand records: steps 0-5, checked every 2nd (unchecked steps carry zeros)."""
  values = [3e-6, 0.0, 9e-6, 0.0, 1e-6, 0.0]
  recs = [{"loss": float(i), "invariance/value": v, "step": 10 + i, "epoch": 3}
          for i, v in enumerate(values)]
  out = records.epoch_summary(recs, invariance_every=2)
  assert out["invariance/value"] == 9e-6
  assert out["loss"] == pytest.approx(2.5)


# --- full-batch GD: schedule, in-step accuracy and loss, the gradient pass's lr --------

ELR = 0.02  # the effective LR eta~ of the fixed-effective-LR GD run


@pytest.fixture(scope="module")
def gd_fixed_elr_run(tmp_path_factory):
  """Full-batch GD (ghost batches of 128, 128, 44), fixed effective LR eta~ with a cosine
  schedule over T = 3 epochs = 3 updates, the gradient pass every epoch."""
  workdir = str(tmp_path_factory.mktemp("gd_fixed_elr"))
  config = tiny_config(**{"train.mode": "gd", "train.micro_batch_size": 128,
                          "train.epochs": 3, "optim.schedule": "cosine", "optim.lr": ELR,
                          "optim.fixed_effective_lr": True, "train.log_every": "step",
                          "train.grad_pass_every": 1})
  train.train_and_evaluate(config, workdir, progress=False)
  return config, logs.read_run(workdir), logs.read_run(workdir, steps=True)


def test_gd_schedule_has_one_update_per_epoch(gd_fixed_elr_run):
  _, _, steps = gd_fixed_elr_run
  assert [s["step"] for s in steps] == [0, 1, 2]
  for s in steps:  # T = 3: 1, 0.75, 0.25 (T = 9 would give 1, 0.97, 0.88)
    assert s["learning_rate"] == pytest.approx(ELR * cosine(s["step"], 3), rel=1e-5)
    assert s["effective_lr"] == pytest.approx(ELR * cosine(s["step"], 3), rel=1e-5)


def test_grad_pass_effective_lr_under_fixed_effective_lr(gd_fixed_elr_run):
  """eta_t = eta~ s(t) rho^2, so train_effective_lr = eta~ s(t) exactly, whatever rho."""
  _, epochs, _ = gd_fixed_elr_run
  for e, record in enumerate(epochs):
    assert record["train_effective_lr"] == pytest.approx(ELR * cosine(e, 3), rel=1e-5)


def test_gd_step_loss_and_accuracy_are_means_over_the_whole_set(gd_fixed_elr_run):
  """Step 0's in-step loss and accuracy at the initial weights, by hand: the three ghost
  batches in train mode, per-example losses and hits summed, over N = 300."""
  config, _, steps = gd_fixed_elr_run
  dataset = state_lib.load_dataset(config)
  ctx, start = state_lib.create_state(config, dataset)
  x, y = dataset.train_images, dataset.train_labels
  losses, hits = [], []
  for lo in (0, 128, 256):
    logits, _ = ctx.model.apply({"params": start.params, "batch_stats": start.batch_stats},
                                x[lo:lo + 128], train=True, mutable=["batch_stats"])
    l, c = independent.loss_and_correct(logits, y[lo:lo + 128])
    losses.append(l)
    hits.append(c)
  assert steps[0]["loss"] == pytest.approx(np.concatenate(losses).mean(), rel=1e-5)
  assert steps[0]["accuracy"] == pytest.approx(np.concatenate(hits).mean(), abs=1e-6)
  assert 0.03 < steps[0]["accuracy"] < 0.5  # some hits and misses: a count / 300 shows


# --- the records' finite checks --------------------------------------------------------

def test_record_policy_goes_on_only_while_the_weights_are_finite(capsys):
  ok = {"loss": math.nan, "grad_norm": math.inf, "weight_norm": 2.0}
  records.check_finite([ok], 7, "record")
  assert "non-finite ['loss', 'grad_norm'] at step 7" in capsys.readouterr().err
  bad = {"loss": math.nan, "grad_norm": math.nan, "weight_norm": math.inf}
  with pytest.raises(records.TrainingDiverged, match="weight_norm'] at step 8"):
    records.check_finite([ok, bad], 7, "record")
  with pytest.raises(records.TrainingDiverged, match="at step 7"):  # 'stop' at the first
    records.check_finite([ok, bad], 7, "stop")


def test_record_policy_run_stops_when_the_weights_overflow(tmp_path):
  """lr 1e30: step 0 is finite, its update takes the weights to ~1e29, whose norm
  overflows float32 at step 1: on_nonfinite='record' stops there as 'stop' does."""
  config = tiny_config(**{"optim.lr": 1e30, "train.on_nonfinite": "record",
                          "train.log_every": "step", "train.epochs": 1})
  with pytest.raises(records.TrainingDiverged, match=r"non-finite .*weight_norm.* at step 1"):
    train.train_and_evaluate(config, str(tmp_path), progress=False)


# --- resume: the config's hyperparameters, and the guard on what may change ------------

def gd_resume_config(epochs, **fields):
  """Full-batch GD over 100 examples (one pass: exact statistics), a checkpoint each epoch."""
  return tiny_config(**{"train.mode": "gd", "data.train_size": 100, "train.epochs": epochs,
                        "checkpoint.every_epochs": 1, "train.grad_pass_every": 0, **fields})


def test_resume_with_config_change_applies_new_wd_and_momentum(tmp_path):
  """Epoch 1 at wd 0.01, momentum 0; resumed with wd 0.05, momentum 0.5: the second step is
  x2 = x1 - lr (0.5 m1 + grad L(x1) + 0.05 x1), with m1 = (x0 - x1) / lr (the first
  step's update, momentum 0), written out here."""
  workdir, lr = str(tmp_path), 0.1
  first = train.train_and_evaluate(gd_resume_config(1), workdir, progress=False)
  x1 = first["state"].params
  config = gd_resume_config(2, **{"optim.wd": 0.05, "optim.momentum": 0.5})
  dataset = state_lib.load_dataset(config)
  ctx, x0_state = state_lib.create_state(config, dataset)
  second = train.train_and_evaluate(config, workdir, progress=False, allow_config_change=True)
  _, grad, _ = independent.mean_loss_grad(ctx.model, x1, first["state"].batch_stats,
                                          dataset.train_images, dataset.train_labels)
  si = set(ctx.groups.si_paths)
  for path, p0 in models.flatten_with_paths(x0_state.params):
    got = np.asarray(models.get_path(second["state"].params, path), np.float64)
    p1 = np.asarray(models.get_path(x1, path), np.float64)
    if path in si:
      m1 = (np.asarray(p0, np.float64) - p1) / lr
      g1 = np.asarray(models.get_path(grad, path), np.float64)
      want = p1 - lr * (0.5 * m1 + g1 + 0.05 * p1)
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=str(path))
    else:  # frozen
      np.testing.assert_array_equal(got, p1)


def flat_base():
  return config_lib.flatten(config_lib.base_config().to_dict())


def test_config_guard_lets_only_the_epochs_and_checkpointing_change():
  """Every field of the base config changed one at a time: only train.epochs and the
  checkpoint.* fields may differ on resume; every other train.* field (the batches, the
  mode, the logging) is part of the run."""
  saved = config_lib.base_config().to_dict()
  resumable = {"train.epochs", "checkpoint.every_epochs", "checkpoint.keep",
               "checkpoint.snapshot_epochs"}
  changed = {"train.epochs": 5, "train.batch_size": 64, "train.mode": "gd",
             "train.drop_last": True, "train.micro_batch_size": 32, "train.log_every": "step",
             "train.eval_every": 2, "train.eval_batch_size": 10, "train.grad_pass_every": 3,
             "train.invariance_every": 4, "train.invariance_scale": 3.0,
             "train.on_nonfinite": "record", "train.tensorboard": "off",
             "checkpoint.every_epochs": 3, "checkpoint.keep": 7,
             "checkpoint.snapshot_epochs": (5,), "optim.lr": 0.5, "optim.wd": 0.5,
             "optim.momentum": 0.5, "seed": 3}
  for key, value in changed.items():
    current = config_lib.base_config()
    config_lib.set_fields(current, {key: value})
    diffs = lifecycle.config_differences(saved, current.to_dict())
    assert [d.split(":")[0] for d in diffs] == ([] if key in resumable else [key]), key


def test_config_guard_reads_a_missing_field_as_its_default(tmp_path):
  """A config.json written before a field existed resumes (the field counts as its
  default); with that field set otherwise, or another one changed, it does not."""
  saved = config_lib.base_config().to_dict()
  del saved["optim"]["non_si_lr"], saved["train"]["grad_pass_every"]
  assert lifecycle.config_differences(saved, config_lib.base_config().to_dict()) == []
  current = config_lib.base_config()
  current.train.grad_pass_every = 5
  assert lifecycle.config_differences(saved, current.to_dict()) == [
      "train.grad_pass_every: -1 -> 5"]
  # the same guard on a workdir's config.json
  lifecycle.write_atomically(os.path.join(str(tmp_path), lifecycle.CONFIG_FILE),
                             config_lib.base_config().to_json_best_effort())
  other = config_lib.base_config()
  other.train.batch_size = 64
  with pytest.raises(lifecycle.ConfigMismatch, match=r"train.batch_size: 128 -> 64"):
    lifecycle.check_workdir_config(other, str(tmp_path), allow_config_change=False)
  lifecycle.check_workdir_config(other, str(tmp_path), allow_config_change=True)


# --- sharding: a family's ('runs', 'data') mesh -------------------------------------------

MESH_SCRIPT = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, numpy as np
from si_jax.engine import sharding
assert jax.local_device_count() == 4
for runs in range(1, 9):
  mesh = sharding.runs_mesh(runs)
  stacked = sharding.place_runs(np.arange(runs * 6.0).reshape(runs, 6), mesh)
  assert np.array_equal(np.asarray(stacked), np.arange(runs * 6.0).reshape(runs, 6))
  print("MESH", runs, mesh.shape["runs"], mesh.shape["data"],
        len({s.device for s in stacked.addressable_shards}))
"""


def test_runs_mesh_splits_any_family_over_four_devices():
  """R runs on 4 devices: gcd(4, R) run groups, each over 4 / gcd devices (3 runs: 1 x 4;
  6 runs: 2 x 2), and a stacked state of R runs placed on all 4."""
  out = subprocess.run([sys.executable, "-c", MESH_SCRIPT], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("MESH")]
  assert [[int(v) for v in row] for row in rows] == [
      [r, math.gcd(4, r), 4 // math.gcd(4, r), 4] for r in range(1, 9)]


# --- TensorBoard: two sessions in the same second -----------------------------------------

def test_two_event_logs_in_one_second_keep_both_files(tmp_path, monkeypatch):
  pytest.importorskip("tensorboardX")
  loader = pytest.importorskip("tensorboard.backend.event_processing.event_file_loader")
  from si_jax.logs import tensorboard_log
  now = time.time()
  monkeypatch.setattr(time, "time", lambda: now)  # both files named in the same second
  written = []
  for session in range(2):
    log = tensorboard_log.EventLog(str(tmp_path), {"optim.lr": 0.1}, None)
    record = {"step": 3 * (session + 1), "epoch": session + 1, "loss": 0.5 / (session + 1)}
    log.write_epoch(record)
    log.close()
    written.append(record)
  names = sorted(n for n in os.listdir(tmp_path)
                 if n.startswith(tensorboard_log.EVENT_FILE_PREFIX))
  assert len(names) == 2
  for name, record in zip(names, written):  # each session's record in its own file
    points = [(e.step, v.simple_value) for e in loader.LegacyEventFileLoader(
        str(tmp_path / name)).Load() for v in e.summary.value if v.tag == "epoch/loss"]
    assert points == [(record["step"], pytest.approx(record["loss"]))]


def test_groups_rechecked_every_epoch_hold(sgd_cosine_run):
  """The ConvNet's declared SI groups hold at each epoch's weights: BN epsilon's ~1e-5, not 1e-3."""
  _, epochs, _ = sgd_cosine_run
  changes = [r["si_group_change"] for r in epochs]
  assert len(changes) == 2 and all(0 <= c < 1e-4 for c in changes)
