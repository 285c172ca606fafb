"""The settings the paper's appendix states, figure by figure, next to our configs'.

  python tools/paper_settings.py > docs/paper_settings.md
  python tools/paper_settings.py --appendix=/work/shared/reference/paper_appendix.txt

The table is data, tools/paper_settings.toml: each figure's command, runs and rows, and
each row's appendix line, quote, value and explanation. Every quote is checked against
its line of ``--appendix`` (skipped, with a note, when the file is absent). Our value
is read from the config file with its variant, every member resolved
(``si_jax.engine.experiment.member_config``), or from a function's defaults. A row whose
value differs from the appendix's, or that the appendix does not state, must carry an
explanation: the tool fails on an unexplained difference (and on a quote not found).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import math
import os
import sys
from typing import Any, Callable

from absl import flags

try:
  import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport (pip install tomli)
  import tomli as tomllib

from si_jax.engine import experiment
from si_jax.programs import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_APPENDIX = flags.DEFINE_string("appendix", "/work/shared/reference/paper_appendix.txt",
                                "the appendix text whose line numbers the rows quote")
_TABLE = flags.DEFINE_string("table", os.path.join(ROOT, "tools", "paper_settings.toml"),
                             "the figures and rows to check (TOML)")


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
  """One setting of one figure: the appendix's words and value, and ours."""
  setting: str
  line: int | None = None  # the appendix line, None when the appendix does not state it
  quote: str = ""  # the words of that line the value comes from
  paper: Any = None  # the appendix's value in our terms (None: not stated)
  note: str = ""  # why ours differs, or where ours comes from when not stated
  ours: Any = None  # a fixed value of ours; None: read from the configs with GETTERS
  matched: bool | None = None  # whether ours matches, when not decided by equality
  computed: dict | None = None  # the formats of a row computed from the initial norm


@dataclasses.dataclass(frozen=True)
class Figure:
  """A figure's table: the command, the runs whose configs give our values, the rows."""
  title: str
  command: str = ""
  runs: tuple[tuple[str, str, tuple[str, ...] | None], ...] = ()  # (config, variant, members)
  rows: tuple[Row, ...] = ()
  text: str = ""  # said before the table
  init_norm: dict | None = None  # model, width, classes of a computed last-layer norm


def load_module(path: str):
  """The Python file at ``path`` (relative to the repository root), imported."""
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


def defaults_of(target: str) -> dict[str, Any]:
  """The default arguments of ``module:function``."""
  module, name = target.split(":")
  fn = getattr(importlib.import_module(module), name)
  return {k: p.default for k, p in inspect.signature(fn).parameters.items()
          if p.default is not inspect.Parameter.empty}


def make_row(spec: dict) -> Row:
  """A table row from its TOML entry (``ours_from`` resolved into ``ours``)."""
  spec = dict(spec)
  if "ours_from" in spec:
    spec["ours"] = spec.pop("ours_format").format(**defaults_of(spec.pop("ours_from")))
  computed = {k: spec.pop(k) for k in ("paper_format", "note_format", "note_if_far",
                                       "note_if_lower") if k in spec}
  return Row(**spec, computed=computed or None)


def load_table(path: str) -> tuple[str, tuple[Figure, ...]]:
  """The header and the figures of the TOML table at ``path``."""
  with open(path, "rb") as f:
    table = tomllib.load(f)
  rows = {name: make_row(spec) for name, spec in table["row"].items()}
  figures = []
  for fig in table["figure"]:
    runs = tuple((r["config"], r["variant"], tuple(r["members"]) if "members" in r else None)
                 for r in fig.get("runs", ()))
    figures.append(Figure(fig["title"], fig.get("command", ""), runs,
                          tuple(rows[name] for name in fig.get("rows", ())), fig.get("text", ""),
                          fig.get("init_norm")))
  return table["header"], tuple(figures)


def init_last_layer_norm(model: str, width: int, classes: int, seed: int = 0) -> float:
  """The norm of the last layer's weights at PyTorch's init, as ``create_state`` draws it.

  Not rescaled: about sqrt(classes / 3) (classes x fan_in entries from
  U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
  """
  import jax
  import numpy as np

  from si_jax import models
  net = models.create_model(model, num_classes=classes, width=width)
  key = jax.random.split(jax.random.fold_in(jax.random.key(seed), 0))[0]
  params = models.init_variables(net, key, (32, 32, 3), None)["params"]
  weights = models.get_path(params, models.param_groups(net).last_layer)
  return float(np.linalg.norm(np.asarray(weights)))


def with_init_norm(row: Row, fig: Figure, value: str) -> Row:
  """``row`` with its appendix value and note computed from the initial last-layer norm."""
  init = init_last_layer_norm(**fig.init_norm)
  norms = sorted(map(float, value.split(", ")))
  nearest = min(norms, key=lambda n: abs(math.log(n / init)))
  config, variant, _ = fig.runs[0]
  fields = dict(init=init, classes=fig.init_norm["classes"], nearest=nearest,
                factor=max(init / nearest, nearest / init),
                side="below" if nearest < init else "above",
                lower=", ".join(f"{n:g}" for n in norms if n < nearest),
                expected=(fig.init_norm["classes"] / 3) ** 0.5, config=config, variant=variant)
  matched = 0.5 < norms[0] / init < 2  # the appendix speaks of the lowest presented norm
  note = row.computed["note_format"].format(**fields)
  if not matched:  # a member at the init's norm and lower ones, or none near it
    far = not 0.5 < nearest / init < 2
    note += row.computed["note_if_far" if far else "note_if_lower"].format(**fields)
  return dataclasses.replace(row, paper=row.computed["paper_format"].format(**fields),
                             note=note, matched=matched)


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
  if (row.matched if row.matched is not None else _fmt(row.paper) == value):
    return "same" + (f" ({row.note})" if row.note else ""), True
  return (f"**differs**: {row.note}" if row.note else "**differs, UNEXPLAINED**"), bool(row.note)


def check_quotes(figures, appendix: list[str]) -> None:
  """Raises ValueError naming the first row whose quote is not on its appendix line."""
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
    if row.computed:
      row = with_init_norm(row, fig, value)
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


def released_choices(path: str) -> list[str]:
  """The table's ``released`` text: how we measure what the released code measures."""
  with open(path, "rb") as f:
    text = tomllib.load(f).get("released", "").rstrip()
  return ["", text] if text else []


def main(argv):
  """Prints the Markdown of every figure's table and the list of differences."""
  del argv  # only flags
  header, figures = load_table(_TABLE.value)
  if os.path.exists(_APPENDIX.value):
    with open(_APPENDIX.value, encoding="utf-8") as f:
      check_quotes(figures, f.read().splitlines())
  else:
    print(f"warning: {_APPENDIX.value} not found; quotes not checked", file=sys.stderr)
  out, differences = [header], []
  for fig in figures:
    lines, diffs = table(fig)
    out += lines
    differences += diffs
  print("\n".join(out + difference_list(differences) + released_choices(_TABLE.value)))


if __name__ == "__main__":
  cli.run(main)
