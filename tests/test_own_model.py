"""si_jax.engine.own_model_demo (experiments/own_model.py) with tiny settings: the groups
it finds are the hand-derived ones, its optimizer steps by Eq. (2) on them and freezes the
rest, and the metrics of its last step are recomputed here in float64 from that step's
weights."""

import os
import re

import jax
import numpy as np
import pytest

from si_jax.engine import own_model_demo
from si_jax.models import get_path
from si_jax.plots import plotting

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATHS = (own_model_demo.__file__, os.path.join(ROOT, "experiments", "own_model.py"))
LR, WD, EPOCHS = 0.3, 0.01, 3


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("own_model") / "own_model.png")
  res = own_model_demo.run(epochs=EPOCHS, width=8, depth=2, lr=LR, wd=WD)
  plotting.plot_series([res.series], out, ["pre-LN residual"], analyses=[res.analysis],
                       hyperparams=[(LR, WD)])  # as experiments/own_model.py draws it
  return res, out


def p(name):
  return tuple(name.split("/"))


def _flat(tree, group):
  return np.concatenate([np.asarray(get_path(tree, q), np.float64).ravel() for q in group])


def test_ten_library_lines_are_marked():
  marks = []
  for path in PATHS:  # 1-8 in the library's loop, 9-10 in the script
    with open(path) as f:
      marks += re.findall(r"# si_jax (\d+)/10", f.read())
  assert [int(k) for k in marks] == list(range(1, 11))


def test_groups_are_the_hand_derived_ones(result):
  res, _ = result
  # The stream is read only by layer norms: embed, and per block either fc_out or
  # (through the ReLU) fc_in with fc_out's bias: 2 x 2 minimal, overlapping groups.
  embed = (p("embed/kernel"), p("embed/bias"))
  choices = [[(p(f"block_{k}/fc_out/kernel"), p(f"block_{k}/fc_out/bias")),
              (p(f"block_{k}/fc_in/kernel"), p(f"block_{k}/fc_in/bias"),
               p(f"block_{k}/fc_out/bias"))] for k in range(2)]
  by_hand = {frozenset(embed + a + b) for a in choices[0] for b in choices[1]}
  assert {frozenset(g) for g in res.groups.values()} == by_hand


def test_optimizer_steps_si_tensors_by_eq2_and_freezes_the_rest(result):
  res, _ = result
  step = res.last_step
  si = {q for g in res.groups.values() for q in g}
  flat = lambda tree: {tuple(str(k.key) for k in kp): np.asarray(v, np.float64)
                       for kp, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
  x, g, new = (flat(step[k]) for k in ("params", "grads", "new_params"))
  init = flat(res.init_params)
  assert {q[0] for q in x if q not in si} == {"final_ln", "head"}
  for q in x:
    if q in si:  # Eq. (2): x - eta (grad + lambda x)
      np.testing.assert_allclose(new[q], x[q] - LR * (g[q] + WD * x[q]), rtol=1e-5, atol=1e-7)
    else:  # frozen for the whole run
      np.testing.assert_array_equal(new[q], init[q])


def test_last_step_metrics_recomputed_in_float64(result):
  res, _ = result
  step, m = res.last_step, res.last_step["metrics"]
  np.testing.assert_allclose(m["lr"], LR, rtol=1e-7)
  np.testing.assert_allclose(m["equilibrium_angular_update"], np.sqrt(2 * LR * WD), rtol=1e-6)
  union = tuple(dict.fromkeys(q for g in res.groups.values() for q in g))
  for prefix, group in [("", union)] + [(f"{k}/", v) for k, v in res.groups.items()]:
    x, x_next = _flat(step["params"], group), _flat(step["new_params"], group)
    rho, rho_next = np.linalg.norm(x), np.linalg.norm(x_next)
    cos = np.dot(x, x_next) / (rho * rho_next)
    np.testing.assert_allclose(m[prefix + "weight_norm"], rho, rtol=1e-6)
    np.testing.assert_allclose(m[prefix + "effective_lr"], LR / rho**2, rtol=1e-6)
    np.testing.assert_allclose(m[prefix + "effective_grad_norm"],
                               rho * np.linalg.norm(_flat(step["grads"], group)), rtol=1e-5)
    np.testing.assert_allclose(m[prefix + "angular_update"], np.arccos(cos), rtol=1e-5)
    # Eq. (2) with <grad, x_S> = 0 on an SI group: cos = (1 - eta lam) rho_t / rho_{t+1}
    # (measured to 3e-8). The union of overlapping groups is not SI (a branch would scale
    # twice): there <grad, x> / (|grad| |x|) = -1e-2 and the identity is off by 4e-4.
    identity = np.cos(m[prefix + "angular_update"]) / ((1 - LR * WD) * rho / rho_next) - 1
    if prefix:
      assert abs(identity) < 1e-6, (prefix, identity)
    else:
      assert abs(identity) > 1e-5, identity


def test_series_analysis_and_figure(result):
  res, out = result
  s = res.series
  assert len(s["epoch"]) == EPOCHS and all(np.isfinite(v).all() for v in s.values())
  assert s["loss"][-1] < 0.6 * s["loss"][0]  # it learns
  assert s["test_error"][-1] < 0.5
  # the in-memory series went through phases.analyze: 3 epochs are too few for a period
  assert not res.analysis.periodic and not res.analysis.onsets
  assert os.path.getsize(out) > 10_000 and os.path.exists(out[:-4] + ".pdf")


def test_angular_summary_over_the_second_half_without_destabilizations(result):
  res, _ = result
  window, summary = own_model_demo.angular_summary(res)
  assert window == slice(EPOCHS // 2, None)  # no onsets: the second half
  assert set(summary) == set(res.groups)
  for name, (mean, rms, elr_min, elr_max) in summary.items():
    s = res.series
    np.testing.assert_allclose(mean, s[name + "/angular_update"][1:].mean(), rtol=1e-12)
    np.testing.assert_allclose(
        rms, np.sqrt(np.mean(s[name + "/angular_update_rms"][1:] ** 2)), rtol=1e-12)
    assert 0 < mean <= rms  # the mean of a positive quantity is at most its RMS
    assert elr_min == s[name + "/effective_lr"][1:].min() <= elr_max


def test_angular_summary_spans_the_destabilizations():
  series = {"epoch": np.arange(1.0, 7.0), "g/angular_update": np.arange(6.0),
            "g/angular_update_rms": np.full(6, 2.0), "g/effective_lr": np.arange(6.0)[::-1]}
  res = own_model_demo.Result({"g": ()}, series, type("A", (), {"onsets": [1, 4]})(), {}, None, 0)
  window, summary = own_model_demo.angular_summary(res)
  assert window == slice(1, 4)  # epochs 2-4: from the first onset to before the last
  assert summary["g"] == (2.0, 2.0, 2.0, 4.0)
