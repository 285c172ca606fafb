"""Collects the CPU-scale figure families into the numbers of docs/reproduction.md.

  python experiments/reproduction_report.py runs/cpu --figures=docs/figures
  python experiments/reproduction_report.py runs/cifar_cpu --figures=docs/figures --prefix=cifar_

Expects the workdirs of the commands in docs/reproduction.md under RUNS (lr_sweep,
wd_sweep, lr_wd_product, last_layer_norm, practical, gd, one_period, minima); prints
for each family its table and the claim checks, and writes down-scaled copies of the
figures (PNG, at most 1100 px wide) into --figures. Families not run yet are skipped.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import flags
from PIL import Image

from si_jax.analysis import phases
from si_jax.engine import experiment
from si_jax.plots import plotting
from si_jax.programs import cli

_FIGURES = flags.DEFINE_string("figures", "docs/figures",
                               "where the down-scaled figure copies go")
_PREFIX = flags.DEFINE_string("prefix", "", "prepended to the copies' names (cifar_: the "
                              "CIFAR-proxy families beside the digits ones)")


def load_summary(path: str) -> dict | None:
  if not os.path.exists(os.path.join(path, "summary.json")):
    return None
  with open(os.path.join(path, "summary.json")) as f:
    return json.load(f)


def shrink(src: str, dst_dir: str, width: int = 1100) -> str | None:
  if not os.path.exists(src):
    return None
  os.makedirs(dst_dir, exist_ok=True)
  image = Image.open(src)
  if image.width > width:
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
  dst = os.path.join(dst_dir, _PREFIX.value + os.path.basename(src))
  image = image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
  image.save(dst, optimize=True)
  return dst


def relative_differences(a: str, b: str, key: str, scale: float = 1.0,
                         epochs=(1, 2, 5, 10, 20, 40, 50, 60, 100)) -> str:
  """|a / scale - b| / |b| of a per-epoch metric of two runs at some epochs."""
  x, y = phases.load_series(a)[key] / scale, phases.load_series(b)[key]
  n = min(len(x), len(y))  # a rescaled member may stop earlier than its reference
  d = np.abs(x[:n] - y[:n]) / np.abs(y[:n])
  return ", ".join(f"epoch {e}: {d[e - 1]:.1e}" for e in epochs if e <= len(d))


def sweep_claims(s: dict) -> None:
  is_periodic = [m["periodic"] for m in s["members"]]
  periodic = [i for i, f in enumerate(is_periodic) if f]
  contiguous = periodic and periodic == list(range(periodic[0], periodic[-1] + 1))
  print(f"  periodic members: {[s['members'][i]['label'] for i in periodic]}; contiguous middle "
        f"range: {bool(contiguous and periodic[0] > 0 and periodic[-1] < len(is_periodic) - 1)}")
  for m in s["members"]:
    if not m["periodic"]:
      print(f"  {m['label']}: {m['reason']}")


def product_claims(s: dict, path: str) -> None:
  """Remark 3's ranges per member, and Proposition 4's rescaled runs against lr 0.1."""
  for m in s["members"]:
    series = phases.load_series(os.path.join(path, m["name"]))
    # appendix B's full-pass values where logged (the thinned gradient pass), else the
    # epoch means of the in-step values
    full = "train_effective_lr" in series and np.isfinite(series["train_effective_lr"]).sum() > 4
    prefix = "train_" if full else ""
    elr = plotting.tail_quantiles(series, prefix + "effective_lr")
    g = plotting.tail_quantiles(series, prefix + "effective_grad_norm")
    print(f"  {m['label']}: 2nd-half 5-95% effective LR {elr[0]:.3g}..{elr[1]:.3g}, "
          f"effective grad norm {g[0]:.3g}..{g[1]:.3g}")
  for m in s["members"]:
    if "_rescaled" in m["name"]:  # p<product>_rescaled_k against that product's ratio_1
      ref = os.path.join(path, m["name"].split("_rescaled")[0] + "_ratio_1")
      c = m["overrides"]["model.init_scale"]
      for key, scale in (("loss", 1.0), ("weight_norm", c), ("effective_lr", 1.0)):
        name = "weight_norm / c" if key == "weight_norm" else key
        print(f"  {m['label']} vs its product's reference run: relative difference of {name}: "
              f"{relative_differences(os.path.join(path, m['name']), ref, key, scale)}")


def shrink_all(sources: list[str], figures: str) -> None:
  for src in sources:
    out = shrink(src, figures)
    if out:
      print(f"  figure {out} ({os.path.getsize(out) // 1024} KiB)")


def family_report(runs: str, family: str, figures: str) -> None:
  path = os.path.join(runs, family)
  s = load_summary(path)
  if s is None:
    print(f"## {family}: not run")
    return
  print(f"## {family}\n{experiment.table(s)}")
  for m in s["members"]:
    lengths = [p["length"] for p in m["periods"][1:] if p["complete"]]
    if lengths:
      print(f"  {m['label']}: period lengths {lengths}")
  if family in ("lr_sweep", "wd_sweep", "last_layer_norm"):
    sweep_claims(s)
  if family == "lr_wd_product":
    product_claims(s, path)
  shrink_all([os.path.join(path, f"{family}{suffix}.png") for suffix in ("", "_phases", "_ranges")],
             figures)


def minima_report(runs: str, figures: str) -> None:
  minima = os.path.join(runs, "minima", "similarity.json")
  if not os.path.exists(minima):
    return
  with open(minima) as f:
    r = json.load(f)
  print("## minima similarity")
  for k in ("within_run_cosine", "independent_cosine", "within_run_ensemble_error",
            "independent_ensemble_error"):
    v = r[k]
    print(f"  {k}: mean {np.mean(v):.4f}, min {np.min(v):.4f}, max {np.max(v):.4f} ({len(v)})")
  print("  single models:", [(c["run"], c["period"], c["epoch"], round(c["test_error"], 4))
                             for c in r["checkpoints"]])
  shrink(os.path.join(runs, "minima", "minima_similarity.png"), figures)


def main(argv):
  runs = argv[1]
  for family in ("lr_sweep", "wd_sweep", "lr_wd_product", "last_layer_norm", "practical", "gd"):
    family_report(runs, family, _FIGURES.value)
  minima_report(runs, _FIGURES.value)
  shrink_all([os.path.join(runs, "one_period", name) for name in ("one_period.png", "fig13.png")],
             _FIGURES.value)


if __name__ == "__main__":
  cli.run(main, positional=1)
