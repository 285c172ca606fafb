"""Experiment families: configs load, members resolve, runs are summarised and drawn;
warm starts from another run's checkpoint."""

import glob
import importlib.util
import json
import os

import numpy as np
import pytest

from si_jax import experiment, logs, plotting, train, validate
from test_train import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                  if not p.endswith("quickstart.py"))  # the quickstart has no variants


def load(path, arg):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("path", FAMILIES, ids=os.path.basename)
def test_every_config_has_a_cpu_and_a_paper_variant(path):
  name = os.path.basename(path)
  cpu = load(path, "cpu")
  paper = load(path, "")
  for config in (cpu, paper):
    runs = ([experiment.member_config(config, o) for _, _, o in experiment.member_overrides(config)]
            if "experiment" in config else [config])
    for run in runs:
      assert "experiment" not in run
      if run.data.name == "digits":
        validate.validate_config(run)  # the cpu scale needs no download
  if "experiment" in cpu:
    assert len(experiment.member_overrides(cpu)) >= 2
  assert paper.data.name in ("cifar10", "cifar100")
  assert cpu.data.name == ("cifar10" if name == "convnet_cifar10.py" else "digits")
  with pytest.raises(ValueError, match="variant"):
    load(path, "nonsense")


def test_lr_sweep_spans_the_paper_values():
  paper = load(os.path.join(ROOT, "configs", "lr_sweep.py"), "")
  lrs = [o["optim.lr"] for _, _, o in experiment.member_overrides(paper)]
  assert lrs == [1.0, 0.03, 0.01, 0.001] and paper.optim.wd == 0.001
  assert paper.model.width == 32 and paper.model.last_layer_norm == 10 and paper.train.epochs == 1001


def test_product_family_rescales_init_by_proposition_4():
  config = load(os.path.join(ROOT, "configs", "lr_wd_product.py"), "cpu")
  members = {n: o for n, _, o in experiment.member_overrides(config)}
  products = {round(o["optim.lr"] * o["optim.wd"], 12) for o in members.values()}
  assert products == {0.003}
  for name, o in members.items():
    if name.startswith("rescaled"):  # (c x0, c^2 eta, lam / c^2) with eta_ref = 0.1
      assert o["model.init_scale"] ** 2 == pytest.approx(o["optim.lr"] / 0.1)


def family(tmp_path, members):
  config = experiment.experiment_config(tiny_config(**{"checkpoint.every_epochs": 1}), "tiny")
  for name, label, overrides in members:
    experiment.add_member(config, name, label, overrides)
  return config, str(tmp_path / "family")


def test_family_trains_summarises_and_draws(tmp_path):
  config, workdir = family(tmp_path, [("plain", "lr 0.1", {}),
                                      ("momentum", "momentum", {"optim.momentum": 0.9})])
  summary = experiment.run_family(config, workdir, progress=False)
  assert [m["name"] for m in summary["members"]] == ["plain", "momentum"]
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f) == json.loads(json.dumps(summary))
  for m in summary["members"]:
    assert m["epochs"] == 2 and not m["periodic"] and m["reason"]
  # each member is an ordinary run: its own config, logs and checkpoints
  runs = {n: logs.read_run(os.path.join(workdir, n)) for n in ("plain", "momentum")}
  assert runs["plain"][-1]["loss"] != pytest.approx(runs["momentum"][-1]["loss"], rel=1e-3)
  with open(os.path.join(workdir, "momentum", "config.json")) as f:
    assert json.load(f)["optim"]["momentum"] == 0.9
  table = experiment.table(summary)
  assert table.count("\n") == 3 and "| momentum |" in table
  dirs = [os.path.join(workdir, n) for n in ("plain", "momentum")]
  for out in (plotting.plot_runs(dirs, os.path.join(workdir, "f.png")),
              plotting.plot_phases(dirs, os.path.join(workdir, "p.png"))):
    assert os.path.getsize(out) > 10_000 and os.path.exists(out[:-4] + ".pdf")
  # a second call trains nothing (finished members are a no-op) and gives the same summary
  mtime = os.path.getmtime(os.path.join(workdir, "plain", "metrics.jsonl"))
  again = experiment.run_family(config, workdir, progress=False)
  assert json.dumps(again) == json.dumps(summary)  # (NaN mean periods: compare as text)
  assert os.path.getmtime(os.path.join(workdir, "plain", "metrics.jsonl")) == mtime


def test_bad_members_are_named(tmp_path):
  config, workdir = family(tmp_path, [("a", "a", {"optim.learning_rate": 0.1})])
  with pytest.raises(ValueError, match="no field 'learning_rate' in optim"):
    experiment.run_family(config, workdir, progress=False)
  config, workdir = family(tmp_path, [("a", "a", {"optim.lr": -1.0})])
  with pytest.raises(ValueError, match="member 'a': optim.lr"):
    experiment.run_family(config, workdir, progress=False)
  config, workdir = family(tmp_path, [("a", "a", {"optim.momentum": 0.9})])
  with pytest.raises(ValueError, match="--vmap=yes"):
    experiment.run_family(config, workdir, vmap="yes", progress=False)
  with pytest.raises(ValueError, match="identifiers"):
    experiment.add_member(config, "lr 0.1", "x")


def test_warm_start_continues_a_gd_run_exactly(tmp_path):
  """GD from another run's checkpoint of step 2 (fresh optimizer: plain GD has no state)
  takes the same third step as the source run."""
  source = tiny_config(**{"train.mode": "gd", "train.epochs": 3, "checkpoint.every_epochs": 1,
                          "checkpoint.keep": 5})
  train.train_and_evaluate(source, str(tmp_path / "source"), progress=False)
  warm = tiny_config(**{"train.mode": "gd", "train.epochs": 1, "checkpoint.every_epochs": 0})
  warm.model.init_checkpoint, warm.model.init_epoch = str(tmp_path / "source"), 2
  train.train_and_evaluate(warm, str(tmp_path / "warm"), progress=False)
  want, got = logs.read_run(str(tmp_path / "source"))[2], logs.read_run(str(tmp_path / "warm"))[0]
  for k in ("loss", "weight_norm", "grad_norm", "effective_lr", "train_loss", "test_loss"):
    assert got[k] == pytest.approx(want[k], rel=1e-6), k
  warm.model.init_epoch = 7
  with pytest.raises(Exception, match="no checkpoint of epoch 7"):
    train.train_and_evaluate(warm, str(tmp_path / "warm2"), progress=False)
  other = tiny_config(**{"model.width": 8})
  other.model.init_checkpoint = str(tmp_path / "source")
  with pytest.raises(ValueError, match="another model"):
    train.create_task_and_state(other, train.load_dataset(other))


def test_fixed_norm_from_a_warm_start_keeps_that_norm(tmp_path):
  source = tiny_config(**{"train.epochs": 2, "checkpoint.every_epochs": 1, "checkpoint.keep": 5})
  train.train_and_evaluate(source, str(tmp_path / "source"), progress=False)
  rho_source = logs.read_run(str(tmp_path / "source"))[-1]["weight_norm"]
  fixed = tiny_config(**{"train.epochs": 2, "checkpoint.every_epochs": 0})
  fixed.model.init_checkpoint, fixed.optim.fix_si_norm = str(tmp_path / "source"), True
  train.train_and_evaluate(fixed, str(tmp_path / "fixed"), progress=False)
  rho = np.array([r["weight_norm"] for r in logs.read_run(str(tmp_path / "fixed"))])
  assert np.ptp(rho) < 1e-4 * rho[0]
  assert rho[0] == pytest.approx(rho_source, rel=0.05)  # the norm it started from


def test_vmapped_family_matches_sequential_members(tmp_path):
  """--vmap=yes trains lr/wd members as one program; each equals its sequential run."""
  members = [("a", "lr 0.1", {"optim.lr": 0.1}), ("b", "lr 0.05", {"optim.lr": 0.05, "optim.wd": 0.03})]
  config, workdir = family(tmp_path, members)
  config.data.order_seed = config.seed  # the sweep engine shares one data order
  vmapped = experiment.run_family(config, workdir + "_v", vmap="yes", progress=False)
  sequential = experiment.run_family(config, workdir + "_s", vmap="no", progress=False)
  assert [m["name"] for m in vmapped["members"]] == ["a", "b"]
  assert not os.path.exists(os.path.join(workdir + "_v", "a", "checkpoints"))  # the engine ran
  for name in ("a", "b"):
    got = logs.read_run(os.path.join(workdir + "_v", name))
    want = logs.read_run(os.path.join(workdir + "_s", name))
    for g, w in zip(got, want):
      for k in ("loss", "weight_norm", "effective_lr", "test_loss"):
        assert g[k] == pytest.approx(w[k], rel=1e-4), (name, k)
  assert len(sequential["members"]) == 2
