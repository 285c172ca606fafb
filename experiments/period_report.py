"""One period up close (Figs. 4, 11, 13) and the minima of different periods (Figs. 6, 20),
over seeds: keeps the runs as data, renders their tables and claims with verdicts.

  python experiments/period_report.py --runs=runs/s3 [--data=docs/data/periods]
  python experiments/period_report.py [--write=docs/reproduction.md]

With --runs, first keeps what the report reads of RUNS/<section>/s0, s1, s2 (each of
``si_jax.analysis.period_claims.SECTIONS``: one_period, one_period_gd, one_period_cifar,
trained by ``experiments/one_period.py --config.seed=K``) and of RUNS/minima/s0, s1, s2
(``experiments/minima_similarity.py`` with ``:cpu``, ``:cpu_seed1``, ``:cpu_seed2``) in DATA.
Then renders from DATA alone; --write replaces the ``periods`` block of the given file;
with --runs and --figures, seed 0's figures (``FIGURES``) go down-scaled into that folder.
"""

import argparse
import os

from si_jax import logs
from si_jax.analysis import period_claims
from si_jax.plots import reproduction

FIGURES = {  # what seed 0's run folder draws -> the report's figure
    "one_period": (("one_period.png", "one_period.png"), ("fig13.png", "fig13_held_out_sgd.png")),
    "one_period_gd": (("one_period.png", "one_period_gd.png"),
                      ("fig13.png", "fig13_held_out_gd.png")),
    "one_period_cifar": (("one_period.png", "cifar_one_period.png"),
                         ("fig13.png", "cifar_fig13.png")),
    "minima": (("minima_similarity.png", "minima_similarity.png"),),
}


def _seed_dirs(folder: str) -> list[str]:
  dirs = []
  while os.path.isdir(os.path.join(folder, f"s{len(dirs)}")):
    dirs.append(os.path.join(folder, f"s{len(dirs)}"))
  return dirs


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", help="the folder holding the trained sections, to export")
  parser.add_argument("--data", default="docs/data/periods", help="the exported sections")
  parser.add_argument("--write", help="markdown file whose periods block to replace")
  parser.add_argument("--figures", help="with --runs: folder for seed 0's figures")
  args = parser.parse_args()
  if args.runs:
    os.makedirs(args.data, exist_ok=True)
    for name in period_claims.SECTIONS:
      if dirs := _seed_dirs(os.path.join(args.runs, name)):
        period_claims.export(dirs, os.path.join(args.data, f"{name}.json.gz"))
        print(f"{name}: {len(dirs)} seeds exported")
    if dirs := _seed_dirs(os.path.join(args.runs, "minima")):
      period_claims.export_minima(dirs, os.path.join(args.data, period_claims.MINIMA))
      print(f"minima: {len(dirs)} reference seeds exported")
  for section, pairs in FIGURES.items() if args.runs and args.figures else ():
    for src, name in pairs:
      out = reproduction.shrink(os.path.join(args.runs, section, "s0", src), args.figures,
                                name=name)
      print(f"figure: {out}" if out else f"no {section}/s0/{src}")
  text = period_claims.render(args.data)
  print(text)
  if args.write:
    logs.replace_doc_block(args.write, "periods", text)


if __name__ == "__main__":
  main()
