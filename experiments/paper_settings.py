"""The settings the paper's appendix states, figure by figure, next to our configs'
resolved values (docs/paper_settings.md is this script's output).

  python experiments/paper_settings.py > docs/paper_settings.md
  python experiments/paper_settings.py --appendix=/work/shared/reference/paper_appendix.txt

Every row quotes the appendix line it comes from; the quote is checked against that
line of ``--appendix`` (skipped, with a note, when the file is absent). Our value is read
from the config file with its variant, every member resolved
(``si_jax.engine.experiment.member_config``), or from a script's defaults. A row whose value
differs from the appendix's, or that the appendix does not state, must carry an
explanation: the script fails on an unexplained difference (and on a quote not found).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import sys
from typing import Any, Callable

from absl import flags

from si_jax.engine import experiment
from si_jax.programs import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_APPENDIX = flags.DEFINE_string("appendix", "/work/shared/reference/paper_appendix.txt",
                                "the appendix text whose line numbers the rows quote")
RELEASED = "the released code (tipt0p/periodic_behavior_bn_wd, run_train_and_test.py)"


def load_module(path: str):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3],
                                                os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def run_configs(path: str, variant: str, members: tuple[str, ...] | None = None) -> list:
  """The resolved run config of every member (or of the named ones, or the config)."""
  config = load_module(path).get_config(variant)
  if "experiment" not in config:
    return [config]
  return [experiment.member_config(config, o) for n, _, o in experiment.member_overrides(config)
          if members is None or n in members]


def _fmt(v: Any) -> str:
  return f"{v:g}" if isinstance(v, float) else str(v)


def _data_subset(size, subset) -> str:
  return "all" if size is None else f"{size} ({subset})"


# What a row reads from a run config: setting name -> getter
GETTERS: dict[str, Callable[[Any], Any]] = {
    "model": lambda c: c.model.name,
    "width": lambda c: c.model.width,
    "normalization": lambda c: c.model.norm,
    "dataset": lambda c: c.data.name,
    "train set": lambda c: _data_subset(c.data.train_size, c.data.subset),
    "test set": lambda c: _data_subset(c.data.test_size, c.data.subset),
    "non-SI parameters (BN affine, last layer)": lambda c: "trained" if c.model.train_non_si
    else "fixed",
    "last-layer norm": lambda c: ("PyTorch init" if c.model.last_layer_norm is None
                                  else c.model.last_layer_norm),
    "optimizer": lambda c: c.optim.name,
    "batch": lambda c: c.train.batch_size if c.train.mode == "sgd" else "full",
    "GD batch statistics": lambda c: ("ghost batches of " + str(c.train.micro_batch_size)
                                      if c.train.micro_batch_size else "exact, whole set"),
    "lr": lambda c: c.optim.lr,
    "wd": lambda c: c.optim.wd,
    "lr x wd": lambda c: float(f"{c.optim.lr * c.optim.wd:.6g}"),
    "momentum": lambda c: c.optim.momentum,
    "lr schedule": lambda c: c.optim.schedule,
    "augmentation": lambda c: "crop 32 pad 4 + flip" if c.data.augment else "none",
    "epochs": lambda c: c.train.epochs,
    "GD steps": lambda c: c.train.epochs,
    "logged": lambda c: "per step (batch)" if c.train.log_every == "step" else "per epoch",
    "full-set gradient pass": lambda c: {-1: "released thinning", 0: "off", 1: "every epoch"}.get(
        c.train.grad_pass_every, f"every {c.train.grad_pass_every} epochs"),
    "test set evaluated every": lambda c: c.train.eval_every,
    "init": lambda c: "PyTorch (si_jax.models.init_variables)",
    "init scale of the SI weights": lambda c: c.model.init_scale,
    "SI weight norm fixed": lambda c: c.optim.fix_si_norm,
}


@dataclasses.dataclass(frozen=True)
class Row:
  setting: str
  line: int | None  # the appendix line, None when the appendix does not state it
  quote: str  # the words of that line the value comes from
  paper: Any  # the appendix's value in our terms (None: not stated)
  note: str = ""  # why ours differs, or where ours comes from when not stated
  ours: Any = None  # a fixed value of ours (a script default); None: read with GETTERS
  match: Callable[[str], bool] | None = None  # how ours is compared when not by equality


@dataclasses.dataclass(frozen=True)
class Figure:
  title: str
  command: str
  runs: tuple[tuple[str, str, tuple[str, ...] | None], ...]  # (config, variant, members)
  rows: tuple[Row, ...]
  text: str = ""  # said before the table


L222_CONV = "a three-layer convolutional neural network (ConvNet) and ResNet-18"
L222_DATA = "on CIFAR-10 [15] and CIFAR-100 [16] datasets"
L222_W32 = "width factor of 32 for fully scale-invariant networks on CIFAR-10"
L222_W64 = "width factor of 64 for all experiments on CIFAR-100 and experiments with practical"
L222_RESNET = "We use ResNet of standard width."
LOG_NOTE = ("ours: the train loss every epoch, its gradient part on the thinning of the "
            "released train.py's do_report() by default (train.grad_pass_every=-1: every "
            "epoch to 20, every 5th to 100, ...); the released launcher sets save_freq 1, so "
            "its get_info.py computes every epoch, as line 230 says: "
            "--config.train.grad_pass_every=1 does the same")
NOT_STATED_RELEASED = f"not stated in the appendix; ours from {RELEASED}"


def model_rows(model="convnet_si", width=32, dataset="cifar10", last=10.0) -> tuple[Row, ...]:
  """Appendix B's architecture, data and fixed non-SI weights for one figure."""
  width_quote = {32: L222_W32, 64: L222_W64}.get(width, L222_RESNET)
  if model == "resnet18_si":
    width_quote = L222_RESNET
  last_row = (Row("last-layer norm", 224, "so that its norm equals 10", 10.0) if last == 10.0
              else Row("last-layer norm", 305, "the last layer’s weight norm up to 20", last))
  return (Row("model", 222, L222_CONV, model),
          Row("width", 222, width_quote, width),
          Row("dataset", 222, L222_DATA, dataset),
          Row("init", 222, "We use the standard PyTorch initialization for all layers.",
              "PyTorch (si_jax.models.init_variables)"),
          Row("non-SI parameters (BN affine, last layer)", 224,
              "we fix all non-scale-invariant weights", "fixed"),
          Row("normalization", 224, "For BN layers, we use zero mean and unit variance.",
              "batch"),
          last_row)


def sgd_rows(momentum=0.0, augment="none", log="per epoch") -> tuple[Row, ...]:
  """Appendix B's training and logging for an SGD figure."""
  return (Row("optimizer", 226, "We train all networks using SGD", "sgd"),
          Row("batch", 226, "with a batch size of 128", 128),
          Row("momentum", 226, "In the experiments with momentum, we use the momentum of 0.9.",
              momentum),
          Row("augmentation", 226, "random crop (size: 32, padding: 4) and random horizontal "
              "flip", augment),
          Row("lr schedule", 367, "usage of learning rate schedules", "constant"),
          Row("train set", 222, L222_DATA, "all"),
          Row("test set", 222, L222_DATA, "all"),
          *log_rows(log))


def log_rows(log: str) -> tuple[Row, ...]:
  """Appendix B's logging: per epoch with an additional full pass, or per step (batch)."""
  if log != "per epoch":
    return (Row("logged", 230, "We log all metrics after each (S)GD step in three specified "
                "figures, computing train loss and its gradients over a batch", log),)
  return (Row("logged", 230, "we log all metrics after each epoch", log),
          Row("full-set gradient pass", 230, "computing train loss and its gradients by "
              "making an additional pass", "every epoch", LOG_NOTE))


def gd_rows(wd, lr_note: str, lr=None, lr_line=None, lr_quote="", log="per epoch",
            steps_note="not stated in the appendix") -> tuple[Row, ...]:
  """Appendix B/C's full-batch GD settings."""
  rows = [Row("batch", 234, "full-batch GD training", "full"),
          Row("train set", 228, "4.5K-sized random subset of the train dataset", "4500 (random)"),
          Row("test set", 228, "5K randomly chosen test objects", "5000 (random)"),
          Row("GD batch statistics", None, "", None,
              "not stated in the appendix; ours: the released code's (sum-reduced losses "
              "of batch-128 train-mode passes, divided by N: BN statistics of 128 "
              "examples); --config.train.micro_batch_size=None for exact statistics"),
          Row("momentum", 226, "In the experiments with momentum", 0.0),
          Row("lr schedule", 367, "usage of learning rate schedules", "constant"),
          Row("wd", *wd),
          Row("lr", lr_line, lr_quote, lr, lr_note),
          Row("GD steps", None, "", None, steps_note),
          *log_rows(log)[:1],
          Row("test set evaluated every", 230, "we log all metrics after each epoch", 1,
              "one GD step is one epoch: every step's record holds the train loss and the "
              "gradient norms of the full-batch step itself; only the test set (5K images) "
              "is evaluated every 50 steps, to keep 10-20K steps affordable")]
  return tuple(rows)


def _defaults(fn) -> dict[str, Any]:
  return {k: p.default for k, p in inspect.signature(fn).parameters.items()
          if p.default is not inspect.Parameter.empty}


def theory_figures() -> tuple[Figure, ...]:
  """Figs. 8, 9 and 14: the defaults of experiments/theory_figures.py and si_jax.analysis.toy."""
  from si_jax.analysis import toy
  tf = load_module("experiments/theory_figures.py")
  f8, f9, gd = _defaults(tf.figure8), _defaults(tf.figure9), _defaults(toy.gradient_descent)
  cmd = "python experiments/theory_figures.py --out=docs/figures"
  return (
      Figure("Fig. 8 (appendix A.4.1): phi of Eq. (12)", cmd, (), (
          Row("alpha", 86, "for $\\alpha = 0.1$", 0.1, ours=f8["alpha"]),)),
      Figure("Fig. 9 (appendix A.4.2): a beta-undetermined sequence", cmd, (), (
          Row("alpha", 157, "$\\alpha = 0.1, a = 1, b = 10", 0.1, ours=f9["alpha"]),
          Row("a, b", 157, "$\\alpha = 0.1, a = 1, b = 10", "1, 10",
              ours=f"{f9['a']:g}, {f9['b']:g}"),
          Row("beta_t", 157, "\\beta_t \\sim \\mathcal{U}(a, b)", "U(a, b)", ours="U(a, b)"),
          Row("x_0", None, "", None, "not stated; ours above sqrt(b / alpha) = 10 so that "
              "the linear convergence from above (Proposition 5) shows", ours=f9["x0"]),
          Row("steps", None, "", None, "not stated; ours shows the sequence settle",
              ours=f9["steps"]))),
      Figure("Fig. 14 (appendix E): GD on f(x, y) = x^2 / (x^2 + y^2)", cmd, (), (
          Row("initial point", 268, "$(x_0, y_0) = (0.01, 1.0)$", "(0.01, 1)",
              ours="(" + ", ".join(f"{v:g}" for v in gd["w0"]) + ")"),
          Row("lr", 268, "learning rate $\\eta = 1$", 1.0, ours=gd["lr"]),
          Row("wd", 268, "with and without weight decay", None,
              "the value is not stated; ours 0 and 0.01 (theory_figures.figure14)",
              ours="0, 0.01"),
          Row("steps", None, "", None, "not stated", ours=_defaults(tf.figure14)["steps"]))),
  )


def hyper_rows(lr, wd, epochs=1001, lr_row=None, wd_row=None) -> tuple[Row, ...]:
  """lr, wd and epochs, by default as not stated (the released code's values)."""
  return (lr_row or Row("lr", None, "", None, lr),
          wd_row or Row("wd", None, "", None, wd),
          Row("epochs", None, "", None, NOT_STATED_RELEASED + f" (epochs {epochs})"))


def family_cmd(config: str, variant: str = "") -> str:
  return f"python experiments/run_family.py --config=configs/{config}.py" + (
      f":{variant}" if variant else "")


FIG6_NOTE = ("not stated for Fig. 6; ours are Fig. 20's (line 332), which 'supplements "
             "Figure 6' (line 338)")


def sgd_figures() -> tuple[Figure, ...]:
  """The main text's SGD figures as far as the appendix speaks of them (Figs. 1-7)."""
  one_period = "python experiments/one_period.py --config=configs/one_period.py"
  fig13_sgd = Row("lr", 263, "0.001 / 0.01 for SGD", None,
                  "not stated for Fig. 4; ours are Fig. 13's SGD panel (line 263), phase B "
                  "of the same kind of run")
  return (
      Figure("Figs. 1-3 (main text; appendix B, Fig. 3 cited in J): SGD, ConvNet on CIFAR-10",
             family_cmd("lr_sweep") + " (and configs/convnet_cifar10.py, the lr 0.01 run)",
             (("configs/lr_sweep.py", "", None), ("configs/convnet_cifar10.py", "", None)),
             model_rows() + sgd_rows() + hyper_rows(
                 "not stated ('various', line 226); ours: the four runs of the released "
                 "notebook's Figure 2 (Plots.ipynb: lr 1.0, 0.03, 0.01, 0.001 at wd 0.001)",
                 NOT_STATED_RELEASED)),
      Figure("Fig. 4 (main text): one period logged per step", one_period,
             (("configs/one_period.py", "", None),),
             model_rows() + sgd_rows(log="per step (batch)") + (
                 fig13_sgd, dataclasses.replace(fig13_sgd, setting="wd"),
                 Row("epochs", None, "", None, "not stated; ours long enough for the warm-up "
                     "and the first periods at lr 0.01 / wd 0.001 (not run at this scale)"))),
      Figure("Fig. 5 (main text)", "", (), (),
             text="Not described in the appendix (line 234: Fig. 12 'replicates the ablation "
             "experiment with fixing the weight norm' for GD, below). An SGD version: any "
             "config with `--config.optim.fix_si_norm=True` (the norm fixed at "
             "initialization; `model.init_scale` for other scales; `model.init_checkpoint` to "
             "start from a step of a regular run)."),
      Figure("Fig. 6 (main text; appendix H): minima of different periods, ConvNet on CIFAR-10",
             "python experiments/minima_similarity.py --config=configs/minima_similarity.py",
             (("configs/minima_similarity.py", "", None),),
             model_rows() + sgd_rows() + hyper_rows(FIG6_NOTE, FIG6_NOTE)),
  )


GD_STEPS = ("not stated in the appendix; ours long enough for several periods at lr 0.5-1 "
            "(paper scale not run here)")


def gd_figures() -> tuple[Figure, ...]:
  """Appendix C and D: full-batch GD (Figs. 10-12) and Fig. 13's two panels."""
  gd_cmd = "python experiments/gd_fixed_norm.py --config=configs/gd.py"
  one_period = "python experiments/one_period.py --config=configs/one_period.py"
  wd4 = (218, "with the weight decay of 0.0001", 1e-4)
  lower = Row("lower envelope l(t)", 250, "\\ell(t) = \\frac{c}{(t-t_0)^2}", "c / (t - t0)^2",
              "one_period.py passes lower_power=2 for GD", ours="c / (t - t0)^2")
  consts = Row("constants c, C", 250, "We handpick constants", "handpicked so (17) holds",
               "ours are fitted (the extreme values of g~ (t - t0)^p) on the first half of "
               "phase B and checked on the second half: fitted and checked on the same steps "
               "they would hold by construction", ours="fitted on the first half of phase B")
  return (
      Figure("Fig. 10 (appendix C): full-batch GD, several learning rates", gd_cmd,
             (("configs/gd.py", "", ("lr_0p1", "lr_0p5", "lr_1", "lr_2")),),
             model_rows() + gd_rows(wd4, "not stated ('different learning rates', line 218); "
                                    "ours span Figs. 11-13's 0.5 and Fig. 12's 1.0",
                                    steps_note=GD_STEPS)),
      Figure("Fig. 11 (appendix C): one GD period logged per step", one_period + ":gd",
             (("configs/one_period.py", "gd", None),),
             model_rows() + gd_rows((239, "weight decay of 0.001", 0.001), "", 0.5, 239,
                                    "the learning rate of 0.5", log="per step (batch)",
                                    steps_note=GD_STEPS)),
      Figure("Fig. 12 (appendix C): GD with the SI weight norm fixed", gd_cmd + " --reference=lr_1",
             (("configs/gd.py", "", ("fixed_init_x0p5", "fixed_init_x1", "fixed_init_x2")),),
             model_rows() + gd_rows((244, "weight decay of 0.0001", 1e-4), "", 1.0, 244,
                                    "learning rate of 1.0", steps_note=GD_STEPS) + (
                 Row("SI weight norm fixed", 244, "the weight norm is fixed", True),
                 Row("init scale of the SI weights", 244, "random initialization of different "
                     "scales", None, "the scales are not stated; ours 0.5, 1, 2. The right "
                     "pair (norm fixed at a step before a destabilization) is added by "
                     "gd_fixed_norm.py from the lr-1.0 run's checkpoint (--reference=lr_1)"))),
      Figure("Fig. 13, SGD panel (appendix D)", one_period, (("configs/one_period.py", "", None),),
             model_rows() + sgd_rows(log="per step (batch)") + (
                 Row("lr", 263, "0.001 / 0.01 for SGD", 0.01),
                 Row("wd", 263, "0.001 / 0.01 for SGD", 0.001),
                 dataclasses.replace(lower, quote="$\\ell(t) = \\frac{c}{t-t_0}$",
                                     paper="c / (t - t0)", ours="c / (t - t0)",
                                     note="fig13_delta_bounds.py's default lower_power=1"),
                 consts)),
      Figure("Fig. 13, GD panel (appendix D)", one_period + ":gd13",
             (("configs/one_period.py", "gd13", None),),
             model_rows() + gd_rows((263, "0.0001 / 0.5 for GD", 1e-4), "", 0.5, 263,
                                    "0.0001 / 0.5 for GD", log="per step (batch)",
                                    steps_note=GD_STEPS) + (lower, consts)),
  )


def init_last_layer_norm(model: str, width: int, classes: int, seed: int = 0) -> float:
  """The Frobenius norm of the last layer's weight matrix at PyTorch's init (not
  rescaled), as ``state.create_state`` draws it for ``seed``; about sqrt(classes / 3)
  (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) entries, classes x fan_in of them)."""
  import jax
  import numpy as np

  from si_jax import models
  net = models.create_model(model, num_classes=classes, width=width)
  key = jax.random.split(jax.random.fold_in(jax.random.key(seed), 0))[0]
  params = models.init_variables(net, key, (32, 32, 3), None)["params"]
  weights = models.get_path(params, models.param_groups(net).last_layer)
  return float(np.linalg.norm(np.asarray(weights)))


def product_rows() -> tuple[Row, ...]:
  return (Row("lr x wd", None, "", None, "Fig. 15's products are not stated (line 290: "
              "'different values of the product'); ours span the periodic range of Figs. 3 "
              "and 18 (Fig. 3's lr 0.03 and 0.01 at wd 1e-3, and 10x above), each at wd 1e-4, "
              "1e-3, 1e-2 (lr = product / wd) plus Proposition 4's rescaled runs (line 301)"),
          Row("epochs", None, "", None, NOT_STATED_RELEASED + " (epochs 1001)"))


def sweep_figures() -> tuple[Figure, ...]:
  """Appendix F: fixed product (Figs. 15-16), lr sweeps (17) and wd sweeps (18)."""
  out = [Figure("Figs. 15-16 (appendix F.1): fixed lr x wd products, ConvNet on CIFAR-10",
                family_cmd("lr_wd_product"), (("configs/lr_wd_product.py", "", None),),
                model_rows() + sgd_rows() + product_rows())]
  lr_note = ("not stated; ours the Fig. 3 values (1.0, 0.03, 0.01, 0.001), which include "
             "the 0.03 of ResNet on CIFAR-10 named on line 305")
  wd_note = "not stated ('fixed weight decay', line 295); ours 0.001, as in Fig. 3"
  for variant, model, width, dataset, last in (
      ("cifar100", "convnet_si", 64, "cifar100", 20.0),
      ("resnet", "resnet18_si", 64, "cifar10", 10.0),
      ("resnet_cifar100", "resnet18_si", 64, "cifar100", 10.0)):
    rows = model_rows(model, width, dataset, last) + sgd_rows() + hyper_rows(lr_note, wd_note)
    if variant == "resnet_cifar100":  # line 305 raises the norm to 20 for the ConvNet only
      rows = tuple(dataclasses.replace(r, note="line 305 raises the norm to 20 for the "
                                       "ConvNet on CIFAR-100; ResNet-18 keeps line 224's 10")
                   if r.setting == "last-layer norm" else r for r in rows)
    out.append(Figure(f"Fig. 17 (appendix F.2), {model} on {dataset}: lr sweep at fixed wd",
                      family_cmd("lr_sweep", variant), (("configs/lr_sweep.py", variant, None),),
                      rows))
  out.append(Figure("Fig. 18 (appendix F.3): wd sweep at fixed lr, ConvNet on CIFAR-10 "
                    "(`:cifar100`, `:resnet`, `:resnet_cifar100` as in Fig. 17)",
                    family_cmd("wd_sweep"), (("configs/wd_sweep.py", "", None),),
                    model_rows() + sgd_rows() + hyper_rows(
                        "not stated ('fixed learning rate', line 310); ours 0.01, the main "
                        "text's", "not stated; ours 0.01 .. 1e-5 in decades")))
  return tuple(out)


def last_layer_figures() -> tuple[Figure, ...]:
  """Appendix G (Fig. 19), with PyTorch's initial last-layer norms computed."""
  out = []
  for variant, model, width, dataset, classes in (("", "convnet_si", 32, "cifar10", 10),
                                                  ("resnet_cifar100", "resnet18_si", 64,
                                                   "cifar100", 100)):
    init = init_last_layer_norm(model, width, classes)
    rows = tuple(r for r in model_rows(model, width, dataset) if r.setting != "last-layer norm")
    out.append(Figure(
        f"Fig. 19 (appendix G): last-layer norm, {model} on {dataset}",
        family_cmd("last_layer_norm", variant), (("configs/last_layer_norm.py", variant, None),),
        rows + sgd_rows() + (
            Row("last-layer norm", 322, "The lowest presented last layer’s weight norms are "
                "close to the norms obtained at random initialization without rescaling.",
                f"lowest ~{init:.3g} (PyTorch's init)",
                f"PyTorch's init gives {init:.3g} here (seed 0; sqrt({classes}/3) = "
                f"{(classes / 3) ** 0.5:.3g} in expectation); the other values are not stated"
                + ("" if init < 3 else f"; ours has no member near it (the lowest, 1, is "
                   f"{init:.2g}x below): configs/last_layer_norm.py should add one for "
                   f"{variant}"),
                match=lambda v, init=init: 0.5 < min(map(float, v.split(", "))) / init < 2),
        ) + hyper_rows(
            "not stated; ours 0.01, the main text's", "not stated; ours 0.001, the main "
            "text's")))
  return tuple(out)


def minima_practical_figures() -> tuple[Figure, ...]:
  """Appendix H (Fig. 20) and I (Figs. 21-23)."""
  out = []
  for variant, model, width, dataset, last in (("cifar100", "convnet_si", 64, "cifar100", 20.0),
                                               ("resnet", "resnet18_si", 64, "cifar10", 10.0)):
    out.append(Figure(
        f"Fig. 20 (appendix H): minima of different periods, {model} on {dataset}",
        f"python experiments/minima_similarity.py --config=configs/minima_similarity.py:{variant}",
        (("configs/minima_similarity.py", variant, None),),
        model_rows(model, width, dataset, last) + sgd_rows() + (
            Row("lr", 332, "weight decay of 0.001 and learning rate of 0.03", 0.03),
            Row("wd", 332, "weight decay of 0.001 and learning rate of 0.03", 0.001),
            Row("epochs", None, "", None, NOT_STATED_RELEASED + " (epochs 1001; line 338: "
                "'in given epochs budget')"))))
  return tuple(out) + practical_figures()


PRACTICAL_LAST = ("members with fixed non-SI weights keep line 224's norm 10; trainable ones "
                  "start from PyTorch's init of the last layer (not rescaled), as "
                  "configs/practical.py says the released code does: the appendix does not say")
WIDTH_AMBIGUOUS = ("ambiguous: Figs. 22-23 sit in appendix I ('Practical modifications', width "
                   "64 by line 222) but their captions call the net scale-invariant (width 32 "
                   "by line 222); configs/practical.py uses 64 for its whole paper-scale family")


def practical_rows(model, width, dataset, **sgd) -> tuple[Row, ...]:
  rows = model_rows(model, width, dataset)
  rows = tuple(r for r in rows if r.setting not in ("last-layer norm",
                                                    "non-SI parameters (BN affine, last layer)"))
  return rows + (
      Row("non-SI parameters (BN affine, last layer)", 351, "with learnable non-scale-invariant "
          "parameters, momentum, and augmentation", sgd.pop("non_si")),
      Row("last-layer norm", None, "", None, PRACTICAL_LAST)) + sgd_rows(**sgd) + hyper_rows(
          "not stated; ours lr 0.01, the main text's", "not stated; ours wd 0.001")


def practical_figures() -> tuple[Figure, ...]:
  """Appendix I: Figs. 7 and 21 (each modification, all together), 22 (LN, IN), 23 (Adam)."""
  crop = "crop 32 pad 4 + flip"
  out = [Figure("Fig. 7 (main text) and Fig. 21 (appendix I): practical modifications, "
                "ConvNet on CIFAR-10", family_cmd("practical"),
                (("configs/practical.py", "", ("non_si", "momentum", "augment", "all")),),
                practical_rows("convnet_si", 64, "cifar10", non_si="trained, fixed",
                               momentum="0, 0.9", augment=f"none, {crop}"))]
  for variant, model, dataset in (("cifar100", "convnet_si", "cifar100"),
                                  ("resnet", "resnet18_si", "cifar10"),
                                  ("resnet_cifar100", "resnet18_si", "cifar100")):
    out.append(Figure(f"Fig. 21 (appendix I): all three modifications, {model} on {dataset}",
                      family_cmd("practical", variant),
                      (("configs/practical.py", variant, ("all",)),),
                      practical_rows(model, 64, dataset, non_si="trained", momentum=0.9,
                                     augment=crop)))
  si = model_rows(width=32)
  si = tuple(dataclasses.replace(r, note=WIDTH_AMBIGUOUS) if r.setting == "width" else r
             for r in si)
  norm = Row("normalization", 346, "layer normalization [2] and instance normalization [24]",
             "layer, instance")
  out.append(Figure("Fig. 22 (appendix I): layer and instance normalization, ConvNet on "
                    "CIFAR-10", family_cmd("practical"),
                    (("configs/practical.py", "", ("layer_norm", "instance_norm")),),
                    tuple(norm if r.setting == "normalization" else r for r in si)
                    + sgd_rows() + hyper_rows("not stated; ours lr 0.01, the main text's",
                                              "not stated; ours wd 0.001")))
  adam = (Row("optimizer", 344, "a more sophisticated optimizer, Adam [13]", "adam"),) + tuple(
      r for r in sgd_rows() if r.setting not in ("optimizer", "momentum"))
  out.append(Figure("Fig. 23 (appendix I): Adam, ConvNet on CIFAR-10", family_cmd("practical"),
                    (("configs/practical.py", "", ("adam",)),),
                    si + adam + hyper_rows(
                        "not stated; ours 1e-4",
                        "not stated; ours 0.001 as L2 added to the gradient (coupled)")))
  return tuple(out)


def all_figures() -> tuple[Figure, ...]:
  return (sgd_figures() + theory_figures() + gd_figures() + sweep_figures()
          + last_layer_figures() + minima_practical_figures())


def ours(row: Row, configs: list) -> str:
  """Our value: the row's fixed one, or the members' values (first-appearance order)."""
  if row.ours is not None:
    return _fmt(row.ours)
  values = [_fmt(GETTERS[row.setting](c)) for c in configs]
  return ", ".join(dict.fromkeys(values))


def verdict(row: Row, value: str) -> tuple[str, bool]:
  """(what the last column says, whether it is an explained or no difference)."""
  if row.paper is None:
    if not row.note:
      return "not stated, UNEXPLAINED", False
    return (row.note if row.note.startswith("not stated") else f"not stated: {row.note}"), True
  if (row.match(value) if row.match else _fmt(row.paper) == value):
    return "same" + (f" ({row.note})" if row.note else ""), True
  return (f"**differs**: {row.note}" if row.note else "**differs, UNEXPLAINED**"), bool(row.note)


def check_quotes(figures, appendix: list[str]) -> None:
  for fig in figures:
    for row in fig.rows:
      if row.line is not None and row.quote not in appendix[row.line - 1]:
        raise ValueError(f"{fig.title}: {row.setting!r}: {row.quote!r} is not on appendix "
                         f"line {row.line}")


def table(fig: Figure) -> tuple[list[str], list[tuple[str, ...]]]:
  """The figure's Markdown lines and the differences (explained or not) it holds."""
  configs = [c for path, variant, members in fig.runs
             for c in run_configs(path, variant, members)]
  lines = [f"## {fig.title}", ""]
  if fig.command:
    runs = "; ".join(f"`{p}{':' + v if v else ''}`" + (f" members {', '.join(m)}" if m else "")
                     for p, v, m in fig.runs)
    lines += [f"`{fig.command}`" + (f" (resolved: {runs})" if runs else ""), ""]
  if fig.text:
    lines += [fig.text, ""]
  if not fig.rows:
    return lines, []
  lines += ["| setting | appendix (line: words) | appendix's value | ours | |",
            "| --- | --- | --- | --- | --- |"]
  differences = []
  for row in fig.rows:
    value = ours(row, configs)
    said, explained = verdict(row, value)
    where = f"{row.line}: \"{row.quote}\"" if row.line else "-"
    paper = "-" if row.paper is None else _fmt(row.paper)
    lines.append(f"| {row.setting} | {where} | {paper} | {value} | {said} |")
    if not explained:
      raise ValueError(f"{fig.title}: {row.setting}: ours {value}, appendix {paper}: "
                       "unexplained (give the row a note)")
    if said.startswith("**differs"):
      differences.append((row.setting, paper, value, row.note, fig.title))
  return lines + [""], differences


HEADER = """# The appendix's settings, figure by figure, against our configs

Generated by `python experiments/paper_settings.py > docs/paper_settings.md` from the
configs (each loaded with its variant, every member resolved) and the defaults of the
scripts; each quote was checked against its line of the appendix text
(`/work/shared/reference/paper_appendix.txt`). Last column: *same*; *not stated* (the
appendix gives no value; where ours comes from); or **differs** (why). The script
fails on a difference without an explanation. Figures 1-7 are the main text's; the
appendix states their settings only in appendix B (and Figs. 5 and 7 not at all).
"""


def main(argv):
  del argv
  figures = all_figures()
  if os.path.exists(_APPENDIX.value):
    with open(_APPENDIX.value, encoding="utf-8") as f:
      check_quotes(figures, f.read().splitlines())
  else:
    print(f"warning: {_APPENDIX.value} not found; quotes not checked", file=sys.stderr)
  out, differences = [HEADER], []
  for fig in figures:
    lines, diffs = table(fig)
    out += lines
    differences += diffs
  print("\n".join(out + difference_list(differences)))


def difference_list(differences: list[tuple[str, ...]]) -> list[str]:
  """One item per distinct difference, naming every figure it applies to."""
  figures: dict[tuple[str, ...], list[str]] = {}
  for *key, title in differences:
    figures.setdefault(tuple(key), []).append(title.split(":")[0].split(" (")[0])
  out = ["## Every difference, in one list", ""]
  for (setting, paper, value, note), titles in figures.items():
    out.append(f"* **{setting}** (appendix {paper}, ours {value}) in "
               f"{', '.join(dict.fromkeys(titles))}: {note}")
  return out


if __name__ == "__main__":
  cli.run(main)
