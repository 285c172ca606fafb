"""A model and a training loop written without si_jax, with si_jax in ten marked lines.

The model is a pre-LayerNorm residual MLP on the embedded digits, written as a user
would write it (flax linen); so is the loop (an epoch of SGD steps under ``lax.scan``,
one host transfer per epoch). si_jax supplies the rest, marked ``# si_jax k/10`` here
(1-8) and in experiments/own_model.py (9-10): the data, the scale-invariant (SI)
groups found numerically, the parameter groups and the optimizer (SGD with weight decay
on the SI tensors, Eq. (2)), the in-step metrics, the loss, the phase analysis, the
figure and its description.

The residual stream h is read only by layer norms, so everything written into it
scales together: embed, and each block's branch with either its output kernel or,
through the ReLU, its input layer (fc_out's bias always). With ``depth`` blocks that is
2^depth minimal, overlapping groups; the optimizer treats their union as SI and the
metrics are reported per group (``ParamGroups.from_si_groups``). final_ln's scale and
bias and the head are not SI: trained normally (``train_non_si``) or frozen.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import si_jax
from si_jax import data, metrics, optim
from si_jax.analysis import phases
from si_jax.models import ParamGroups

BIAS_INIT = nn.initializers.normal(0.1)  # nonzero: find_si_groups leaves zero tensors out
HEAD_INIT = nn.initializers.normal(0.5)


class PreLNBlock(nn.Module):
  """h + fc_out(relu(fc_in(LayerNorm(h)))), the LayerNorm without scale and bias."""
  hidden: int

  @nn.compact
  def __call__(self, h):
    """The block on the stream ``h`` [batch, width]."""
    a = nn.LayerNorm(use_scale=False, use_bias=False, name="ln")(h)
    a = nn.relu(nn.Dense(self.hidden, bias_init=BIAS_INIT, name="fc_in")(a))
    return h + nn.Dense(h.shape[-1], bias_init=BIAS_INIT, name="fc_out")(a)


class PreLNResidual(nn.Module):
  """flatten -> embed -> ``depth`` pre-LN residual blocks -> LayerNorm -> head."""
  width: int = 32
  depth: int = 2
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    """Logits of the images ``x`` [batch, ...]."""
    h = nn.Dense(self.width, bias_init=BIAS_INIT, name="embed")(x.reshape(x.shape[0], -1))
    for k in range(self.depth):
      h = PreLNBlock(2 * self.width, name=f"block_{k}")(h)
    h = nn.LayerNorm(name="final_ln")(h)
    return nn.Dense(self.num_classes, kernel_init=HEAD_INIT, name="head")(h)


@dataclasses.dataclass
class Result:
  """What ``run`` trained, measured and found."""
  groups: dict[str, tuple]      # find_si_groups' output
  series: dict[str, np.ndarray]  # per-epoch series (means of the in-step metrics)
  analysis: phases.Analysis
  last_step: dict[str, Any]     # the last step's params, grads, new params and metrics
  init_params: Any
  seconds: float


def run(epochs=150, width=32, depth=2, lr=0.3, wd=0.01, batch_size=128, seed=0,
        train_non_si=False) -> Result:
  """Trains ``PreLNResidual`` with si_jax's optimizer and metrics and analyses it."""
  start = time.time()
  ds = data.load_dataset("digits", "embedded")  # si_jax 1/10
  model = PreLNResidual(width, depth, ds.num_classes)
  params = jax.jit(model.init)(jax.random.key(seed), ds.train_images[:1])["params"]
  apply = lambda p, x: model.apply({"params": p}, x)
  si_groups = si_jax.find_si_groups(apply, params, ds.train_images[:64])  # si_jax 2/10
  groups = ParamGroups.from_si_groups(si_groups, train_non_si=train_non_si)  # si_jax 3/10
  tx = optim.make_optimizer(params, groups, name="sgd", lr=lr, wd=wd)  # si_jax 4/10
  loss_fn = lambda p, x, y: metrics.cross_entropy(apply(p, x), y).mean()  # si_jax 5/10

  def step(carry, batch):
    p, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(p, *batch)
    updates, opt_state = tx.update(grads, opt_state, p)
    new_p = jax.tree.map(jnp.add, p, updates)
    m = metrics.si_metrics(p, grads, new_p, si_groups, opt_state=opt_state)  # si_jax 6/10
    return (new_p, opt_state), ({"loss": loss, **m}, (p, grads, new_p))

  @jax.jit
  def epoch(p, opt_state, x, y):  # one host transfer per epoch
    (p, opt_state), (ms, trace) = jax.lax.scan(step, (p, opt_state), (x, y))
    return p, opt_state, ms, jax.tree.map(lambda a: a[-1], trace)

  @jax.jit
  def test_error(p):
    return 1.0 - metrics.correct(apply(p, ds.test_images), ds.test_labels).mean()  # si_jax 7/10

  init_params, opt_state, records = params, tx.init(params), []
  steps = len(ds.train_labels) // batch_size  # drop the last partial batch
  for e in range(epochs):
    order = np.random.default_rng([seed, e]).permutation(len(ds.train_labels))[:steps * batch_size]
    x = ds.train_images[order].reshape(steps, batch_size, *ds.image_shape)
    y = ds.train_labels[order].reshape(steps, batch_size)
    params, opt_state, ms, trace = epoch(params, opt_state, x, y)
    records.append({"epoch": e + 1, "step": (e + 1) * steps, "test_error": test_error(params),
                    **{k: np.mean(v) for k, v in ms.items()},  # epoch means, as si_jax logs
                    **{k + "_rms": np.sqrt(np.mean(np.square(v)))  # the steps' RMS rotation
                       for k, v in ms.items() if k.endswith("angular_update")}})
  series = {k: np.asarray([r[k] for r in records], np.float64) for k in records[0]}
  analysis = phases.analyze(series, reference_loss=np.log(ds.num_classes))  # si_jax 8/10
  last = dict(zip(("params", "grads", "new_params"), trace), metrics=jax.device_get(
      {k: v[-1] for k, v in ms.items()}))
  return Result(si_groups, series, analysis, last, init_params, time.time() - start)


def angular_summary(result: Result) -> tuple[slice, dict[str, tuple[float, ...]]]:
  """Each group's rotation over the destabilizations' span (the second half if < 2).

  Returns:
    The epochs' slice and, per group, (mean angular update per step, its RMS, the
    lowest and highest effective LR) over it.
  """
  s, onsets = result.series, result.analysis.onsets
  window = slice(onsets[0], onsets[-1]) if len(onsets) > 1 else slice(len(s["epoch"]) // 2, None)
  out = {}
  for name in result.groups:
    mean, rms = s[name + "/angular_update"][window], s[name + "/angular_update_rms"][window]
    elr = s[name + "/effective_lr"][window]
    out[name] = (mean.mean(), np.sqrt(np.mean(rms**2)), elr.min(), elr.max())
  return window, out
