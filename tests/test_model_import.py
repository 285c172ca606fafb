"""A model defined outside the package, named ``model.name = "own_models:OwnMLP"``, runs
through the trainer like a built-in one: groups found at a generic point, checkpoints,
exact resume, families, the phase analysis; bad names fail before training, in one line.

tests/own_models.py is importable as ``own_models`` (pytest puts tests/ on sys.path, as
for helpers.py); a program run needs its folder on PYTHONPATH.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from si_jax import logs, models, si_groups, validate
from si_jax.analysis import phases
from si_jax.engine import checkpoint, experiment, train
from si_jax.engine import state as state_lib

from helpers import paths, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "own_models:OwnMLP"
# OwnMLP's groups, by hand (its docstring): dense_0's kernel alone (train-mode BN removes
# its bias), dense_1's kernel and bias (LayerNorm), bn_0's scale and bias with dense_1's bias
BY_HAND = {"dense_0": paths("dense_0/kernel"), "dense_1": paths("dense_1/bias", "dense_1/kernel"),
           "bn_0+dense_1/bias": paths("bn_0/bias", "bn_0/scale", "dense_1/bias")}


def own_config(epochs=3, **kw):
  return tiny_config(**{"model.name": NAME, "model.width": 8, "model.train_non_si": True,
                        "optim.momentum": 0.9, "train.epochs": epochs,
                        "checkpoint.every_epochs": 1, **kw})


def initial_params(config):
  """The params a run of ``config`` starts from."""
  return state_lib.create_state(config, state_lib.load_dataset(config))[1].params


def strip(records):
  return [{k: v for k, v in r.items() if k != "wall_time"} for r in records]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("own_ref"))
  with pytest.warns(UserWarning, match="only because"):  # the zero biases at flax's init
    summary = train.train_and_evaluate(own_config(), workdir, progress=False)
  return workdir, summary


def test_groups_are_found_at_a_generic_point_and_non_si_params_train(reference):
  workdir, summary = reference
  ctx, state = summary["task"], summary["state"]
  assert dict(ctx.groups.si_groups) == BY_HAND
  assert ctx.groups.last_layer is None and ctx.groups.train_non_si
  records = logs.read_run(workdir)
  assert [r["epoch"] for r in records] == [1, 2, 3]
  assert {"dense_0/weight_norm", "dense_1/weight_norm", "bn_0+dense_1/bias/weight_norm"} <= set(
      records[-1])
  # the non-SI parameters (train_non_si=True) moved: the head, ln_1's bias from 0
  init = initial_params(own_config())
  assert np.linalg.norm(state.params["head"]["kernel"] - init["head"]["kernel"]) > 1e-2
  assert not np.any(init["ln_1"]["bias"]) and np.linalg.norm(state.params["ln_1"]["bias"]) > 1e-3
  # after training, every group found still holds; those a search at the init's zero
  # biases would report (bn_0's scale alone, dense_1's kernel alone) do not
  fn = lambda p, x: ctx.model.apply({"params": p, "batch_stats": state.batch_stats}, x,
                                    train=True, mutable=["batch_stats"])[0]
  x = state_lib.load_dataset(own_config()).train_images[:64]
  res = si_groups.verify_si_groups(fn, state.params, {
      **BY_HAND, "bn_0/scale": paths("bn_0/scale"), "dense_1/kernel": paths("dense_1/kernel")}, x)
  assert max(res[k] for k in BY_HAND) < 1e-4, res
  assert min(res["bn_0/scale"], res["dense_1/kernel"]) > 1e-2, res


def test_resume_equals_the_uninterrupted_run(reference, tmp_path, capsys):
  ref_dir, ref = reference
  part = train.train_and_evaluate(own_config(epochs=2), str(tmp_path), progress=False)
  assert part["final"]["epoch"] == 2 and checkpoint.saved_epochs(str(tmp_path)) == [1, 2]
  capsys.readouterr()
  resumed = train.train_and_evaluate(own_config(), str(tmp_path), progress=False)
  assert f"resuming {tmp_path} from the checkpoint of epoch 2" in capsys.readouterr().err
  assert strip(logs.read_run(str(tmp_path))) == strip(logs.read_run(ref_dir))
  a, b = resumed["state"], ref["state"]
  jax.tree.map(np.testing.assert_array_equal, (a.params, a.batch_stats, a.opt_state),
               (b.params, b.batch_stats, b.opt_state))


def test_phase_analysis_runs_on_its_workdir(reference):
  workdir, _ = reference
  analysis = phases.analyze_run(workdir)
  assert len(analysis.x) == 3 and analysis.reason  # 3 epochs hold no period: it says why


def test_frozen_non_si_params_stay_at_init(tmp_path):
  config = own_config(epochs=1, **{"model.train_non_si": False})
  params = train.train_and_evaluate(config, str(tmp_path), progress=False)["state"].params
  init = initial_params(config)
  for path in (("head", "kernel"), ("ln_1", "bias"), ("dense_0", "bias")):
    np.testing.assert_array_equal(models.get_path(params, path), models.get_path(init, path))
  assert not np.array_equal(params["dense_0"]["kernel"], init["dense_0"]["kernel"])


def test_a_family_of_wd_members(tmp_path):
  config = experiment.experiment_config(own_config(epochs=2), "own")
  for name, wd in (("wd_low", 0.01), ("wd_high", 0.03)):
    experiment.add_member(config, name, f"wd {wd}", {"optim.wd": wd})
  workdir = str(tmp_path / "family")
  summary = experiment.run_family(config, workdir, vmap="yes", progress=False)
  assert [m["epochs"] for m in summary["members"]] == [2, 2]
  for name in ("wd_low", "wd_high"):
    records = logs.read_run(os.path.join(workdir, name))
    assert "bn_0+dense_1/bias/weight_norm" in records[-1]
    assert checkpoint.saved_epochs(os.path.join(workdir, name)) == [1, 2]


@pytest.mark.parametrize("name, message", [
    ("no_such_module_xyz:Net", "model.name='no_such_module_xyz:Net': module "
     "'no_such_module_xyz' cannot be imported (ModuleNotFoundError: No module named "
     "'no_such_module_xyz')"),
    ("own_models:Missing", "model.name='own_models:Missing': module 'own_models' has no "
     "attribute 'Missing'"),
    ("own_models:NOT_A_MODEL", "model.name='own_models:NOT_A_MODEL': 'NOT_A_MODEL' is a int, "
     "not a linen Module class nor a factory"),
    ("own_models:", "model.name='own_models:': an imported model is named "
     "'package.module:attr'"),
])
def test_names_that_do_not_resolve_fail_validation(name, message):
  with pytest.raises(ValueError) as e:
    validate.validate_config(own_config(**{"model.name": name}))
  assert str(e.value) == message


@pytest.mark.parametrize("name, width, message", [
    ("own_models:PlainMLP", 4, "model.name='own_models:PlainMLP' does not build from "
     "{'num_classes': 10, 'width': 4}: TypeError: "),
    ("own_models:BrokenNet", None, "model.name='own_models:BrokenNet' does not build: "
     "initializing it on inputs of shape (1, 8, 8, 1) failed (ValueError: "),
    ("own_models:PlainMLP", None, "model.name='own_models:PlainMLP' has no scale-invariant "
     "parameter group (find_si_groups at a generic point found none)"),
])
def test_models_that_do_not_build_or_have_no_group_fail_in_one_line(tmp_path, name, width,
                                                                     message):
  config = own_config(**{"model.name": name, "model.width": width})
  validate.validate_config(config)  # the name resolves
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(config, str(tmp_path), progress=False)
  assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


def test_a_factory_without_train_argument_builds():
  model = models.create_model("own_models:layer_norm_net", num_classes=10)
  with pytest.warns(UserWarning, match="dense_0/kernel holds at the given params only because "
                                       "dense_0/bias is zero"):  # found once, at init
    variables = models.init_variables(model, jax.random.key(0), (8, 8, 1))
  groups = models.param_groups(model)
  assert dict(groups.si_groups) == {"dense_0": paths("dense_0/bias", "dense_0/kernel")}
  logits, updated = model.apply(variables, np.zeros((2, 8, 8, 1), np.float32), train=True,
                                mutable=["batch_stats"])
  assert logits.shape == (2, 10) and updated == {"batch_stats": {}}


def test_the_program_trains_it(tmp_path):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "tests"), ROOT])}
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-m", "si_jax.main", "--config=configs/quickstart.py",
         f"--workdir={workdir}", "--noplot", f"--config.model.name={NAME}",
         "--config.model.train_non_si=True", "--config.train.epochs=1",
         "--config.data.train_size=200", "--config.data.test_size=100"]
  done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  assert [r["epoch"] for r in logs.read_run(workdir)] == [1]
