"""Recounts the sweep families with the causal detector, each verdict with its sensitivity.

  python experiments/detector_recount.py RUNS [--write docs/reproduction.md]

RUNS holds the families of docs/reproduction.md (lr_sweep, wd_sweep; others are read
when present). The members' onsets and counts under the detector's constants and each
constant halved and doubled, and each claim's verdict: ``si_jax.analysis.recount``, whose
claim functions hold their criteria in their docstrings.
"""

import argparse

from si_jax import logs
from si_jax.analysis import recount


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", help="the folder holding the families")
  parser.add_argument("--write", help="markdown file whose recount block to replace")
  args = parser.parse_args()
  text = recount.recount(args.runs)
  print(text)
  if args.write:
    logs.replace_doc_block(args.write, "recount", text)


if __name__ == "__main__":
  main()
