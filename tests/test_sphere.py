"""Training on the sphere (``optim.sphere``) and the metrics read there, against numpy.

The released code (tipt0p/three_regimes_on_the_sphere) takes, for ``fix_elr``, the SGD
step with lr = ELR ||x_0||^2 and rescales the SI parameters back to ||x_0||; for
``fix_all_elr`` it first rescales every filter to the common norm r = ||x_0|| / sqrt(F)
(F filters in all), steps with lr = ELR ||x_0||^2 and rescales every filter back to r.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import metrics, models, optim
from si_jax.engine import train

from helpers import run_optimizer as run
from helpers import tiny_config

ELR = 0.05
SHAPES = {"conv": (3, 3, 2, 4), "dense": (5, 3), "head": (3, 2)}


def setup(seed=0):
  """Two SI tensors (a conv and a dense kernel) and a frozen non-SI one."""
  keys = jax.random.split(jax.random.key(seed), len(SHAPES))
  params = {name: {"kernel": jax.random.normal(k, shape)}
            for k, (name, shape) in zip(keys, SHAPES.items())}
  groups = models.ParamGroups({"conv": (("conv", "kernel"),), "dense": (("dense", "kernel"),)},
                              last_layer=None, train_non_si=False)
  return params, groups


def grads_seq(n, seed=1, scale=1.0):
  keys = jax.random.split(jax.random.key(seed), n)
  return [{name: {"kernel": scale * jax.random.normal(k, shape)} for name, shape in SHAPES.items()}
          for k in keys]


def np_filters(x):
  """[F_c] columns of one tensor: (-1, out) in float64."""
  return np.asarray(x, np.float64).reshape(-1, x.shape[-1])


def test_total_sphere_keeps_the_norm_over_many_steps():
  params, groups = setup()
  tx = optim.make_optimizer(params, groups, lr=ELR, wd=0.0, sphere="total")
  si = lambda p: [p["conv"]["kernel"], p["dense"]["kernel"]]
  rho0 = float(np.sqrt(optim.sq_norm(si(params))))
  path = run(tx, params, grads_seq(300, scale=3.0))
  norms = np.array([float(np.sqrt(optim.sq_norm(si(p)))) for p in path])
  np.testing.assert_allclose(norms, rho0, rtol=2e-6)
  assert not np.allclose(path[-1]["conv"]["kernel"], params["conv"]["kernel"], atol=0.1)
  np.testing.assert_array_equal(path[-1]["head"]["kernel"], params["head"]["kernel"])  # frozen


def test_per_filter_sphere_keeps_every_filter_norm_over_many_steps():
  params, groups = setup()
  start = optim.onto_filter_sphere(params, groups.si_mask(params))
  tx = optim.make_optimizer(start, groups, lr=ELR, wd=0.0, sphere="per_filter")
  path = run(tx, start, grads_seq(300, scale=3.0))
  r = np.sqrt(sum(np.sum(np.square(np.asarray(params[n]["kernel"], np.float64)))
                  for n in ("conv", "dense")) / (4 + 3))
  for name in ("conv", "dense"):
    np.testing.assert_allclose(np.linalg.norm(np_filters(start[name]["kernel"]), axis=0), r,
                               rtol=1e-6)
    norms = np.stack([np.linalg.norm(np_filters(p[name]["kernel"]), axis=0) for p in path])
    np.testing.assert_allclose(norms, r, rtol=2e-6)


def released_fix_elr(params, grads):
  """Released ``fix_elr`` in float64: lr = ELR rho_0^2; x <- rho_0 (x - lr g) / ||.||."""
  xs = {n: np.asarray(params[n]["kernel"], np.float64) for n in ("conv", "dense")}
  rho0 = np.sqrt(sum(np.sum(x**2) for x in xs.values()))
  lr, out = ELR * rho0**2, []
  for g in grads:
    xs = {n: x - lr * np.asarray(g[n]["kernel"], np.float64) for n, x in xs.items()}
    rho = np.sqrt(sum(np.sum(x**2) for x in xs.values()))
    xs = {n: x * rho0 / rho for n, x in xs.items()}
    out.append(dict(xs))
  return out


def released_fix_all_elr(params, grads):
  """Released ``fix_all_elr`` in float64 (filters = last axis here, dim 0 in PyTorch)."""
  xs = {n: np.asarray(params[n]["kernel"], np.float64) for n in ("conv", "dense")}
  total_sq = sum(np.sum(x**2) for x in xs.values())
  r = np.sqrt(total_sq / sum(x.shape[-1] for x in xs.values()))
  per_filter = lambda x: x * (r / np.linalg.norm(np_filters(x), axis=0))
  xs = {n: per_filter(x) for n, x in xs.items()}
  lr, out = ELR * total_sq, [dict(xs)]
  for g in grads:
    xs = {n: per_filter(x - lr * np.asarray(g[n]["kernel"], np.float64)) for n, x in xs.items()}
    out.append(dict(xs))
  return out


@pytest.mark.parametrize("sphere", ["total", "per_filter"])
def test_sphere_step_is_the_released_rule(sphere):
  params, groups = setup()
  grads = grads_seq(5)
  if sphere == "total":
    start, want = params, released_fix_elr(params, grads)
  else:
    start = optim.onto_filter_sphere(params, groups.si_mask(params))
    first, *want = released_fix_all_elr(params, grads)
    for n in ("conv", "dense"):
      np.testing.assert_allclose(start[n]["kernel"], first[n], rtol=1e-6, atol=1e-7)
  got = run(optim.make_optimizer(start, groups, lr=ELR, wd=0.0, sphere=sphere), start, grads)
  for g, w in zip(got, want):
    for n in ("conv", "dense"):
      np.testing.assert_allclose(g[n]["kernel"], w[n], rtol=2e-5, atol=2e-6, err_msg=n)


def test_sphere_is_vmappable_over_elr():
  params, groups = setup()
  grads = grads_seq(3)
  elrs = (0.01, 0.3)
  tx = optim.make_optimizer(params, groups, lr=elrs[0], wd=0.0, sphere="per_filter")
  states = [optim.with_hyperparams(tx.init(params), learning_rate=e) for e in elrs]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  ps = jax.tree.map(lambda x: jnp.stack([x, x]), params)
  update = jax.jit(jax.vmap(tx.update))
  for g in grads:
    gs = jax.tree.map(lambda x: jnp.stack([x, x]), g)
    updates, stacked = update(gs, stacked, ps)
    ps = jax.tree.map(jnp.add, ps, updates)
  for i, e in enumerate(elrs):
    one = run(optim.make_optimizer(params, groups, lr=e, wd=0.0, sphere="per_filter"), params,
              grads)[-1]
    np.testing.assert_allclose(ps["conv"]["kernel"][i], one["conv"]["kernel"], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("options, field", [
    ({"sphere": "ball"}, "optim.sphere"),
    ({"sphere": "total", "wd": 0.01}, "optim.wd"),
    ({"sphere": "total", "fix_si_norm": True}, "optim.sphere"),
    ({"sphere": "per_filter", "fixed_effective_lr": True}, "optim.sphere"),
])
def test_sphere_options_are_checked(options, field):
  params, groups = setup()
  with pytest.raises(ValueError, match=field):
    optim.make_optimizer(params, groups, **{"lr": ELR, "wd": 0.0, **options})


def test_distance_to_init_is_arccos_and_l2():
  params, _ = setup(0)
  other, _ = setup(1)
  paths = (("conv", "kernel"), ("dense", "kernel"))
  got = metrics.distance_to_init(other, params, paths)
  flat = lambda p: np.concatenate([np.ravel(np.asarray(p[n]["kernel"], np.float64))
                                   for n in ("conv", "dense")])
  a, b = flat(other), flat(params)
  angle = np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
  np.testing.assert_allclose(float(got["angle_to_init"]), angle, rtol=1e-5)
  np.testing.assert_allclose(float(got["distance_to_init"]), np.linalg.norm(a - b), rtol=1e-5)
  scaled = jax.tree.map(lambda x: 3.0 * x, params)  # the angle sees only the direction
  same = metrics.distance_to_init(scaled, params, paths)
  assert float(same["angle_to_init"]) < 1e-3
  np.testing.assert_allclose(float(same["distance_to_init"]), 2 * np.linalg.norm(b), rtol=1e-5)


def quadratic(seed=0):
  """f(x) = x_a^T A x_a / 2 + x_a^T B x_b + x_b^T C x_b / 2 over leaves a (5), b (3)."""
  rng = np.random.default_rng(seed)
  m = rng.standard_normal((8, 8))
  h = m @ m.T  # the Hessian, symmetric
  params = {"a": jnp.asarray(rng.standard_normal(5), jnp.float32),
            "b": jnp.asarray(rng.standard_normal(3), jnp.float32)}
  hj = jnp.asarray(h, jnp.float32)
  loss = lambda p: 0.5 * jnp.concatenate([p["a"], p["b"]]) @ hj @ jnp.concatenate([p["a"], p["b"]])
  return loss, params, h


def test_hessian_quadratic_forms_are_v_h_v_and_hutchinson_finds_the_trace():
  loss, params, h = quadratic()
  mask = {"a": True, "b": False}
  probes = metrics.rademacher_probes(jax.random.key(0), params, mask, 4000)
  assert set(np.unique(np.asarray(probes["a"]))) == {-1.0, 1.0}
  assert not np.any(np.asarray(probes["b"]))
  forms = np.asarray(metrics.hessian_quadratic_forms(loss, params, probes), np.float64)
  v = np.asarray(probes["a"], np.float64)
  np.testing.assert_allclose(forms, np.einsum("ni,ij,nj->n", v, h[:5, :5], v), rtol=1e-4)
  # Hutchinson: the mean is tr(A) within 4 standard errors
  assert abs(forms.mean() - np.trace(h[:5, :5])) < 4 * forms.std() / np.sqrt(len(forms))
  diagonal = lambda p: 0.5 * jnp.sum(jnp.arange(1.0, 6.0) * p["a"] ** 2) + jnp.sum(p["b"] ** 4)
  exact = metrics.hessian_quadratic_forms(diagonal, params, probes)
  np.testing.assert_allclose(np.asarray(exact), 15.0, rtol=1e-6)  # a diagonal H: exactly tr


def sphere_run(workdir, epochs):
  config = tiny_config(**{"optim.sphere": "per_filter", "optim.wd": 0.0, "optim.lr": 0.01,
                          "train.distance_to_init": True, "train.hessian_probes": 2,
                          "train.grad_pass_every": 1, "train.epochs": epochs})
  config.checkpoint.every_epochs = 1
  out = train.train_and_evaluate(config, str(workdir), progress=False)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return out, [{k: v for k, v in r.items() if k != "wall_time"} for r in records]


def test_a_per_filter_run_logs_fixed_norms_and_the_landscape_metrics_and_resumes(tmp_path):
  out, records = sphere_run(tmp_path / "straight", 2)
  assert len(records) == 2
  norms = [r["train_weight_norm"] for r in records]
  np.testing.assert_allclose(norms, norms[0], rtol=1e-5)
  np.testing.assert_allclose([r["effective_lr"] for r in records], 0.01, rtol=1e-5)
  angles = [r["angle_to_init"] for r in records]
  assert 0 < angles[0] < angles[-1] < np.pi / 2
  assert all(np.isfinite(r["train_hessian_trace"]) for r in records)
  for path, x in models.flatten_with_paths(out["state"].params):
    if path[-1] == "kernel" and path[0].startswith("conv"):
      col = np.linalg.norm(np_filters(x), axis=0)
      np.testing.assert_allclose(col, col[0], rtol=1e-5)
  # the optimizer state (x_0, the filter norms) is checkpointed: a resumed run is the same
  sphere_run(tmp_path / "resumed", 1)
  assert sphere_run(tmp_path / "resumed", 2)[1] == records
