"""Draws the four-panel figure of runs: python -m si_jax.plot RUN_DIR ... --out fig.png.

A bad argument, a missing run or a damaged log ends it with one ``error: ...`` line and
exit status 1 (``--verbose`` or ``SI_JAX_VERBOSE=1``: with the traceback).
"""

from __future__ import annotations

import os

from si_jax.plots import plotting
from si_jax.programs import cli


def _check_out(out: str) -> None:
  """Raises ValueError, before any drawing, where a file stands in ``out``'s folder path."""
  folder = os.path.dirname(os.path.abspath(out))
  while not os.path.exists(folder):
    folder = os.path.dirname(folder)
  if not os.path.isdir(folder):
    raise ValueError(f"--out={out}: {folder} is a file, not a directory")


def main(argv=None) -> None:
  """The ``si-jax-plot`` console script (``argv``: the arguments, default sys.argv)."""
  parser = cli.ArgumentParser(description="Four-panel figure of si_jax runs.")
  parser.add_argument("runs", nargs="+", help="run directories (with metrics.jsonl)")
  parser.add_argument("--out", required=True, help="output image (png, pdf, svg)")
  parser.add_argument("--labels", nargs="*", help="legend labels, one per run")
  parser.add_argument("--theory", action="store_true",
                      help="overlay Proposition 3's norm band and Remark 3's effective-LR band")
  args = parser.parse_args(argv)
  verbose = args.verbose or cli.verbose_requested()
  if not verbose:
    cli.quiet_libraries()
  if args.labels and len(args.labels) != len(args.runs):
    parser.error(f"--labels needs {len(args.runs)} values, got {len(args.labels)}")
  try:
    _check_out(args.out)
    print(plotting.plot_runs(args.runs, args.out, args.labels, theory_overlay=args.theory))
  except cli.user_errors() as e:  # a missing run, a damaged log, an unwritable --out
    cli.fail(e, verbose=verbose)


if __name__ == "__main__":
  main()
