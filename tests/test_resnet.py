"""The pre-activation ResNet-18 block and its SI groups, without PyTorch.

* The block recomputed in float64 numpy from its input and kernels, with the wiring of
  the original code: out = ReLU(BN1(x)), y = Conv3x3(ReLU(BN2(Conv3x3_s(out)))) +
  shortcut, shortcut = Conv1x1_s(BN_s(out)) when downsampling, else x. Measured
  (width 4, batch 16 of 16x16x3): relative error <= 1.4e-7 (float32 round-off); a
  shortcut reading x instead of out is off by 0.47-0.52.
* The scale-invariance identities of the paper, (1a) f(cx) = f(x), <grad f, x> = 0
  and (1b) grad f(cx) = grad f(x) / c, for all declared groups scaled jointly, in
  float64 with norm epsilon 0: measured <= 2e-16 (value, orthogonality) and <= 3e-14
  (grad scaling) for c in {3, 0.5, 1e-3}. Float64 keeps the check clear of ReLU kinks:
  in float32 a pre-activation of ~4e-6 can change sign under a rescaling (round-off),
  which moves the gradient by ~1% without any fault in the groups (seen with instance
  norm on the batch of test_invariance.py).
* Each residual-stream group is minimal: leaving out any one writer breaks (1a).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from si_jax import invariance
from si_jax.engine import step

from conftest import make, rng_images

EPS = 1e-5


def batch(n=16, shape=(16, 16, 3)):
  return rng_images(n, shape, seed=7), np.arange(n, dtype=np.int32) % 10


def conv_np(x_NHWC, w_HWIO, stride=1):
  """Bias-free conv with padding k // 2 on both sides, as torch.nn.Conv2d."""
  k, pad = w_HWIO.shape[0], w_HWIO.shape[0] // 2
  padded = np.pad(x_NHWC, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  windows = sliding_window_view(padded, (k, k), axis=(1, 2))[:, ::stride, ::stride]
  return np.einsum("nhwcij,ijco->nhwo", windows, w_HWIO)


def batch_norm_np(x_NHWC):
  """Train-mode batch norm without affine parameters (biased variance)."""
  mean, var = x_NHWC.mean(axis=(0, 1, 2)), x_NHWC.var(axis=(0, 1, 2))
  return (x_NHWC - mean) / np.sqrt(var + EPS)


def block_np(x, p, stride):
  relu = lambda a: np.maximum(a, 0.0)
  out = relu(batch_norm_np(x))
  kernel = lambda name: np.asarray(p[name]["kernel"], np.float64)
  if "shortcut_conv" in p:
    shortcut = conv_np(batch_norm_np(out), kernel("shortcut_conv"), stride)
  else:
    shortcut = x
  residual = conv_np(relu(batch_norm_np(conv_np(out, kernel("conv1"), stride))), kernel("conv2"))
  return residual + shortcut


@pytest.fixture(scope="module")
def block_io():
  """Each block's input and output in one train-mode pass of the flax ResNet."""
  x, _ = batch()
  model, v, _ = make("resnet18_si", width=4, input_shape=x.shape[1:])
  _, state = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=["batch_stats", "intermediates"],
      capture_intermediates=True))(v, x)
  inter = state["intermediates"]
  outputs = {name: np.asarray(inter[name]["__call__"][0], np.float64)
             for name in inter if name.startswith("layer")}
  inputs = {"layer1_0": np.asarray(inter["stem"]["__call__"][0], np.float64)}
  names = sorted(outputs)  # layer1_0, layer1_1, layer2_0, ...
  inputs.update({b: outputs[a] for a, b in zip(names, names[1:])})
  return v["params"], inputs, outputs, state["batch_stats"]


@pytest.mark.parametrize("name,stride", [("layer1_1", 1), ("layer2_0", 2), ("layer4_0", 2)])
def test_block_matches_the_preactivation_wiring_by_hand(block_io, name, stride):
  params, inputs, outputs, _ = block_io
  expected = block_np(inputs[name], params[name], stride)
  err = np.linalg.norm(outputs[name] - expected) / np.linalg.norm(expected)
  assert err < 1e-5, err


def test_downsampling_shortcut_norm_sees_the_preactivated_input(block_io):
  # running mean after one pass: momentum 0.1 times the batch mean of what it reads,
  # here ReLU(BN1(x)) (positive, ~0.4 per channel), not x (the stream itself)
  _, inputs, _, stats = block_io
  for name in ("layer2_0", "layer3_0", "layer4_0"):
    read = np.maximum(batch_norm_np(inputs[name]), 0.0)
    np.testing.assert_allclose(stats[name]["shortcut_norm"]["mean"],
                               0.1 * read.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-7)
    wrong = 0.1 * inputs[name].mean(axis=(0, 1, 2))
    assert np.abs(stats[name]["shortcut_norm"]["mean"] - wrong).max() > 1e-3


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_identities_hold_for_all_groups_jointly_in_float64(norm):
  # The union of the groups scaled by one c; the groups one by one are checked in
  # float32 in test_invariance.py (a gradient each, too slow to repeat in float64).
  x, y = batch()
  model, v, g = make("resnet18_si", norm=norm, width=4, input_shape=x.shape[1:],
                     norm_epsilon=0.0)
  with jax.enable_x64(True):
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), v["params"])
    x64 = jnp.asarray(x, jnp.float64)
    f = lambda p: step.loss_and_aux(model, p, v["batch_stats"], x64, y)[0]
    fn = jax.jit(lambda p, c: invariance.invariance_residuals(f, p, g.si_groups, c))
    for c in (3.0, 0.5, 1e-3):
      res = {k: float(r) for k, r in fn(params, jnp.float64(c)).items()}
      assert len(res) == 3
      for key, r in res.items():
        assert r < (1e-11 if key.endswith("grad_scaling") else 1e-13), (norm, c, key, r)


def test_each_stream_group_is_minimal():
  # Scaling all writers of a stage but one changes the function (the left-out conv's
  # share of the stream changes), so no writer could be a group of its own. Measured
  # on the logits: joint <= 7e-7 (round-off), leaving one out >= 0.15.
  x, y = batch()
  model, v, g = make("resnet18_si", width=4, input_shape=x.shape[1:], norm_epsilon=0.0)
  logits = jax.jit(lambda p: step.loss_and_aux(model, p, v["batch_stats"], x, y)[1][0])
  base = np.asarray(logits(v["params"]))
  change = lambda p: np.linalg.norm(np.asarray(logits(p)) - base) / np.linalg.norm(base)
  for stage in range(1, 5):
    writers = g.si_groups[f"stage{stage}_stream"]
    assert len(writers) == 3
    assert change(invariance.scale_paths(v["params"], writers, 3.0)) < 1e-5, stage
    for left_out in writers:
      rest = tuple(p for p in writers if p != left_out)
      assert change(invariance.scale_paths(v["params"], rest, 3.0)) > 0.05, (stage, left_out)
