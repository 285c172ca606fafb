"""Model definitions: parameter counts, PyTorch-style init, SI groups, bad input."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import models
from si_jax.models import layers

import reference_nets
from conftest import make


def si_count(variables, groups):
  return sum(models.get_path(variables["params"], p).size for p in groups.si_paths)


def conv_weights(cin, cout, k):
  return cin * cout * k * k


def test_convnet_k32_has_387936_si_weights():
  _, v, g = make("convnet_si", width=32, input_shape=(32, 32, 3))
  assert si_count(v, g) == 387_936
  # Conv3x3(3->32), (32->64), (64->128), (128->256): the original ConvNetDepth.
  assert si_count(v, g) == sum(conv_weights(a, b, 3) for a, b in
                                [(3, 32), (32, 64), (64, 128), (128, 256)])
  assert v["params"]["classifier"]["kernel"].shape == (256, 10)


def test_resnet18_si_weight_count_matches_architecture():
  _, v, g = make("resnet18_si", width=64, input_shape=(32, 32, 3))
  expected = conv_weights(3, 64, 3)
  cin = 64
  for stage in range(4):
    c = 64 * 2**stage
    for _block in range(2):
      expected += conv_weights(cin, c, 3) + conv_weights(c, c, 3)
      if cin != c:
        expected += conv_weights(cin, c, 1)
      cin = c
  assert si_count(v, g) == expected == 11_159_232
  assert "bias" not in v["params"]["classifier"]
  assert v["params"]["classifier"]["kernel"].shape == (512, 10)


@pytest.mark.parametrize("name,width,shape", [("convnet_si", 32, (32, 32, 3)),
                                               ("resnet18_si", 16, (32, 32, 3))])
def test_initial_norms_follow_pytorch_uniform_init(name, width, shape):
  # U(-b, b) with b = 1/sqrt(fan_in) has E w^2 = 1/(3 fan_in), so a layer with
  # fan_out outputs has E ||W||^2 = fan_out / 3, independent of fan_in.
  _, v, g = make(name, width=width, input_shape=shape, seed=1)
  total, expected_total = 0.0, 0.0
  for path in g.si_paths:
    w = np.asarray(models.get_path(v["params"], path))
    fan_in = math.prod(w.shape[:-1])
    assert np.abs(w).max() <= 1 / math.sqrt(fan_in)
    assert np.abs(w).max() > 0.95 / math.sqrt(fan_in)  # the whole interval is used
    total += np.sum(w**2)
    expected_total += w.shape[-1] / 3
    if w.size >= 2000:  # per-layer sampling error ~ sqrt(1.6 / size)
      assert abs(np.sum(w**2) / (w.shape[-1] / 3) - 1) < 0.1, path
  assert abs(total / expected_total - 1) < 0.03


@pytest.mark.parametrize("name, norm, width, shape", [
    ("convnet_si", "layer", 4, (8, 8, 1)), ("convnet_si", "weight", 4, (8, 8, 1)),
    ("resnet18_si", "batch", 4, (8, 8, 1)), ("transformer", "layer", 16, (2,))])
def test_init_compiles_faster_to_the_same_bits(name, norm, width, shape):
  """init_variables' level-2 compile gives the default (level 3) compile's bits exactly
  (level 0 would not: it moves the classifier bias by an ulp)."""
  model = models.create_model(name, num_classes=10, width=width, norm=norm)
  ours = models.init_variables(model, jax.random.key(5), shape, last_layer_norm=None)
  init = jax.jit(functools.partial(model.init, train=False))
  default = init(jax.random.key(5), jnp.zeros((1, *shape), jnp.float32))
  leaves = jax.tree_util.tree_leaves_with_path(default["params"])
  assert len(leaves) == len(jax.tree.leaves(ours["params"])) > 3
  for (path, x), y in zip(leaves, jax.tree.leaves(ours["params"])):
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=jax.tree_util.keystr(path))


def test_last_layer_rescaled_bias_not():
  _, v, _ = make("convnet_si", width=8, last_layer_norm=10.0)
  _, v_raw, _ = make("convnet_si", width=8, last_layer_norm=None)
  np.testing.assert_allclose(jnp.linalg.norm(v["params"]["classifier"]["kernel"]), 10.0, rtol=1e-6)
  np.testing.assert_array_equal(v["params"]["classifier"]["bias"],
                                v_raw["params"]["classifier"]["bias"])
  b = 1 / math.sqrt(64)  # fan_in of the ConvNet classifier at width 8 is 8k = 64
  assert np.abs(v_raw["params"]["classifier"]["bias"]).max() <= b


@pytest.mark.parametrize("name", ["convnet_si", "resnet18_si"])
def test_si_groups_cover_every_conv_kernel_and_nothing_else(name):
  # Structural on purpose: which kernels are SI is a set; that each declared group is
  # really SI is measured numerically in test_invariance.py.
  _, v, g = make(name, width=4, input_shape=(16, 16, 3), train_non_si=True)
  kernels = {p for p, x in models.flatten_with_paths(v["params"]) if x.ndim == 4}
  assert set(g.si_paths) == kernels
  assert len(g.si_paths) == len(set(g.si_paths))
  trainable = models.flatten_with_paths(g.trainable_mask(v["params"]))
  assert all(t for _, t in trainable)  # train_non_si trains everything


def test_frozen_non_si_mask():
  # Structural: the optimizer's use of this mask is checked on numbers in test_optim.py.
  _, v, g = make("convnet_si", norm="batch", train_non_si=False)
  mask = dict(models.flatten_with_paths(g.trainable_mask(v["params"])))
  assert mask[("classifier", "kernel")] is False and mask[("classifier", "bias")] is False
  assert all(mask[p] for p in g.si_paths)


def test_batchnorm_matches_pytorch_rule_by_hand():
  x = np.random.default_rng(0).normal(2.0, 3.0, (8, 5, 5, 4)).astype(np.float32)
  norm = layers.Norm("batch")
  v = norm.init(jax.random.key(0), x, train=False)
  y, upd = norm.apply(v, x, train=True, mutable=["batch_stats"])
  mean = x.mean(axis=(0, 1, 2))
  var_biased = x.var(axis=(0, 1, 2))
  n = 8 * 5 * 5
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(var_biased + 1e-5), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * var_biased * n / (n - 1),
                             rtol=1e-5)
  y_eval = norm.apply(upd, x, train=False)
  np.testing.assert_allclose(
      y_eval, (x - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var_biased * n / (n - 1) + 1e-5), rtol=1e-5)


def norm_input(scale=1.0):
  """Samples and channels with their own offsets and spreads, so that normalizing over
  the wrong axes (per channel instead of per sample, or over the batch) shows."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(4, 5, 6, 3))
  x = x * np.array([0.5, 2.0, 4.0]) + np.array([1.0, -3.0, 0.0])  # per channel
  x = x * np.array([1.0, 3.0, 0.3, 1.5])[:, None, None, None] + np.arange(4)[:, None, None, None]
  return (scale * x).astype(np.float32)


@pytest.mark.parametrize("kind", ["layer", "instance"])
@pytest.mark.parametrize("scale", [1.0, 1e-3])
def test_layer_and_instance_norm_match_numpy(kind, scale):
  # scale 1e-3 puts the variance (~1e-6) below epsilon = 1e-5, so the epsilon must sit
  # inside the square root, as in torch: (x - mean) / sqrt(var + eps)
  x = norm_input(scale)
  norm = layers.Norm(kind)
  v = norm.init(jax.random.key(0), x, train=False)
  assert v == {}  # no running statistics, no parameters
  want = reference_nets.norm(x, kind)
  for train in (True, False):  # the same statistics in both modes
    np.testing.assert_allclose(norm.apply(v, x, train=train), want, rtol=2e-4, atol=2e-4)
  # and the three kinds really differ on this input
  for other in set(reference_nets.NORM_AXES) - {kind}:
    assert np.abs(reference_nets.norm(x, other) - want).max() > 0.1


@pytest.mark.parametrize("kind", ["batch", "layer", "instance"])
def test_affine_norm_scale_and_shift_per_channel(kind):
  x = norm_input()
  norm = layers.Norm(kind, affine=True)
  v = norm.init(jax.random.key(0), x, train=False)
  rng = np.random.default_rng(2)
  scale, bias = rng.normal(size=3).astype(np.float32), rng.normal(size=3).astype(np.float32)
  v = {**v, "params": {"scale": scale, "bias": bias}}
  y, _ = norm.apply(v, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(y, reference_nets.norm(x, kind, scale=scale, bias=bias),
                             rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("kind", ["batch", "layer", "instance"])
def test_convnet_forward_matches_numpy_reference(kind):
  """The whole ConvNet, each of its norm layers included, against the original
  ConvNetDepth written out in NumPy (batch norm in train mode)."""
  x = np.random.default_rng(3).normal(size=(4, 16, 16, 3)).astype(np.float32)
  model, v, _ = make("convnet_si", norm=kind, width=4, input_shape=(16, 16, 3), seed=2)
  logits, _ = model.apply(v, x, train=True, mutable=["batch_stats"])
  want = reference_nets.convnet(v["params"], x, kind)
  # measured <= 4e-6 on |logits| ~ 10
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("kind", ["batch", "layer", "instance"])
def test_resnet18_forward_matches_numpy_reference(kind):
  """The pre-activation ResNet-18 against the original PreActResNet in NumPy."""
  x = np.random.default_rng(4).normal(size=(4, 16, 16, 3)).astype(np.float32)
  model, v, _ = make("resnet18_si", norm=kind, width=4, input_shape=(16, 16, 3), seed=3)
  logits, _ = model.apply(v, x, train=True, mutable=["batch_stats"])
  want = reference_nets.resnet18(v["params"], x, kind)
  # measured <= 4e-6 on |logits| ~ 10
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=2e-5 * np.abs(want).max())


def test_stride2_conv_pads_symmetrically_like_pytorch():
  # PyTorch Conv2d(k=3, stride=2, padding=1) on 8x8 reads rows -1, 1, 3, 5 around
  # outputs 0..3; with a kernel that picks the center tap the output is x[::2, ::2].
  conv = layers.conv(1, 3, stride=2)
  kernel = jnp.zeros((3, 3, 1, 1)).at[1, 1, 0, 0].set(1.0)
  x = jnp.arange(64.0).reshape(1, 8, 8, 1)
  y = conv.apply({"params": {"kernel": kernel}}, x)
  np.testing.assert_array_equal(y[0, :, :, 0], x[0, ::2, ::2, 0])


@pytest.mark.parametrize("kernel,stride,size", [(3, 1, 8), (3, 2, 8), (1, 2, 8), (3, 2, 7),
                                                (3, 1, 5)])
def test_patch_conv_equals_nn_conv_values_and_gradients(kernel, stride, size):
  rng = np.random.default_rng(kernel * 10 + stride + size)
  x = jnp.asarray(rng.standard_normal((2, size, size, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kernel, kernel, 3, 5)), jnp.float32)
  out = {}
  for impl in layers.CONV_IMPLS:
    conv = layers.conv(5, kernel, stride, impl=impl)
    f = lambda w, x: jnp.sum(jnp.sin(conv.apply({"params": {"kernel": w}}, x)))
    y = conv.apply({"params": {"kernel": w}}, x)
    out[impl] = (y, *jax.grad(f, argnums=(0, 1))(w, x))
    # same parameter name, shape and init distribution
    params = conv.init(jax.random.key(0), x)["params"]
    assert params["kernel"].shape == w.shape
  for a, b in zip(out["xla"], out["patches"]):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", ["convnet_si", "resnet18_si"])
def test_patches_model_equals_xla_model(name):
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 16, 16, 3)), jnp.float32)
  models_ = {impl: models.create_model(name, num_classes=10, width=4, conv_impl=impl)
             for impl in layers.CONV_IMPLS}
  variables = models_["xla"].init(jax.random.key(1), x, train=False)
  assert jax.tree.map(jnp.shape, models_["patches"].init(jax.random.key(1), x, train=False)) == \
      jax.tree.map(jnp.shape, variables)
  logits = {impl: m.apply(variables, x, train=True, mutable=["batch_stats"])[0]
            for impl, m in models_.items()}
  np.testing.assert_allclose(logits["xla"], logits["patches"], rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="model.conv_impl"):
    models.create_model(name, num_classes=10, width=4, conv_impl="fft")


def test_reshape_max_pool_equals_flax_max_pool():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 9, 8, 3)), jnp.float32)
  np.testing.assert_array_equal(layers.max_pool_2x2(x), nn.max_pool(x, (2, 2), strides=(2, 2)))
  g = jax.grad(lambda x: jnp.sum(jnp.cos(layers.max_pool_2x2(x))))(x)
  g_ref = jax.grad(lambda x: jnp.sum(jnp.cos(nn.max_pool(x, (2, 2), strides=(2, 2)))))(x)
  np.testing.assert_allclose(g, g_ref, rtol=1e-6)  # no ties in random data


@pytest.mark.parametrize("kwargs,field", [
    (dict(name="vgg"), "model.name"),
    (dict(name="convnet_si", norm="group"), "model.norm"),
    (dict(name="convnet_si", width=0), "model.width"),
    (dict(name="convnet_si", width=-3), "model.width"),
])
def test_bad_model_config_names_the_field(kwargs, field):
  # An error path: the message naming the config field is the behaviour under test.
  with pytest.raises(ValueError, match=field):
    models.create_model(num_classes=10, **kwargs)


def test_bad_last_layer_norm():
  model = models.create_model("convnet_si", num_classes=10, width=4)
  with pytest.raises(ValueError, match="last_layer_norm"):
    models.init_variables(model, jax.random.key(0), (8, 8, 1), last_layer_norm=-1.0)


def test_weight_normalized_convnet_is_scale_invariant_per_filter():
  """model.norm='weight' (weight normalization, Salimans & Kingma; the appendix's Li et al.
  setting): each filter's kernel is divided by its norm, so scaling one filter of a conv,
  or a whole kernel, leaves the logits unchanged (float32 round-off), and the groups found
  automatically are the four conv kernels."""
  from si_jax import si_groups
  model = models.create_model("convnet_si", width=4, num_classes=10, norm="weight")
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 8, 8, 1))
  variables = model.init(jax.random.PRNGKey(1), x, train=False)
  params = variables["params"]
  logits = model.apply(variables, x, train=False)
  for name, scale in (("conv_1", 3.7), ("conv_3", 0.21)):
    kernel = params[name]["kernel"]
    one_filter = kernel.at[..., 2].multiply(scale)
    for changed in (one_filter, kernel * scale):
      moved = {**params, name: {"kernel": changed}}
      out = model.apply({**variables, "params": moved}, x, train=False)
      assert float(jnp.max(jnp.abs(out - logits)) / jnp.max(jnp.abs(logits))) < 2e-6
  found = si_groups.find_si_groups(lambda p: model.apply({"params": p}, x, train=False), params)
  assert sorted(found) == [f"conv_{i}" for i in range(4)], sorted(found)
  moved = {**params, "classifier": {**params["classifier"],
                                    "kernel": params["classifier"]["kernel"] * 2}}
  assert float(jnp.max(jnp.abs(model.apply({"params": moved}, x, train=False) - logits))) > 1e-2
  with pytest.raises(ValueError, match="ConvNet only"):
    resnet = models.create_model("resnet18_si", width=4, num_classes=10, norm="weight")
    resnet.init(jax.random.PRNGKey(1), jnp.zeros((2, 8, 8, 3)), train=False)
