"""find_si_groups at flax's default init: the groups of a generic point, not of the zeros.

Flax initializes Dense/Conv and norm biases to 0 and norm scales to 1. A search at those
params sees groups that hold only because a bias is 0 (a LayerNorm's scale without its
bias, a BatchNorm's scale alone): training moves the bias and they stop holding. The
default search moves such tensors to a generic point first. Each expected group below
is derived by hand from the architecture, and checked against a search at a random
point where no tensor is zero or constant (``generic=False`` there: nothing to move).
"""

import types
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from si_jax import logs, models, si_groups
from si_jax.engine import loop, step
from si_jax.engine.state import StepContext

from conftest import make, rng_images
from helpers import paths, tiny_config


def as_sets(groups):
  return {frozenset(ps) for ps in groups.values()}


def found_quietly(model, x):
  """(params at init, fn, find_si_groups' groups), its warnings silenced."""
  params = model.init(jax.random.key(0), x)["params"]
  fn = lambda p, x: model.apply({"params": p}, x)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return params, fn, si_groups.find_si_groups(fn, params, x)


def random_point(params, seed=1):
  """Every tensor moved by 0.3 N(0, 1) per entry: none zero, none constant."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda x: (np.asarray(x) + 0.3 * rng.standard_normal(x.shape)).astype(x.dtype), params)


class PreLNBlockNet(nn.Module):
  """Tokens -> embed -> h + mlp_out(relu(mlp_in(ln_1(h)))) -> ln_f -> token mean -> head."""

  @nn.compact
  def __call__(self, x_BTF):
    h = nn.Dense(16, name="embed")(x_BTF)
    a = nn.relu(nn.Dense(32, name="mlp_in")(nn.LayerNorm(name="ln_1")(h)))
    h = h + nn.Dense(16, name="mlp_out")(a)
    h = nn.LayerNorm(name="ln_f")(h)
    return nn.Dense(10, name="head")(h.mean(axis=1))


# The stream h is read only by layer norms (ln_1, ln_f): everything written into it
# scales by the same c: embed (kernel and bias) and the branch with mlp_out's bias. The
# branch scales by c with mlp_out's kernel, or (relu positively homogeneous) with
# mlp_in's kernel and bias, or with ln_1's scale and bias and mlp_in's bias.
STREAM = ("embed/kernel", "embed/bias", "mlp_out/bias")
PRE_LN_BY_HAND = {frozenset(paths(*STREAM, *branch)) for branch in (
    ("mlp_out/kernel",), ("mlp_in/kernel", "mlp_in/bias"),
    ("ln_1/scale", "ln_1/bias", "mlp_in/bias"))}
# With every bias 0, the search at the init finds embed's kernel with ln_1's scale:
# SI there only because the biases after it are 0.
PRE_LN_WRONG = paths("embed/kernel", "ln_1/scale")


@pytest.fixture(scope="module")
def pre_ln():
  x = rng_images(8, (4, 6))  # 8 sequences of 4 tokens of 6 features
  module = PreLNBlockNet()
  params = module.init(jax.random.key(0), x)["params"]
  fn = lambda p, x: module.apply({"params": p}, x)
  return fn, params, x


def test_pre_ln_groups_at_init_are_those_of_a_generic_point(pre_ln):
  fn, params, x = pre_ln
  assert not np.any(params["ln_1"]["bias"]) and not np.any(params["embed"]["bias"])
  with pytest.warns(UserWarning, match=r"SI group embed/kernel\+ln_1/scale holds at the given "
                                       r"params only because .*ln_1/bias"):
    found, report = si_groups.find_si_groups(fn, params, x, return_report=True)
  at_random = si_groups.find_si_groups(fn, random_point(params), x, generic=False)
  assert as_sets(found) == as_sets(at_random) == PRE_LN_BY_HAND
  assert report.generic and set(report.moved) == set(paths(
      "embed/bias", "mlp_in/bias", "mlp_out/bias", "ln_1/bias", "ln_1/scale", "ln_f/bias",
      "ln_f/scale", "head/bias"))
  assert "embed+ln_1+mlp_in/bias+mlp_out/bias" in found
  assert "embed+ln_1/scale" not in found
  assert "embed/kernel+ln_1/scale" in report.degenerate_only


def test_pre_ln_groups_hold_after_the_zeros_move_and_the_wrong_one_does_not(pre_ln):
  fn, params, x = pre_ln
  with pytest.warns(UserWarning, match="only because"):
    found = si_groups.find_si_groups(fn, params, x)
  trained_like = random_point(params, seed=2)
  res = si_groups.verify_si_groups(fn, trained_like, {**found, "wrong": PRE_LN_WRONG}, x)
  assert max(res[k] for k in found) < 1e-4, res
  assert res["wrong"] > 1e-2, res
  # at the init, where the biases are 0, the wrong group does hold
  assert si_groups.verify_si_groups(fn, params, {"wrong": PRE_LN_WRONG}, x)["wrong"] < 1e-5
  with pytest.warns(UserWarning, match=r"SI group 'wrong' does not hold at these params"):
    si_groups.verify_si_groups(fn, trained_like, {"wrong": PRE_LN_WRONG}, x, rtol=1e-3)


def test_the_old_search_reports_the_wrong_group(pre_ln):
  fn, params, x = pre_ln
  found, report = si_groups.find_si_groups(fn, params, x, generic=False, return_report=True)
  assert frozenset(PRE_LN_WRONG) in as_sets(found) and "embed+ln_1/scale" in found
  assert not report.generic and "ln_1/bias" in {"/".join(p) for p in report.zero}


class BatchNormCNN(nn.Module):
  """conv_0 -> BN -> relu -> conv_1 -> BN -> relu -> spatial mean -> head (flax init)."""

  @nn.compact
  def __call__(self, x_NHWC):
    x = nn.Conv(6, (3, 3), name="conv_0")(x_NHWC)
    x = nn.relu(nn.BatchNorm(use_running_average=False, name="bn_0")(x))
    x = nn.Conv(6, (3, 3), name="conv_1")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=False, name="bn_1")(x))
    return nn.Dense(10, name="head")(x.mean(axis=(1, 2)))


# Train-mode BN removes the batch mean, so a conv's bias has no effect (unused) and its
# kernel is SI alone; bn_0's scale and bias together scale relu's output, which conv_1
# and bn_1 then normalize away. bn_1 feeds the head: not SI.
CNN_BY_HAND = {frozenset(paths("conv_0/kernel")), frozenset(paths("conv_1/kernel")),
               frozenset(paths("bn_0/scale", "bn_0/bias"))}


def test_batch_norm_cnn_groups_at_init_are_those_of_a_generic_point():
  x = rng_images(16, (6, 6, 2))
  module = BatchNormCNN()
  variables = module.init(jax.random.key(0), x)
  fn = lambda p, x: module.apply({**variables, "params": p}, x, mutable=["batch_stats"])[0]
  params = variables["params"]
  with pytest.warns(UserWarning, match="SI group bn_0/scale holds at the given params only "
                                       "because bn_0/bias is zero"):
    found, report = si_groups.find_si_groups(fn, params, x, return_report=True)
  at_random = si_groups.find_si_groups(fn, random_point(params), x, generic=False)
  assert as_sets(found) == as_sets(at_random) == CNN_BY_HAND
  assert set(report.unused) == set(paths("conv_0/bias", "conv_1/bias"))
  assert "bn_0" in found and "bn_0/scale" not in found
  trained_like = random_point(params, seed=2)
  res = si_groups.verify_si_groups(fn, trained_like,
                                   {**found, "wrong": paths("bn_0/scale")}, x)
  assert max(res[k] for k in found) < 1e-4, res
  assert res["wrong"] > 1e-2, res


def test_generic_point_moves_only_degenerate_tensors_by_their_natural_scale():
  params = {"dense": {"kernel": np.full((3, 4), 0.5, np.float32) + np.eye(3, 4, dtype=np.float32),
                      "bias": np.zeros(4, np.float32)},
            "norm": {"scale": np.ones(4, np.float32), "bias": np.zeros(4, np.float32)},
            "gain": np.float32(2.0)}
  moved, which = si_groups.generic_point(params, seed=3)
  assert set(which) == set(paths("dense/bias", "norm/scale", "norm/bias"))
  np.testing.assert_array_equal(moved["dense"]["kernel"], params["dense"]["kernel"])
  assert moved["gain"] == 2.0  # a scalar is never constant
  # in path order, from the seed's generator: dense/bias, norm/bias (zero: 0.5 s N(0, 1)
  # with s the scale of the kernel's output for unit inputs, its RMS
  # sqrt((9 * 0.5^2 + 3 * 1.5^2) / 12) x sqrt(fan-in 3), or the norm's scale 1), then
  # norm/scale (constant v: v (1 + 0.5 U(-1, 1)))
  rng = np.random.default_rng([3, 1])
  np.testing.assert_allclose(moved["dense"]["bias"],
                             0.5 * np.sqrt(0.75 * 3) * rng.standard_normal(4), rtol=1e-6)
  np.testing.assert_allclose(moved["norm"]["bias"], 0.5 * rng.standard_normal(4), rtol=1e-6)
  np.testing.assert_allclose(moved["norm"]["scale"], 1 + 0.5 * rng.uniform(-1, 1, 4), rtol=1e-6)
  again, _ = si_groups.generic_point(params, seed=3)
  np.testing.assert_array_equal(again["norm"]["bias"], moved["norm"]["bias"])


def test_group_changes_tell_a_group_that_holds_from_one_that_does_not(digits_batch):
  model, variables, groups = make("convnet_si")
  head = groups.last_layer  # the fixed last layer: rescaling it scales the logits
  fake = models.ParamGroups({**groups.si_groups, "head": (head,)}, last_layer=head)
  ctx = StepContext(model, optax.sgd(0.1), fake)
  changes = np.asarray(step.group_changes(ctx, variables["params"], variables["batch_stats"],
                                          digits_batch[0]))
  assert changes.shape == (len(groups.si_groups) + 1,)
  assert changes[:-1].max() < 1e-4 and changes[-1] > 0.5  # logits ~2x: a change of ~1


def test_a_broken_group_is_warned_of_once_per_run(capsys):
  logs.warnings_to_stderr()
  run = types.SimpleNamespace(config=tiny_config(), broken_groups=set())
  for epoch in (3, 4):
    loop._warn_broken_groups(run, ("conv", "head"), np.array([2e-6, 0.5]), epoch)
  err = capsys.readouterr().err
  assert err.count("SI group 'head' no longer holds at epoch 3") == 1 and "conv" not in err
  assert "5.00e-01 > train.check_groups_rtol=0.001" in err and run.broken_groups == {"head"}


class WideGroupNormCNN(nn.Module):
  """conv(64 -> 4) -> GroupNorm(2) -> relu -> conv -> GroupNorm -> relu -> mean -> Dense."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.GroupNorm(num_groups=2, name="gn_0")(nn.Conv(4, (3, 3), name="conv_0")(x)))
    x = nn.relu(nn.GroupNorm(num_groups=2, name="gn_1")(nn.Conv(4, (3, 3), name="conv_1")(x)))
    return nn.Dense(3, name="head")(x.mean(axis=(1, 2)))


def test_a_zero_bias_behind_a_wide_kernel_is_moved_far_enough_to_break_kernel_alone():
  """A bias moved by its kernel's RMS alone (not x sqrt(fan-in 576)) barely moved this
  layer's output: {conv_0/kernel} passed as a group (1.2e-3 relative change from rescaling
  it at a random point) and the true {kernel, bias} was missed."""
  x = rng_images(16, (6, 6, 64))
  params, fn, found = found_quietly(WideGroupNormCNN(), x)
  assert frozenset(paths("conv_0/kernel", "conv_0/bias")) in as_sets(found), found
  assert frozenset(paths("conv_0/kernel")) not in as_sets(found)
  rng = np.random.default_rng(7)
  moved = jax.tree.map(lambda a: a + 0.3 * rng.standard_normal(a.shape).astype(a.dtype), params)
  residuals = si_groups.verify_si_groups(fn, moved, found, x, rtol=1e-3)
  assert max(residuals.values()) < 1e-5, residuals


class LayerScaleBlock(nn.Module):
  """A ConvNeXt-style block: stem, depthwise conv, LayerNorm, MLP, added back scaled by a
  per-channel layer scale ``gamma`` (ConvNeXt initializes it to 1e-6), LayerNorm, head."""
  gamma_init: float = 1e-6

  @nn.compact
  def __call__(self, x):
    h = nn.Conv(8, (2, 2), strides=(2, 2), name="stem")(x)
    y = nn.LayerNorm(name="ln")(nn.Conv(8, (3, 3), feature_group_count=8, name="dw")(h))
    y = nn.Dense(8, name="pw2")(nn.gelu(nn.Dense(32, name="pw1")(y)))
    gamma = self.param("gamma", nn.initializers.constant(self.gamma_init), (8,))
    h = nn.LayerNorm(name="ln_f")(h + gamma * y)
    return nn.Dense(10, name="head")(h.mean(axis=(1, 2)))


@pytest.mark.parametrize("gamma_init", [1e-6, 1e-3])
def test_a_tiny_layer_scale_is_moved_as_a_zero(gamma_init):
  """Scaled by 1 + u, a layer scale of 1e-6 stayed tiny: the branch read as unused and the
  stem alone (which the branch breaks once gamma grows) came back as a group, the
  branch's groups missing. Every group of the block by hand, each found and each SI at a
  point where gamma has grown."""
  x = rng_images(16, (16, 16, 3))
  params, fn, found = found_quietly(LayerScaleBlock(gamma_init), x)
  assert frozenset(paths("stem/kernel", "stem/bias")) not in as_sets(found)
  assert {frozenset(paths("dw/kernel", "dw/bias")),
          frozenset(paths("stem/kernel", "stem/bias", "dw/bias", "pw2/kernel", "pw2/bias")),
          frozenset(paths("stem/kernel", "stem/bias", "dw/bias", "gamma"))} <= as_sets(found), found
  rng = np.random.default_rng(3)
  grown = {**params, "gamma": jnp.asarray(0.1 * (1 + 0.5 * rng.uniform(-1, 1, 8)), jnp.float32)}
  grown = jax.tree.map(lambda a: a + 0.05 * rng.standard_normal(a.shape).astype(a.dtype), grown)
  assert max(si_groups.verify_si_groups(fn, grown, found, x).values()) < 1e-4


class QuietBranchMLP(nn.Module):
  """stem -> LN -> h + out(LN(branch(h))) -> head, out's kernel random at ``scale``: a
  branch f barely reads, with no multiplier for the generic point to move."""

  scale: float

  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm(use_scale=False, use_bias=False, name="ln_0")(nn.Dense(16, name="stem")(x))
    b = nn.LayerNorm(use_scale=False, use_bias=False, name="ln_1")(nn.Dense(16, name="branch")(h))
    out = nn.Dense(16, kernel_init=nn.initializers.normal(self.scale), name="out")
    return nn.Dense(4, name="head")(h + out(b))


@pytest.mark.parametrize("scale", [1e-4, 1e-1])
def test_a_group_of_barely_read_tensors_is_searched_at_its_own_scale(scale):
  """Behind out's kernel of 1e-4, branch/kernel and branch/bias each change f by less than
  rtol yet are not SI alone: they were left out of the pair search and {branch} was
  missed (a near-SI warning only). Both groups by hand, each SI at a random point."""
  x = rng_images(32, (8,))
  params, fn, found = found_quietly(QuietBranchMLP(scale), x)
  assert as_sets(found) == {frozenset(paths("stem/kernel", "stem/bias")),
                            frozenset(paths("branch/kernel", "branch/bias"))}, found
  moved = random_point(params)
  assert max(si_groups.verify_si_groups(fn, moved, found, x).values()) < 1e-5
  alone = {"kernel": paths("branch/kernel"), "bias": paths("branch/bias")}
  assert min(si_groups.verify_si_groups(fn, moved, alone, x).values()) > 1e-2


class QuietResidual(nn.Module):
  """embed -> h + out(gelu(fc1(LN(h)))) -> LN -> head, out's kernel random at 1e-4 (a
  residual branch initialized near zero, not at it: nothing for the generic point to move)."""

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(16, name="embed")(x)
    a = nn.gelu(nn.Dense(32, name="fc1")(nn.LayerNorm(name="ln")(h)))
    h = h + nn.Dense(16, kernel_init=nn.initializers.normal(1e-4), name="out")(a)
    return nn.Dense(4, name="head")(nn.LayerNorm(name="ln_f")(h))


def test_a_group_si_only_while_a_branch_stays_small_gives_way_to_its_union():
  """{embed} alone changes f by ~1e-4 < rtol and passed; it breaks once out grows. The
  stream's group {embed, out} is reported, and a warning names out's tensors."""
  x = rng_images(32, (8,))
  model = QuietResidual()
  params = model.init(jax.random.key(0), x)["params"]
  fn = lambda p, x: model.apply({"params": p}, x)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    found, report = si_groups.find_si_groups(fn, params, x, return_report=True)
  assert as_sets(found) == {frozenset(paths("embed/kernel", "embed/bias", "out/kernel",
                                            "out/bias"))}, found
  given_way = "embed/bias+embed/kernel"  # its paths: the name 'embed' is the reported group's
  assert report.small_only == {given_way: paths("out/bias", "out/kernel")}, report.small_only
  said = [str(w.message) for w in caught if "barely reads" in str(w.message)]
  assert len(said) == 1 and f"SI group {given_way} holds here only because f barely" in said[0]
  embed = {"embed": paths("embed/kernel", "embed/bias")}
  assert si_groups.verify_si_groups(fn, random_point(params), embed, x)["embed"] > 1e-2


class LayerScaleMLP(nn.Module):
  """embed -> blocks of h + gamma_b * fc2(gelu(fc1(LN(h)))) -> LN -> head; the gammas are
  declared side by side in the top module, constant or random at ``scale``."""

  scale: float
  random: bool

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(16, name="embed")(x)
    for b in range(2):
      init = lambda k, s: self.scale * (jax.random.uniform(k, s, minval=0.5, maxval=1.5)
                                        if self.random else jnp.ones(s))
      gamma = self.param(f"gamma_{b}", init, (16,))
      a = nn.gelu(nn.Dense(32, name=f"fc1_{b}")(nn.LayerNorm(name=f"ln_{b}")(h)))
      h = h + gamma * nn.Dense(16, name=f"fc2_{b}")(a)
    return nn.Dense(10, name="head")(nn.LayerNorm(name="ln_f")(h))


@pytest.mark.parametrize("scale, random", [(1e-5, False), (1e-6, True), (1e-2, True)])
def test_layer_scales_near_zero_side_by_side_are_moved(scale, random):
  """Two constant gammas of 1e-5 in one module took each other's value as their natural
  scale and stayed; random ones of 1e-6 sat below float32's reach, of 1e-2 within rtol.
  {embed} alone was reported (it breaks once the gammas grow) and the stream's four groups,
  embed with gamma_b or fc2_b for each block, were missed."""
  x = rng_images(8, (6,))
  params, fn, found = found_quietly(LayerScaleMLP(scale, random), x)
  stream = {frozenset(paths("embed/kernel", "embed/bias", *a, *b))
            for a in (("gamma_0",), ("fc2_0/kernel", "fc2_0/bias"))
            for b in (("gamma_1",), ("fc2_1/kernel", "fc2_1/bias"))}
  assert as_sets(found) == stream, found
  assert max(si_groups.verify_si_groups(fn, random_point(params), found, x).values()) < 1e-4
  moved = si_groups.generic_point(params)[1]
  assert {("gamma_0",), ("gamma_1",)} <= set(moved)
  assert not any(p[-1] == "kernel" for p in moved)  # kernels keep their init


class NearZeroBiasLN(nn.Module):
  """dense (bias random at ``scale``) -> LN without affine -> head."""

  scale: float

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(16, bias_init=nn.initializers.normal(self.scale), name="dense")(x)
    return nn.Dense(4, name="head")(nn.LayerNorm(use_scale=False, use_bias=False)(h))


@pytest.mark.parametrize("scale", [1e-5, 1e-3])
def test_a_near_zero_bias_is_moved_or_found(scale):
  """A bias a step away from 0 (1e-5 of the output's scale: below what the search
  resolves) is moved as a zero; one of 1e-3 is kept and joins its kernel anyway."""
  x = rng_images(32, (8,))
  params, fn, found = found_quietly(NearZeroBiasLN(scale), x)
  assert as_sets(found) == {frozenset(paths("dense/kernel", "dense/bias"))}, found
  assert (("dense", "bias") in si_groups.generic_point(params)[1]) == (scale < 1e-4)


class ConvNeXtBlock(nn.Module):
  """h + gamma * pw2(gelu(pw1(LN(dw(h))))), gamma initialized to 1e-6 (ConvNeXt's)."""

  @nn.compact
  def __call__(self, h):
    gamma = self.param("gamma", nn.initializers.constant(1e-6), (h.shape[-1],))
    y = nn.LayerNorm(name="ln")(nn.Conv(h.shape[-1], (3, 3), feature_group_count=h.shape[-1],
                                        name="dw")(h))
    return h + gamma * nn.Dense(h.shape[-1], name="pw2")(nn.gelu(nn.Dense(32, name="pw1")(y)))


class ConvNeXtNet(nn.Module):
  """stem -> two ConvNeXt blocks -> mean -> LN -> head."""

  @nn.compact
  def __call__(self, x):
    h = nn.Conv(8, (2, 2), strides=(2, 2), name="stem")(x)
    h = ConvNeXtBlock(name="block_1")(ConvNeXtBlock(name="block_0")(h))
    return nn.Dense(10, name="head")(nn.LayerNorm(name="ln_f")(h.mean((1, 2))))


def sgd_steps(fn, params, x, steps=20):
  """``steps`` of SGD (lr 0.1, wd 1e-3) on random labels: no tensor zero or constant."""
  labels = jnp.asarray(np.random.default_rng(3).integers(0, 10, x.shape[0]))
  loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(fn(p, x), labels).mean()
  step = jax.jit(lambda p: jax.tree.map(lambda w, g: w - 0.1 * (g + 1e-3 * w), p,
                                        jax.grad(loss)(p)))
  for _ in range(steps):
    params = step(params)
  return params


def test_a_convnext_a_few_steps_into_training_has_its_groups():
  """20 steps in, gamma ~ 0.04 and dw/bias ~ 2e-3 of dw's output scale: none moved, and
  {stem, gamma_0, gamma_1} passed within rtol without the dw biases of the stream it
  writes ({stem, every dw/bias, per block gamma or pw2}); one dw bias's column is 5% of
  the truncated group's residual. By hand: those four groups and each block's dw."""
  x = rng_images(4, (8, 8, 3))
  model = ConvNeXtNet()
  fn = lambda p, x: model.apply({"params": p}, x)
  params = sgd_steps(fn, model.init(jax.random.key(0), x)["params"], x)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    found = si_groups.find_si_groups(fn, params, x)
  stream = {frozenset(paths("stem/kernel", "stem/bias", "block_0/dw/bias", "block_1/dw/bias",
                            *a, *b))
            for a in (("block_0/gamma",), ("block_0/pw2/kernel", "block_0/pw2/bias"))
            for b in (("block_1/gamma",), ("block_1/pw2/kernel", "block_1/pw2/bias"))}
  dw = {frozenset(paths(f"block_{b}/dw/kernel", f"block_{b}/dw/bias")) for b in (0, 1)}
  assert as_sets(found) == stream | dw, found
  assert max(si_groups.verify_si_groups(fn, random_point(params), found, x).values()) < 1e-4


class StoppedScale(nn.Module):
  """embed -> h + stop_gradient(gamma) * fc(LN(h)) -> LN -> head."""

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(16, name="embed")(x)
    gamma = self.param("gamma", nn.initializers.constant(0.5), (16,))
    h = h + jax.lax.stop_gradient(gamma) * nn.Dense(16, name="fc")(nn.LayerNorm(name="ln")(h))
    return nn.Dense(4, name="head")(nn.LayerNorm(name="ln_f")(h))


def test_a_tensor_read_under_a_stop_gradient_is_not_called_unused():
  """gamma's gradient is 0 for every probe, yet doubling it changes f by ~0.2: it was
  reported unused, silently. Now named, with the change, and a warning."""
  x = rng_images(16, (6,))
  model = StoppedScale()
  params = model.init(jax.random.key(0), x)["params"]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    _, report = si_groups.find_si_groups(lambda p, x: model.apply({"params": p}, x), params,
                                         x, return_report=True)
  assert ("gamma",) not in report.unused
  assert list(report.read_without_gradient) == [("gamma",)]
  assert report.read_without_gradient[("gamma",)] > 1e-2
  said = [str(w.message) for w in caught if "zero gradient" in str(w.message)]
  assert len(said) == 1 and said[0].startswith("gamma has a zero gradient, yet doubling it")


class DenseLNMLP(nn.Module):
  """d -> LayerNorm (torch's epsilon 1e-5) -> gelu MLP -> head."""

  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm(epsilon=1e-5, name="ln")(nn.Dense(16, name="d")(x))
    return nn.Dense(10, name="head")(nn.Dense(16, name="fc2")(nn.gelu(nn.Dense(32, name="fc1")(h))))


@pytest.mark.parametrize("ratio", [1.1e-3, 1.6e-3])
def test_a_union_is_judged_against_the_epsilon_floor(ratio):
  """A bias 1.1-1.6e-3 of its output's scale (kept) leaves {d/kernel} a residual of
  ~2e-3 < rtol; {d/kernel, d/bias} has epsilon's 1.7e-5, above rtol x 2e-3: a union
  bound of rtol x the residual kept the truncated group. By hand: {d/kernel, d/bias}."""
  x = rng_images(8, (6,))
  model = DenseLNMLP()
  params = random_point(model.init(jax.random.key(0), x)["params"])
  kernel = np.asarray(params["d"]["kernel"])
  u = np.random.default_rng(1).standard_normal(16)
  bias = ratio * _rms(kernel) * np.sqrt(kernel.shape[0]) * u / _rms(u)
  params = {**params, "d": {"kernel": kernel, "bias": jnp.asarray(bias, jnp.float32)}}
  fn = lambda p, x: model.apply({"params": p}, x)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    found, report = si_groups.find_si_groups(fn, params, x, return_report=True)
  assert as_sets(found) == {frozenset(paths("d/kernel", "d/bias"))}, found
  assert report.moved == () and list(report.small_only.values()) == [paths("d/bias")]


def _rms(a):
  return float(np.sqrt(np.mean(np.square(a))))


def test_a_dense_general_bias_moves_by_its_kernels_output_scale():
  """A (heads, features) bias beside its (in, heads, features) kernel is a bias: moved by
  the kernel's RMS x sqrt(fan-in 16), as a Dense bias is (it moved by the RMS alone)."""
  rng = np.random.default_rng(0)
  params = {"q": {"kernel": rng.standard_normal((16, 2, 8)).astype(np.float32),
                  "bias": np.zeros((2, 8), np.float32)}}
  moved, which = si_groups.generic_point(params)
  expected = si_groups.GENERIC_SIZE * _rms(params["q"]["kernel"]) * 4.0
  assert which == (("q", "bias"),)
  assert _rms(moved["q"]["bias"]) == pytest.approx(expected, rel=0.35)
