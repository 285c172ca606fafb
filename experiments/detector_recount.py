"""Recounts the families with the causal detector: tables, claims, verdicts, sensitivity.

  python experiments/detector_recount.py --runs=runs/s3 [--data=docs/data/recount]
  python experiments/detector_recount.py [--write=docs/reproduction.md]
  python experiments/detector_recount.py --figures=docs/figures lr_sweep wd_sweep

With --runs, first keeps what the recount reads of each family under RUNS (lr_sweep,
wd_sweep, lr_wd_product, last_layer_norm, practical, gd; those present) in DATA/<family>.json.gz.
Then renders every family in DATA: ``si_jax.analysis.recount`` (tables and verdicts) and
``si_jax.analysis.claims`` (each claim's criterion, quoted beside its verdict); --write
replaces the recount block of the given Markdown file; --figures draws each named family's
(or every family's) seeds as DIR/<family>_seeds.png.
"""

import argparse
import os

import matplotlib.pyplot as plt

from si_jax import logs
from si_jax.analysis import claims, recount
from si_jax.plots import family as family_plots


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", help="the folder holding the trained families, to export")
  parser.add_argument("--data", default="docs/data/recount", help="the exported families")
  parser.add_argument("--write", help="markdown file whose recount block to replace")
  parser.add_argument("--figures", help="folder to draw <family>_seeds.png into")
  parser.add_argument("families", nargs="*", help="families to draw (default: all in DATA)")
  args = parser.parse_args()
  if args.families and not args.figures:
    parser.error("families name what --figures draws; give --figures=DIR")
  if args.runs:
    os.makedirs(args.data, exist_ok=True)
    for family in claims.FAMILIES:
      family_dir = os.path.join(args.runs, family)
      if os.path.exists(os.path.join(family_dir, "family.json")):
        n = recount.export(family_dir, os.path.join(args.data, f"{family}.json.gz"))
        print(f"{family}: {n} runs exported")
  text = recount.render(args.data)
  print(text)
  if args.write:
    logs.replace_doc_block(args.write, "recount", text)
  exported = sorted(f[:-len(".json.gz")] for f in os.listdir(args.data) if f.endswith(".json.gz"))
  if set(args.families) - set(exported):
    parser.error(f"no export of {sorted(set(args.families) - set(exported))} in {args.data}")
  if args.figures:
    os.makedirs(args.figures, exist_ok=True)
  for name in (args.families or exported) if args.figures else ():
    family, members = recount.load(os.path.join(args.data, f"{name}.json.gz"))
    out = os.path.join(args.figures, f"{family}_seeds.png")
    fig = family_plots.figure_seeds(family, members)
    fig.savefig(out, dpi=110)  # PNG only: docs/figures keeps no PDFs
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
  main()
