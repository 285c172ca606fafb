"""The bridge: where ordinary SGD + weight decay destabilizes, against the sphere's regimes.

  python experiments/sphere_bridge.py SPHERE_FAMILY RUN [RUN ...] [--write docs/three_regimes.md]
      [--block bridge_cifar]

SPHERE_FAMILY: a finished ``configs/three_regimes.py`` family (fixed ELR on the sphere);
RUN: runs of the same model and data trained with SGD and weight decay (e.g. the
quickstart, the lr sweep's members). The sphere gives the regime boundaries in effective
LR; each run the effective LR it held just before each destabilization and the range its
phases B visited (``si_jax.analysis.sphere_bridge``). The follow-up paper's link: a
destabilization happens once phase B has carried the effective LR out of the convergence
regime.
"""

import argparse

from si_jax import logs
from si_jax.analysis import sphere_bridge


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("family", help="a finished configs/three_regimes.py family")
  parser.add_argument("runs", nargs="+", help="runs trained with SGD and weight decay")
  parser.add_argument("--write", help="markdown file whose bridge block to replace")
  parser.add_argument("--block", default="bridge", help="the block's marker name")
  args = parser.parse_args()
  text = "\n".join(sphere_bridge.bridge_lines(args.family, args.runs))
  print(text)
  if args.write:
    logs.replace_doc_block(args.write, args.block, text)


if __name__ == "__main__":
  main()
