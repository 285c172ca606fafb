"""The CPU-scale figure families collected into the numbers of docs/reproduction.md.

``reproduction_report`` prints each family's table and claim checks and writes
down-scaled copies of its figures (PNG, at most 1100 px wide) beside the docs. Families
not run yet are reported as such.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from PIL import Image

from si_jax.analysis import phases, reproduction
from si_jax.engine import experiment
from si_jax.plots import plotting

FAMILIES = ("lr_sweep", "wd_sweep", "lr_wd_product", "last_layer_norm", "practical", "gd")
SWEEPS = ("lr_sweep", "wd_sweep", "last_layer_norm")


def shrink(src: str, dst_dir: str, prefix: str = "", width: int = 1100,
           name: str | None = None) -> str | None:
  """Copies the PNG ``src``, at most ``width`` px wide in 256 colours, into ``dst_dir``.

  The copy is named ``prefix`` + ``name`` (default: the source's name); returns its path
  (None where ``src`` does not exist).
  """
  if not os.path.exists(src):
    return None
  os.makedirs(dst_dir, exist_ok=True)
  image = Image.open(src)
  if image.width > width:
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
  dst = os.path.join(dst_dir, prefix + (name or os.path.basename(src)))
  image = image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
  image.save(dst, optimize=True)
  return dst


def shrink_all(sources: list[str], figures: str, prefix: str = "") -> None:
  """``shrink`` for each of ``sources``; prints each copy made and its size."""
  for src in sources:
    out = shrink(src, figures, prefix)
    if out:
      print(f"  figure {out} ({os.path.getsize(out) // 1024} KiB)")


def range_lines(s: dict[str, Any], path: str) -> list[str]:
  """Remark 3's ranges per member: 5-95% of the effective LR and gradient norm, 2nd half."""
  out = []
  for m in s["members"]:
    series = phases.load_series(os.path.join(path, m["name"]))
    # appendix B's full-pass values where logged (the thinned gradient pass), else the
    # epoch means of the in-step values
    full = "train_effective_lr" in series and np.isfinite(series["train_effective_lr"]).sum() > 4
    prefix = "train_" if full else ""
    elr = plotting.tail_quantiles(series, prefix + "effective_lr")
    g = plotting.tail_quantiles(series, prefix + "effective_grad_norm")
    out.append(f"  {m['label']}: 2nd-half 5-95% effective LR {elr[0]:.3g}..{elr[1]:.3g}, "
               f"effective grad norm {g[0]:.3g}..{g[1]:.3g}")
  return out


def family_report(runs: str, family: str, figures: str, prefix: str = "") -> None:
  """Prints the family's table, period lengths and claim checks; copies its figures."""
  path = os.path.join(runs, family)
  s = reproduction.load_summary(path)
  if s is None:
    print(f"## {family}: not run")
    return
  lines = [f"## {family}\n{experiment.table(s)}", *reproduction.period_length_lines(s)]
  if family in SWEEPS:
    lines += reproduction.sweep_claim_lines(s)
  if family == "lr_wd_product":
    lines += range_lines(s, path) + reproduction.rescaled_lines(s, path)
  print("\n".join(lines))
  shrink_all([os.path.join(path, f"{family}{suffix}.png") for suffix in ("", "_phases", "_ranges")],
             figures, prefix)


def reproduction_report(runs: str, figures: str, prefix: str = "") -> None:
  """Prints the report of the ``FAMILIES``, the minima and the one-period run in ``runs``.

  The figure copies go to ``figures``, their names prefixed with ``prefix``.
  """
  for family in FAMILIES:
    family_report(runs, family, figures, prefix)
  minima = os.path.join(runs, "minima", "similarity.json")
  if os.path.exists(minima):
    with open(minima) as f:
      print("\n".join(reproduction.minima_lines(json.load(f))))
    shrink(os.path.join(runs, "minima", "minima_similarity.png"), figures, prefix)
  shrink_all([os.path.join(runs, "one_period", name) for name in ("one_period.png", "fig13.png")],
             figures, prefix)
