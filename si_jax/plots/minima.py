"""The figure of the minima of different periods (Figs. 6 and 20)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from si_jax.plots import plotting  # noqa: E402


def draw(result: dict, names: list[tuple[int, int, int]], out: str) -> str:
  """Draws ``si_jax.analysis.minima.similarity``'s result into ``out`` (and a PDF).

  ``names``: (run index, period, epoch) of each checkpoint, as given to ``similarity``.

  Left: the cosine-similarity matrix of the SI weights; right: the test errors of the
  single models and of the two kinds of ensembles. Returns ``out``.
  """
  cosine = np.asarray(result["cosine"])
  single = [c["test_error"] for c in result["checkpoints"]]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
  ticks = [f"{'ind. ' if r else ''}P{k} (ep {e})" for r, k, e in names]
  im = axes[0].imshow(cosine, cmap="viridis", vmin=min(0.0, cosine.min()), vmax=1)
  axes[0].set(xticks=range(len(ticks)), yticks=range(len(ticks)),
              title="cosine similarity of SI weights, ends of phase A")
  axes[0].set_xticklabels(ticks, rotation=90, fontsize=7)
  axes[0].set_yticklabels(ticks, fontsize=7)
  fig.colorbar(im, ax=axes[0])
  groups = [("single models", single),
            ("ensembles, periods of one run", result["within_run_ensemble_error"]),
            ("ensembles, independent runs", result["independent_ensemble_error"])]
  for pos, (_label, values) in enumerate(groups):
    jitter = np.linspace(-0.15, 0.15, len(values) or 1)[:len(values)]
    axes[1].scatter(np.full(len(values), pos) + jitter, values, s=12,
                    color=plotting.RUN_COLORS[1 + pos])
    if values:
      axes[1].hlines(np.mean(values), pos - 0.3, pos + 0.3, color="k")
  axes[1].set(xticks=range(3), ylabel="test error",
              title="functional similarity (ensembles of two)")
  axes[1].set_xticklabels([g[0] for g in groups], fontsize=8)
  plotting.save_figure(fig, out)
  return out
