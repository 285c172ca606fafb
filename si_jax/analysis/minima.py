"""Similarity of the minima of different periods (Sec. 6, appendix H, Figs. 6 and 20).

A minimum is the checkpoint at the end of phase A of a period. Similarity is measured in
weight space (the cosine of the SI weight vectors) and in function space (the test error
of two-member ensembles, mean softmax): periods of one run against the same period of
two independent runs.
"""

from __future__ import annotations

import itertools

import numpy as np

from si_jax.analysis import phases


def end_of_phase_a(workdir: str, available: list[int]) -> list[tuple[int, int]]:
  """[(period, checkpoint epoch)] of every period of the run with a phase A and a phase B.

  The epoch is the one in ``available`` nearest the period's first phase-B epoch. The
  warm-up (period 0) counts where the detector splits it; where its phase A is empty
  (the causal detector's warm-up is all phase B) its "minimum" would be the first
  epoch's checkpoint, and it is left out.
  """
  analysis = phases.analyze_run(workdir)
  out = []
  for p in analysis.periods:
    if p.a[1] > p.a[0] and p.b[1] > p.b[0]:
      epoch = analysis.x[p.b[0]]
      out.append((p.index, min(available, key=lambda e: abs(e - epoch))))
  return out


def similarity(names: list[tuple[int, int, int]], vectors: list[np.ndarray],
               probs: list[np.ndarray], test_y: np.ndarray, member_names: list[str]) -> dict:
  """Cosines of the SI weights and test errors of single minima and of ensembles of two.

  Args:
    names: (run index, period, epoch) of each minimum; run 0 is the reference run, run 1
      the independent one.
    vectors: each minimum's SI weights, flattened.
    probs: each minimum's test-set softmax outputs, [examples, classes].
    test_y: the test labels.
    member_names: the runs' names, by run index.

  Returns:
    The JSON-able result: ``test_examples``, ``checkpoints`` (run, period, epoch, test error), the
    ``cosine`` matrix, and the cosines and ensemble errors of pairs of periods > 0 of
    run 0 (``within_run_*``) and of the same period of runs 0 and 1 (``independent_*``).
  """
  unit = np.stack([v / np.linalg.norm(v) for v in vectors])
  cosine = unit @ unit.T
  error = lambda p: float(np.mean(p.argmax(-1) != test_y))
  single = [error(p) for p in probs]
  index = {(r, k): i for i, (r, k, _) in enumerate(names)}
  within = [(i, j) for i, j in itertools.combinations(range(len(names)), 2)
            if names[i][0] == names[j][0] == 0 and names[i][1] > 0 and names[j][1] > 0]
  across = [(index[(0, k)], index[(1, k)]) for (r, k, _) in names if r == 0 and (1, k) in index]
  ensemble = lambda pairs: [error((probs[i] + probs[j]) / 2) for i, j in pairs]
  return {
      "test_examples": int(len(test_y)),
      "checkpoints": [{"run": member_names[r], "period": k, "epoch": e, "test_error": s}
                      for (r, k, e), s in zip(names, single)],
      "cosine": cosine.tolist(),
      "within_run_cosine": [float(cosine[i, j]) for i, j in within],
      "independent_cosine": [float(cosine[i, j]) for i, j in across],
      "within_run_ensemble_error": ensemble(within),
      "independent_ensemble_error": ensemble(across),
  }


def describe(result: dict) -> str:
  """One line: mean cosines (within-run minimum) and mean test errors of ``similarity``."""
  mean = lambda v: float(np.mean(v)) if v else float("nan")
  single = [c["test_error"] for c in result["checkpoints"]]
  return (f"{len(single)} checkpoints: within-run cosine "
          f"{mean(result['within_run_cosine']):.3f} "
          f"(min {min(result['within_run_cosine'], default=np.nan):.3f}), independent-run cosine "
          f"{mean(result['independent_cosine']):.3f}; test error: single {mean(single):.4f}, "
          f"ensembles of periods {mean(result['within_run_ensemble_error']):.4f}, of independent "
          f"runs {mean(result['independent_ensemble_error']):.4f}")
