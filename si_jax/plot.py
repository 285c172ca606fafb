"""python -m si_jax.plot RUN_DIR [RUN_DIR ...] --out fig.png"""

from __future__ import annotations

import argparse

from si_jax import plotting


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="Four-panel figure of si_jax runs.")
  parser.add_argument("runs", nargs="+", help="run directories (with metrics.jsonl)")
  parser.add_argument("--out", required=True, help="output image (png, pdf, svg)")
  parser.add_argument("--labels", nargs="*", help="legend labels, one per run")
  parser.add_argument("--theory", action="store_true",
                      help="overlay Proposition 3's norm band and Remark 3's effective-LR band")
  args = parser.parse_args(argv)
  if args.labels and len(args.labels) != len(args.runs):
    parser.error(f"--labels needs {len(args.runs)} values, got {len(args.labels)}")
  try:
    print(plotting.plot_runs(args.runs, args.out, args.labels, theory_overlay=args.theory))
  except (FileNotFoundError, ValueError, OSError) as e:
    parser.exit(1, f"error: {e}\n")


if __name__ == "__main__":
  main()
