"""Your own model in ten lines: a pre-LayerNorm residual MLP on the embedded digits.

  python experiments/own_model.py --out=runs/own_model/own_model.png

The model and the training loop (``si_jax.engine.own_model_demo``) are written as a
user would write them, knowing nothing of si_jax; si_jax supplies the rest in ten
library lines, marked ``# si_jax k/10`` there (1-8) and here (9-10): the data, the
scale-invariant (SI) groups found numerically, the parameter groups and the optimizer
(SGD with weight decay on the SI tensors, Eq. (2)), the in-step metrics (weight norm,
effective LR, angular update), the loss, and the phase analysis and figure from the
in-memory series.

Expected (defaults; 40 s on 2 shared CPU cores): the 4 groups of the 2-block stream;
11 destabilizations at epochs 34, 53, 67, 77, 86, 99, 108, 119, 131, 141, 148, the norm
of the SI union saw-toothing between 4 and 7; over epochs 34-147 each group's angular
update averages 0.042 rad per step, RMS 0.073, against sqrt(2 eta lam) = 0.077 (the
mean square is what weight decay balances; the rotation comes in bursts). The head is
frozen at a random init of norm ~9 (the paper's fixed last layer of norm 10).
"""

from absl import app, flags

from si_jax.engine import own_model_demo
from si_jax.plots import plotting

_FLAGS = {
    "epochs": flags.DEFINE_integer("epochs", 150, "epochs of SGD"),
    "width": flags.DEFINE_integer("width", 32, "width of the residual stream"),
    "depth": flags.DEFINE_integer("depth", 2, "residual blocks"),
    "lr": flags.DEFINE_float("lr", 0.3, "learning rate eta"),
    "wd": flags.DEFINE_float("wd", 0.01, "weight decay lambda"),
    "train_non_si": flags.DEFINE_bool("train_non_si", False, "train final_ln and the head "
                                      "(else frozen, as in the paper)"),
}
_OUT = flags.DEFINE_string("out", "runs/own_model/own_model.png", "figure path")


def main(argv):
  del argv  # only flags
  hp = {k: f.value for k, f in _FLAGS.items()}
  result = own_model_demo.run(**hp)
  if _OUT.value:
    plotting.plot_series([result.series], _OUT.value,  # si_jax 9/10
                         [f"pre-LN residual, lr {hp['lr']:g}, wd {hp['wd']:g}"],
                         analyses=[result.analysis], hyperparams=[(hp["lr"], hp["wd"])])
  print("SI groups found:", *result.groups, sep="\n  ")
  print(result.analysis.describe())  # si_jax 10/10
  s = result.series
  window, summary = own_model_demo.angular_summary(result)
  print(f"last epoch: loss {s['loss'][-1]:.3g}, test error {s['test_error'][-1]:.3f}; "
        f"{result.seconds:.0f} s. Angular update per step, epochs {s['epoch'][window][0]:g}-"
        f"{s['epoch'][window][-1]:g} (equilibrium sqrt(2 eta lam) = "
        f"{s['equilibrium_angular_update'][-1]:.3g} rad): mean, RMS; effective LR range")
  for name, (mean, rms, elr_min, elr_max) in summary.items():
    print(f"  {name}: {mean:.3g}, {rms:.3g} rad; {elr_min:.3g}..{elr_max:.3g}")


if __name__ == "__main__":
  app.run(main)
