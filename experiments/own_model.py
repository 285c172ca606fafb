"""Your own model in ten lines: a pre-LayerNorm residual MLP on the embedded digits.

  python experiments/own_model.py --out=runs/own_model/own_model.png

The model below is written as a user would write it (flax linen), knowing nothing of
si_jax; so is the training loop (an epoch of SGD steps under ``lax.scan``, one host
transfer per epoch). si_jax supplies the rest in ten library lines, marked ``# si_jax
k/10``: the data, the scale-invariant (SI) groups found numerically, the parameter
groups and the optimizer (SGD with weight decay on the SI tensors, Eq. (2)), the
in-step metrics (weight norm, effective LR, angular update), the loss, and the phase
analysis and figure from the in-memory series.

The residual stream h is read only by layer norms, so everything written into it
scales together: embed, and each block's branch with either its output kernel or,
through the ReLU, its input layer (fc_out's bias always). With ``depth`` blocks that is
2^depth minimal, overlapping groups; the optimizer treats their union as SI and the
metrics are reported per group (``ParamGroups.from_si_groups``). final_ln's scale and
bias and the head are not SI: trained normally (``train_non_si``) or frozen.

Expected (defaults; 40 s on 2 shared CPU cores): the 4 groups of the 2-block stream;
11 destabilizations at epochs 34, 53, 67, 77, 86, 99, 108, 119, 131, 141, 148, the norm
of the SI union saw-toothing between 4 and 7; over epochs 34-147 each group's angular
update averages 0.042 rad per step, RMS 0.073, against sqrt(2 eta lam) = 0.077 (the
mean square is what weight decay balances; the rotation comes in bursts). The head is
frozen at a random init of norm ~9 (the paper's fixed last layer of norm 10).
"""

import dataclasses
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import si_jax
from si_jax import data, metrics, optim
from si_jax.analysis import phases
from si_jax.models import ParamGroups
from si_jax.plots import plotting

BIAS_INIT = nn.initializers.normal(0.1)  # nonzero: find_si_groups leaves zero tensors out
HEAD_INIT = nn.initializers.normal(0.5)


class PreLNBlock(nn.Module):
  hidden: int

  @nn.compact
  def __call__(self, h):
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
    h = nn.Dense(self.width, bias_init=BIAS_INIT, name="embed")(x.reshape(x.shape[0], -1))
    for k in range(self.depth):
      h = PreLNBlock(2 * self.width, name=f"block_{k}")(h)
    h = nn.LayerNorm(name="final_ln")(h)
    return nn.Dense(self.num_classes, kernel_init=HEAD_INIT, name="head")(h)


@dataclasses.dataclass
class Result:
  groups: dict[str, tuple]      # find_si_groups' output
  series: dict[str, np.ndarray]  # per-epoch series (means of the in-step metrics)
  analysis: phases.Analysis
  last_step: dict[str, Any]     # the last step's params, grads, new params and metrics
  init_params: Any
  seconds: float


def run(epochs=150, width=32, depth=2, lr=0.3, wd=0.01, batch_size=128, seed=0,
        train_non_si=False, out=None) -> Result:
  """Trains the model with si_jax's optimizer and metrics; analyses and plots it."""
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
  if out:
    plotting.plot_series([series], out, [f"pre-LN residual, lr {lr:g}, wd {wd:g}"],  # si_jax 9/10
                         analyses=[analysis], hyperparams=[(lr, wd)])
  last = dict(zip(("params", "grads", "new_params"), trace), metrics=jax.device_get(
      {k: v[-1] for k, v in ms.items()}))
  return Result(si_groups, series, analysis, last, init_params, time.time() - start)


_FLAGS = {
    "epochs": flags.DEFINE_integer("epochs", 150, "epochs of SGD"),
    "width": flags.DEFINE_integer("width", 32, "width of the residual stream"),
    "depth": flags.DEFINE_integer("depth", 2, "residual blocks"),
    "lr": flags.DEFINE_float("lr", 0.3, "learning rate eta"),
    "wd": flags.DEFINE_float("wd", 0.01, "weight decay lambda"),
    "train_non_si": flags.DEFINE_bool("train_non_si", False, "train final_ln and the head "
                                      "(else frozen, as in the paper)"),
    "out": flags.DEFINE_string("out", "runs/own_model/own_model.png", "figure path"),
}


def main(argv):
  del argv  # only flags
  result = run(**{k: f.value for k, f in _FLAGS.items()})
  print("SI groups found:", *result.groups, sep="\n  ")
  print(result.analysis.describe())  # si_jax 10/10
  s, onsets = result.series, result.analysis.onsets
  window = slice(onsets[0], onsets[-1]) if len(onsets) > 1 else slice(len(s["epoch"]) // 2, None)
  print(f"last epoch: loss {s['loss'][-1]:.3g}, test error {s['test_error'][-1]:.3f}; "
        f"{result.seconds:.0f} s. Angular update per step, epochs {s['epoch'][window][0]:g}-"
        f"{s['epoch'][window][-1]:g} (equilibrium sqrt(2 eta lam) = "
        f"{s['equilibrium_angular_update'][-1]:.3g} rad): mean, RMS; effective LR range")
  for name in result.groups:
    mean, rms = s[name + "/angular_update"][window], s[name + "/angular_update_rms"][window]
    elr = s[name + "/effective_lr"][window]
    print(f"  {name}: {mean.mean():.3g}, {np.sqrt(np.mean(rms**2)):.3g} rad; "
          f"{elr.min():.3g}..{elr.max():.3g}")


if __name__ == "__main__":
  app.run(main)
