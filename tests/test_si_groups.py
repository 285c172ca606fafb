"""find_si_groups / verify_si_groups against groups derived by hand.

Each expected group below is derived from the architecture, not from the code under
test: a tensor set S is SI when every path from it to the output passes a
normalization that sees all of S's contribution scaled by the same c (property (1a)).

Measured (this file's setups: width 4, BN eps 1e-5, LN eps 1e-6, PyTorch-style init):
  SI groups:  Euler residual 5e-7 (layer-norm nets) .. 3e-4 (ResNet's layer4_1/conv1),
              value residual (c in {0.5, 2}) 8e-7 .. 4e-4, value / non-SI baseline <= 2e-3
              (the baseline, a random perturbation of the same size, changes f by >= 0.18);
  non-groups: the ConvNet's classifier 1.0, the stem alone 0.64, a pre-LN stream without
              block_1's branch 0.33, dense_0's kernel without its bias 0.26 (value);
              the tensor closest to passing as SI, the ConvNet's classifier bias, has
              Euler residual 2.2e-2.
"""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from si_jax import invariance, optim, si_groups
from si_jax.models import ParamGroups, layers

from conftest import make, rng_images
from helpers import BIAS_INIT, LayerNormMLP, paths


def as_sets(groups):
  return {frozenset(paths) for paths in groups.values()}


def batch_norm_fn(model, variables):
  """Logits in train mode (batch statistics, the running ones updated and dropped)."""
  return lambda p, x: model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                                  train=True, mutable=["batch_stats"])[0]


def test_convnet_groups_are_the_declared_ones():
  model, v, g = make("convnet_si", width=4, input_shape=(8, 8, 1))
  fn = batch_norm_fn(model, v)
  x = rng_images(32, (8, 8, 1))
  found, report = si_groups.find_si_groups(fn, v["params"], x, return_report=True)
  # each conv is followed by a BN; the classifier (kernel, bias) writes the logits
  assert found == dict(g.si_groups) == {f"conv_{i}": paths(f"conv_{i}/kernel") for i in range(4)}
  assert max(report.value.values()) < 1e-3 and max(report.euler.values()) < 1e-3
  assert report.nearest_non_si[0] == ("classifier", "bias") and report.nearest_non_si[1] > 1e-2
  res = si_groups.verify_si_groups(
      fn, v["params"], {**found, "classifier": paths("classifier/kernel", "classifier/bias")}, x,
      with_euler=True)
  assert all(res[k]["value"] < 1e-3 and res[k]["euler"] < 1e-3 for k in found), res
  # logits -> 0.5 logits or 2 logits (the bias aside): a relative change ~0.5..1
  assert res["classifier"]["value"] > 0.3 and res["classifier"]["euler"] > 0.3


def test_shrunk_weights_need_the_larger_tolerance():
  # SI weights 10x below init: eps / var grows 100x, and the residuals with it
  # (1e-2 on 16x16 inputs, docs/design_notes.md); rtol 2e-2 finds the groups again.
  model, v, g = make("convnet_si", width=4, input_shape=(8, 8, 1))
  fn = batch_norm_fn(model, v)
  x = rng_images(32, (8, 8, 1))
  params = invariance.scale_paths(v["params"], g.si_paths, 0.1)
  with pytest.warns(UserWarning, match="may depend on the tolerance"):
    found = si_groups.find_si_groups(fn, params, x)
  assert set(found) < set(g.si_groups)
  with pytest.warns(UserWarning, match="classifier/bias is in no SI group"):
    found, report = si_groups.find_si_groups(fn, params, x, rtol=2e-2, return_report=True)
  assert found == dict(g.si_groups)
  assert max(report.value[k] / report.baseline[k] for k in found) < si_groups.DEFAULT_MARGIN


def test_resnet18_stream_groups_are_the_declared_ones():
  model, v, g = make("resnet18_si", width=4, input_shape=(8, 8, 3))
  fn = batch_norm_fn(model, v)
  x = rng_images(16, (8, 8, 3))
  found = si_groups.find_si_groups(fn, v["params"], x)
  # By hand: conv1 feeds norm2 (SI alone); stage s's residual stream is written by the
  # stem (s = 1) or layer{s}_0's shortcut conv (s > 1, reading a shortcut norm) and the
  # conv2 of both blocks, and read only by norms (norm1, shortcut_norm, final_norm).
  by_hand = {frozenset(paths(f"layer{s}_{b}/conv1/kernel")) for s in range(1, 5) for b in (0, 1)}
  for s in range(1, 5):
    writer = "stem/kernel" if s == 1 else f"layer{s}_0/shortcut_conv/kernel"
    by_hand.add(frozenset(paths(writer, f"layer{s}_0/conv2/kernel", f"layer{s}_1/conv2/kernel")))
  assert as_sets(found) == by_hand
  assert as_sets(found) == as_sets(g.si_groups), "the model declares other groups than it has"
  assert found["layer1_0/conv1"] == paths("layer1_0/conv1/kernel")
  assert set(found["layer1_0/conv2+layer1_1/conv2+stem"]) == set(g.si_groups["stage1_stream"])
  # each writer alone is not SI; jointly they are
  res = si_groups.verify_si_groups(
      fn, v["params"], {"stream": g.si_groups["stage1_stream"], "stem": paths("stem/kernel")}, x)
  assert res["stream"] < 1e-3 and res["stem"] > 1e-1, res


def init(module, x, seed=0):
  return module.init(jax.random.key(seed), x)["params"]


def test_layer_norm_mlp_groups_by_hand():
  x = rng_images(32, (12,))
  module = LayerNormMLP()
  params = init(module, x)
  found = si_groups.find_si_groups(module.apply, {"params": params}, x)
  # A layer norm sees its Dense's kernel and bias together: {dense_i/kernel, dense_i/bias}.
  # relu is positively homogeneous: scaling ln_0's scale and bias by c scales relu's output,
  # hence dense_1's kernel term, by c; with dense_1's bias also scaled, ln_1 removes c.
  assert found == {
      "params/dense_0": paths("params/dense_0/bias", "params/dense_0/kernel"),
      "params/dense_1": paths("params/dense_1/bias", "params/dense_1/kernel"),
      "params/dense_1/bias+params/ln_0": paths("params/dense_1/bias", "params/ln_0/bias",
                                               "params/ln_0/scale"),
  }
  more = [(rng_images(32, (12,), seed=1),)]  # a second batch: more rows, worst case of both
  assert si_groups.find_si_groups(module.apply, {"params": params}, x, more_args=more) == found
  res = si_groups.verify_si_groups(module.apply, {"params": params},
                                   {**found, "kernel_only": paths("params/dense_0/kernel")}, x)
  assert max(res[k] for k in found) < 1e-3 and res["kernel_only"] > 1e-2, res


class PreLNBlock(nn.Module):
  @nn.compact
  def __call__(self, h):
    a = nn.LayerNorm(use_scale=False, use_bias=False, name="ln")(h)
    a = nn.relu(nn.Dense(24, bias_init=BIAS_INIT, name="fc_in")(a))
    return h + nn.Dense(h.shape[-1], bias_init=BIAS_INIT, name="fc_out")(a)


class PreLNResidual(nn.Module):
  """embed -> 2 pre-LN residual blocks -> LN (affine) -> head."""

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(16, bias_init=BIAS_INIT, name="embed")(x)
    for k in range(2):
      h = PreLNBlock(name=f"block_{k}")(h)
    h = nn.LayerNorm(bias_init=BIAS_INIT, name="final_ln")(h)
    return nn.Dense(10, bias_init=BIAS_INIT, name="head")(h)


def test_pre_layer_norm_residual_stream_groups_by_hand():
  x = rng_images(32, (12,))
  module = PreLNResidual()
  params = init(module, x)
  found = si_groups.find_si_groups(lambda p, x: module.apply({"params": p}, x), params, x)
  # The stream h is read only by layer norms (each block's ln, final_ln), so everything
  # written into it must scale by the same c: embed's kernel and bias, and each block's
  # branch fc_out(relu(fc_in(.))) + bias. The branch scales by c with fc_out's kernel,
  # or (relu positively homogeneous) with fc_in's kernel and bias instead; fc_out's bias
  # always. Two blocks, two choices each: four minimal, overlapping groups.
  embed = ("embed/kernel", "embed/bias")
  choices = [[(f"block_{k}/fc_out/kernel", f"block_{k}/fc_out/bias"),
              (f"block_{k}/fc_in/kernel", f"block_{k}/fc_in/bias", f"block_{k}/fc_out/bias")]
             for k in range(2)]
  by_hand = {frozenset(paths(*embed, *a, *b)) for a in choices[0] for b in choices[1]}
  assert as_sets(found) == by_hand
  assert "block_0/fc_out+block_1/fc_out+embed" in found
  partial = paths(*embed, *choices[0][0])  # block_1's branch left unscaled
  res = si_groups.verify_si_groups(lambda p, x: module.apply({"params": p}, x), params,
                                   {**found, "partial": partial}, x, with_euler=True)
  assert all(res[k]["value"] < 1e-3 and res[k]["euler"] < 1e-3 for k in found), res
  assert res["partial"]["value"] > 1e-2 and res["partial"]["euler"] > 1e-2, res


class NNXNet(nnx.Module):
  """Linear -> LN -> relu, twice (layers in an nnx.List: int path elements), then a head."""

  def __init__(self, rngs):
    bias = nnx.initializers.normal(0.5)
    self.layers = nnx.List([nnx.Linear(12, 16, bias_init=bias, rngs=rngs),
                            nnx.Linear(16, 16, bias_init=bias, rngs=rngs)])
    self.norm = nnx.LayerNorm(16, use_scale=False, use_bias=False, rngs=rngs)
    self.head = nnx.Linear(16, 10, bias_init=bias, rngs=rngs)

  def __call__(self, x):
    for layer in self.layers:
      x = nnx.relu(self.norm(layer(x)))
    return self.head(x)


def test_nnx_state_and_pure_dict():
  graphdef, state = nnx.split(NNXNet(nnx.Rngs(0)))
  x = rng_images(32, (12,))
  by_hand = {"layers/0": paths("layers/0/bias", "layers/0/kernel"),
             "layers/1": paths("layers/1/bias", "layers/1/kernel")}
  fn = lambda s, x: nnx.merge(graphdef, s)(x)
  # num_probes >= the output size: every output coordinate is a probe (exact columns)
  assert si_groups.find_si_groups(fn, state, x, num_probes=10**6) == by_hand

  def fn_pure(d, x):
    s = nnx.clone(state)
    nnx.replace_by_pure_dict(s, d)
    return nnx.merge(graphdef, s)(x)

  pure = nnx.to_pure_dict(state)
  assert si_groups.find_si_groups(fn_pure, pure, x) == by_hand
  res = si_groups.verify_si_groups(fn, state, {"layer_0": ((("layers", 0, "kernel")),
                                                          ("layers", 0, "bias"))}, x)
  assert res["layer_0"] < 1e-3


class BatchNormDense(nn.Module):
  """Dense (bias) -> BN (no affine) -> relu -> Dense (zero bias) -> LN -> Dense head."""

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(16, bias_init=BIAS_INIT, name="dense_0")(x)
    x = nn.BatchNorm(use_running_average=False, use_scale=False, use_bias=False)(x)
    x = nn.Dense(16, name="dense_1")(nn.relu(x))
    x = nn.relu(nn.LayerNorm(use_scale=False, use_bias=False)(x))
    return nn.Dense(10, bias_init=BIAS_INIT, name="head")(x)


def test_zero_and_unused_tensors_are_excluded():
  x = rng_images(32, (12,))
  module = BatchNormDense()
  variables = module.init(jax.random.key(0), x)
  fn = lambda p, x: module.apply({**variables, "params": p}, x, mutable=["batch_stats"])[0]
  found, report = si_groups.find_si_groups(fn, variables["params"], x, generic=False,
                                           return_report=True)
  # BN subtracts the batch mean: dense_0's bias has no effect (gradient 0), its kernel
  # is SI alone. dense_1's bias is 0 (flax init), so only its kernel is tested: SI here
  # (at the params as given; the default generic point: tests/test_generic_groups.py).
  assert report.unused == paths("dense_0/bias")
  assert report.zero == paths("dense_1/bias")
  assert found == {"dense_0": paths("dense_0/kernel"), "dense_1": paths("dense_1/kernel")}


def test_small_bias_is_rejected_by_the_non_si_baseline():
  # A head bias 1e-5 times its init changes f by ~1e-6 (below rtol), but as much as a
  # random perturbation of the same size does: not SI, so not a group. (The generic
  # point would move it, below TINY_BIAS of its kernel's scale: searched as given.)
  x = rng_images(32, (12,))
  module = LayerNormMLP()
  params = init(module, x)
  params = {**params, "head": {**params["head"], "bias": params["head"]["bias"] * 1e-5}}
  with pytest.warns(UserWarning, match="params/head/bias is in no SI group"):
    found, report = si_groups.find_si_groups(module.apply, {"params": params}, x,
                                             return_report=True, generic=False)
  assert ("params", "head", "bias") not in {p for ps in found.values() for p in ps}
  euler, value, baseline = report.rejected["params/head/bias"]
  assert value < 1e-3 and value > 0.1 * baseline


def test_bad_scales_raise():
  with pytest.raises(ValueError, match="scales"):
    si_groups.verify_si_groups(lambda p, x: p["w"] * x, {"w": np.ones(2)}, {}, np.ones(2),
                               scales=(1.0,))


def test_param_groups_masks_and_optimizer_on_nnx_state():
  # groups found on an nnx State drive the optimizer on that State: SI tensors step by
  # Eq. (2), the frozen non-SI ones stay put
  graphdef, state = nnx.split(NNXNet(nnx.Rngs(0)), nnx.Param)
  x = rng_images(32, (12,))
  fn = lambda s, x: nnx.merge(graphdef, s)(x)
  found = si_groups.find_si_groups(fn, state, x, num_probes=10**6)
  groups = ParamGroups.from_si_groups(found, train_non_si=False)
  mask = {layers.path_str(kp): bool(v) for kp, v in
          jax.tree_util.tree_flatten_with_path(groups.si_mask(state))[0]}
  assert {p for p, v in mask.items() if v} == set(sum(found.values(), ()))
  assert len(mask) == 6  # 2 x (kernel, bias) + head (kernel, bias)
  grads = jax.grad(lambda s: jnp.sum(fn(s, x) ** 2))(state)
  tx = optim.make_optimizer(state, groups, lr=0.1, wd=0.01)
  new = optax.apply_updates(state, tx.update(grads, tx.init(state), state)[0])
  for (kp, a), b, g in zip(jax.tree_util.tree_flatten_with_path(state)[0], jax.tree.leaves(new),
                           jax.tree.leaves(grads)):
    want = a - 0.1 * (g + 0.01 * a) if mask[layers.path_str(kp)] else a
    np.testing.assert_allclose(b, want, rtol=1e-5, atol=1e-7)


class ConvNoAffineBN(nn.Module):
  """conv (with bias) -> BatchNorm without scale and bias -> relu, twice, then a head."""

  @nn.compact
  def __call__(self, x):
    for i in range(2):
      x = nn.Conv(8, (3, 3), name=f"conv_{i}")(x)
      x = nn.relu(nn.BatchNorm(use_running_average=False, use_scale=False, use_bias=False,
                               name=f"bn_{i}")(x))
    return nn.Dense(10, name="head")(x.mean(axis=(1, 2)))


def test_a_near_si_warning_says_below_rtol_when_the_residual_is():
  """A bias of ~30 in front of a BN without affine: f barely depends on it, but float32
  cancellation keeps it from reading as unused; its residual is far below rtol and its
  rescaling check fails, which the warning used to call 'within 3x of rtol'."""
  x = rng_images(16, (8, 8, 3))
  model = ConvNoAffineBN()
  v = model.init(jax.random.key(0), x)
  params = {**v["params"], "conv_0": {**v["params"]["conv_0"],
                                      "bias": jnp.arange(30.0, 38.0, dtype=jnp.float32)}}
  fn = lambda p, x: model.apply({**v, "params": p}, x, mutable=["batch_stats"])[0]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    found, report = si_groups.find_si_groups(fn, params, x, return_report=True)
  assert found == {"conv_0": paths("conv_0/kernel"), "conv_1": paths("conv_1/kernel")}
  path, residual = report.nearest_non_si
  assert path == ("conv_0", "bias") and residual < si_groups.DEFAULT_RTOL / 10, residual
  said = [str(w.message) for w in caught if "in no SI group" in str(w.message)]
  assert len(said) == 1 and "below rtol=0.003, yet the rescaling check rejected" in said[0]


def test_the_near_si_warning_names_every_near_tensor():
  """Two barely read biases (~30 before a BN without affine, in two layers): both named,
  nearest first, and the weak-pair search does not pair them."""
  x = rng_images(16, (8, 8, 3))
  model = ConvNoAffineBN()
  v = model.init(jax.random.key(0), x)
  params = {**v["params"], **{f"conv_{i}": {**v["params"][f"conv_{i}"],
                                           "bias": jnp.arange(30.0, 38.0, dtype=jnp.float32)}
                              for i in (0, 1)}}
  fn = lambda p, x: model.apply({**v, "params": p}, x, mutable=["batch_stats"])[0]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    found, report = si_groups.find_si_groups(fn, params, x, return_report=True)
  assert found == {"conv_0": paths("conv_0/kernel"), "conv_1": paths("conv_1/kernel")}
  near = [p for p, _ in report.near_non_si]
  assert set(near[:2]) == {("conv_0", "bias"), ("conv_1", "bias")}, report.near_non_si
  said = [str(w.message) for w in caught if "in no SI group" in str(w.message)]
  assert len(said) == 1 and said[0].startswith("/".join(near[0]))
  assert f"also near SI: {'/'.join(near[1])}" in said[0], said


def test_bfloat16_and_float16_params_are_searched_in_float32():
  """numpy counts bfloat16 as no floating type: every leaf was 'not floating'."""
  x = rng_images(32, (12,))
  module = LayerNormMLP()
  params = {"params": init(module, x)}
  found = si_groups.find_si_groups(module.apply, params, x)
  for dtype in (jnp.bfloat16, jnp.float16):
    low = jax.tree.map(lambda a: a.astype(dtype), params)
    assert si_groups.find_si_groups(module.apply, low, x) == found
    assert max(si_groups.verify_si_groups(module.apply, low, found, x).values()) < 1e-5


class Towers(nn.Module):
  """Four Dense -> LayerNorm -> Dense towers, concatenated into one LayerNorm: 4 + 2^4
  groups (each d_k; the concatenation's, one of {p_k} or {ln_k, p_k/bias} per tower)."""

  @nn.compact
  def __call__(self, x):
    towers = [nn.Dense(4, name=f"p_{k}")(nn.LayerNorm(name=f"ln_{k}")(
        nn.Dense(4, name=f"d_{k}")(x))) for k in range(4)]
    return nn.Dense(3, name="head")(nn.LayerNorm(name="ln")(jnp.concatenate(towers, -1)))


def test_warnings_of_one_kind_are_capped():
  """Each group that holds only because a bias is zero was warned of once: 1034 lines
  for ten towers. At most MAX_WARNED and a count; the report holds all."""
  x = rng_images(16, (6,))
  params = init(Towers(), x)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    found, report = si_groups.find_si_groups(Towers().apply, {"params": params}, x,
                                             return_report=True)
  assert len(found) == 20 and len(report.degenerate_only) > si_groups.MAX_WARNED
  said = [str(w.message) for w in caught if "at the given params only because" in str(w.message)]
  assert len(said) == si_groups.MAX_WARNED + 1
  assert said[0].startswith(f"{len(report.degenerate_only)} SI groups hold at the given params")
