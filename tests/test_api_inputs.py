"""API inputs that cannot mean anything are refused with one clear line (or handled
right): paths given as strings, misspelt or empty groups, a function that is NaN where
groups are sought, malformed or zero-floored series for the phase detector, logs with
nothing finite to draw, and a run too short to tell converged from not."""

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import invariance, metrics, optim, si_groups
from si_jax.analysis import phases
from si_jax.models import ParamGroups
from si_jax.plots import plotting
from si_jax.programs import plot

PARAMS = {"dense": {"kernel": np.ones((3, 4), np.float32), "bias": np.zeros(4, np.float32)},
          "head": {"kernel": np.ones((4, 2), np.float32)}}
KERNEL = (("dense", "kernel"),)


def normed(p, x):
  """A Dense layer followed by a parameter-free layer norm: SI in dense/kernel."""
  h = x @ p["dense"]["kernel"]
  return (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-12)


X = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)


# 1. a path given as a string is refused, wherever groups or paths are taken


def test_string_path_split_into_characters_is_refused_by_the_optimizer():
  """A group built by hand around ``from_si_groups`` (which refuses strings itself)."""
  groups = ParamGroups({"g": (tuple("kernel"),)})  # ('k', 'e', 'r', 'n', 'e', 'l')
  with pytest.raises(ValueError, match=r"looks like the string 'kernel' split into "
                                       r"characters: pass each path as a tuple"):
    optim.make_optimizer(PARAMS, groups)


@pytest.mark.parametrize("groups", [{"g": ["dense/kernel"]}, {"g": ("dense", "kernel")},
                                    {"g": "dense/kernel"}])
def test_string_paths_are_refused_by_every_group_api(groups):
  """A path as 'a/b', a group given as one path, a group given as a string."""
  calls = [
      lambda: optim.make_optimizer(PARAMS, ParamGroups(groups)),
      lambda: metrics.si_metrics(PARAMS, PARAMS, PARAMS, groups, lr=0.1),
      lambda: metrics.dynamics_metrics(PARAMS, PARAMS, PARAMS, 0.1, groups),
      lambda: si_groups.verify_si_groups(normed, PARAMS, groups, X),
      lambda: invariance.invariance_residuals(lambda p: normed(p, X).sum(), PARAMS, groups),
      lambda: invariance.scale_paths(PARAMS, groups["g"], 2.0),
  ]
  for call in calls:
    with pytest.raises(TypeError, match="tuple of path components"):
      call()


# 2. a misspelt path is named, with the closest existing ones


def test_misspelt_group_path_is_named_with_the_closest():
  groups = ParamGroups({"dense": (("dense", "kernal"),)})
  with pytest.raises(ValueError, match=r"groups.si_groups\['dense'\]: path \('dense', 'kernal'\) "
                                       r"is not in the params \(closest: dense/kernel"):
    optim.make_optimizer(PARAMS, groups)
  optim.make_optimizer(PARAMS, ParamGroups({"dense": KERNEL}))  # spelt right: fine


def test_a_key_holding_a_slash_is_suggested_as_its_tuple():
  """flax's WeightNorm keeps its scale under ('wn_0', 'dense_0/kernel/scale'): a path split
  at every '/' must be answered with the real tuple, not a string that reads like it."""
  params = {"wn_0": {"dense_0/kernel/scale": np.ones(4, np.float32)}}
  with pytest.raises(ValueError, match=re.escape(
      "closest: ('wn_0', 'dense_0/kernel/scale')")):
    si_groups.check_in_params({"g": (("wn_0", "dense_0", "kernel", "scale"),)}, params)


# 3. empty groups and no groups


def test_verify_refuses_an_empty_group():
  with pytest.raises(ValueError, match=r"groups\['empty'\] is empty"):
    si_groups.verify_si_groups(normed, PARAMS, {"ok": KERNEL, "empty": ()}, X)


@pytest.mark.parametrize("groups, message", [({}, "si_groups is empty"),
                                             ({"g": ()}, r"si_groups\['g'\] is empty")])
def test_si_metrics_refuses_no_group_and_empty_groups(groups, message):
  with pytest.raises(ValueError, match=message):
    metrics.si_metrics(PARAMS, PARAMS, PARAMS, groups, lr=0.1)


def test_optimizer_refuses_no_group_unless_non_si_parameters_train():
  with pytest.raises(ValueError, match="groups.si_groups is empty"):
    optim.make_optimizer(PARAMS, ParamGroups({}, train_non_si=False))
  with pytest.raises(ValueError, match=r"groups.si_groups\['g'\] is empty"):
    optim.make_optimizer(PARAMS, ParamGroups({"g": ()}, train_non_si=True))
  optim.make_optimizer(PARAMS, ParamGroups({}, train_non_si=True))  # a plain optimizer


# 4. a function that is not finite where groups are sought


def test_find_si_groups_refuses_a_nan_function():
  nan_fn = lambda p, x: normed(p, x) * jnp.nan
  with pytest.raises(ValueError, match="fn returned 32 non-finite values .* of 32"):
    si_groups.find_si_groups(nan_fn, PARAMS, X[:, :3].reshape(8, 3))
  with pytest.raises(ValueError, match="non-finite"):
    si_groups.verify_si_groups(nan_fn, PARAMS, {"g": KERNEL}, X)


# 5. malformed series, and zero loss floors


def test_analyze_names_a_missing_loss():
  with pytest.raises(ValueError, match="no 'loss' nor 'train_loss'"):
    phases.analyze({})


def test_analyze_names_unequal_lengths():
  with pytest.raises(ValueError, match=r"series\['weight_norm'\] has 5 values but "
                                       r"series\['loss'\] has 10"):
    phases.analyze({"loss": np.ones(10), "weight_norm": np.ones(5)})


def zero_floor_run(onsets, n=200, width=2):
  """The loss falls from 2 to exactly 0, spikes to 1 for ``width`` samples at each onset and
  drops straight back to exactly 0; the norm shrinks 1% a sample and jumps 60% at each
  onset."""
  loss, rho, r = np.zeros(n), np.empty(n), 5.0
  loss[:10] = 2.0 * 0.3 ** np.arange(10)
  loss[10:] = 0.0
  for i in range(n):
    r = r * 1.6 if i in onsets else r * 0.99
    rho[i] = r
  for o in onsets:
    loss[o:o + width] = 1.0
  return {"loss": loss, "weight_norm": rho, "epoch": np.arange(1.0, n + 1)}


def test_spikes_from_exactly_zero_floors_are_all_found():
  onsets = [30, 60, 95, 130, 170]
  a = phases.analyze(zero_floor_run(onsets))
  assert a.onsets == onsets and a.periodic, a.reason
  assert a.destabilizations == [o + 1.0 for o in onsets]
  # the loss alone needs a spike held for 3 samples
  bare = phases.analyze({"loss": zero_floor_run(onsets, width=3)["loss"]},
                        reference_loss=np.log(10))
  assert bare.onsets == onsets
  assert phases.analyze({"loss": zero_floor_run(onsets)["loss"]}).onsets == []


def test_analyze_accepts_lists():
  s = zero_floor_run([30, 60, 95, 130, 170])
  lists = phases.analyze({k: v.tolist() for k, v in s.items()})
  assert lists.onsets == phases.analyze(s).onsets == [30, 60, 95, 130, 170]


# 6. a log with nothing finite to draw


def nan_run(tmp_path, finite_epochs=0, n=10):
  """A run directory whose metrics.jsonl is NaN from epoch ``finite_epochs`` + 1 on."""
  run = tmp_path / "nan_run"
  run.mkdir()
  with open(run / "metrics.jsonl", "w") as f:
    for e in range(1, n + 1):
      v = (lambda x: x) if e <= finite_epochs else (lambda x: float("nan"))
      f.write(json.dumps({"epoch": e, "step": 10 * e, "loss": v(1.0 / e),
                          "weight_norm": v(3.0 - 0.1 * e), "effective_lr": v(0.01 * e),
                          "effective_grad_norm": v(1.0 + e), "test_error": v(0.5)}) + "\n")
  (run / "config.json").write_text(json.dumps({"optim": {"lr": 0.1, "wd": 0.01},
                                               "data": {"name": "digits"}}))
  return run


@pytest.mark.parametrize("theory", [[], ["--theory"]])
def test_plot_of_an_all_nan_log_is_one_line_naming_the_run(tmp_path, capsys, theory):
  run = nan_run(tmp_path)
  with pytest.raises(SystemExit) as exit_:
    plot.main([str(run), "--out", str(tmp_path / "fig.png"), *theory])
  assert exit_.value.code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"error: {run}: no finite train loss to draw (all NaN, infinite or not "
                 "positive: did the run diverge?)"]
  assert not (tmp_path / "fig.png").exists()


def test_theory_bands_without_finite_gradients_name_the_run(tmp_path):
  run = nan_run(tmp_path, finite_epochs=4)  # the second half, where l and L come from, is NaN
  plotting.plot_runs([str(run)], str(tmp_path / "plain.png"))  # without bands: drawn
  with pytest.raises(ValueError, match=f"{run}: no finite effective gradient norm over the "
                                       "second half"):
    plotting.plot_runs([str(run)], str(tmp_path / "fig.png"), theory_overlay=True)
  with pytest.raises(ValueError, match="no finite effective_grad_norm over the last 50%"):
    plotting.gradient_bounds(phases.load_series(str(run)))


# 7. too few finite values is neither "converged" nor "never converged"


def test_too_few_finite_losses_say_so():
  loss = np.full(40, np.nan)
  loss[:2] = [3.1, 2.9]  # above chance (ln 10 = 2.3), then diverged
  a = phases.analyze({"loss": loss, "weight_norm": np.full(40, 2.0)},
                     reference_loss=np.log(10))
  assert a.reason.startswith("too few finite loss values (2 of 40; 11 needed")
  assert phases.outcome(a.reason) == "too few finite loss values"
  assert all(p.c == p.a == p.b == (0, 0) for p in a.periods)  # no phases claimed


def test_outcome_names_each_case():
  converging = phases.analyze({"loss": 2.0 * 0.8 ** np.arange(60)})
  assert phases.outcome(converging.reason) == "never destabilized"
  flat = phases.analyze({"loss": np.full(60, 3.0)}, reference_loss=np.log(10))
  assert phases.outcome(flat.reason) == "never converged"
  one = phases.analyze(zero_floor_run([30]))
  assert phases.outcome(one.reason) == "too few destabilizations"
  assert phases.outcome(phases.analyze(zero_floor_run([30, 60, 95])).reason) == "periodic"
  assert phases.outcome("no epoch logged yet") == "no epoch logged yet"


def test_from_si_groups_refuses_a_string_path():
  from si_jax import models
  with pytest.raises(TypeError, match="tuple of path components"):
    models.ParamGroups.from_si_groups({"g": ["kernel"]})
  groups = models.ParamGroups.from_si_groups({"g": [("dense", "kernel")]})
  assert groups.si_groups == {"g": (("dense", "kernel"),)}
