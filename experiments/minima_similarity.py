"""Figs. 6/20: weight-space and functional similarity of the minima of different periods.

  python experiments/minima_similarity.py --config=configs/minima_similarity.py:cpu \
      --workdir=runs/minima

Trains the two runs of the config (seed 0 and an independent seed 1), finds their
periods (``si_jax.analysis.phases``) and loads the checkpoint at the end of phase A of each
period. Then: the cosine similarity of the SI weight vectors between all these
checkpoints, the test error of each, and the test error of two-member ensembles
(mean softmax) of minima of different periods of one run vs of the same period of the
two independent runs. Writes WORKDIR/minima_similarity.png/.pdf and similarity.json.
"""

import itertools
import json
import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from si_jax.analysis import phases  # noqa: E402
from si_jax.engine import checkpoint, experiment  # noqa: E402
from si_jax.engine import state as state_lib  # noqa: E402
from si_jax.models import get_path  # noqa: E402
from si_jax.plots import plotting  # noqa: E402
from si_jax.programs import cli  # noqa: E402

_CONFIG = cli.config_flag("configs/minima_similarity.py[:variant]")
_WORKDIR = cli.workdir_flag()
_PROGRESS = cli.progress_flag()
cli.compilation_cache_flag()  # applied by cli.run before training


def end_of_phase_a(workdir: str, available: list[int]) -> list[tuple[int, int]]:
  """[(period, checkpoint epoch)]: the checkpoint nearest the first phase-B epoch of each
  period that has a phase B (the warm-up, period 0, included)."""
  analysis = phases.analyze_run(workdir)
  out = []
  for p in analysis.periods:
    if p.b[1] > p.b[0]:
      epoch = analysis.x[p.b[0]]
      out.append((p.index, min(available, key=lambda e: abs(e - epoch))))
  return out


def collect_minima(config, workdir: str):
  """The end-of-phase-A checkpoints of every member: [(run, period, epoch)], their SI
  weight vectors, their test-set softmax outputs, and the test labels."""
  members = experiment.member_overrides(config)
  run_config = experiment.member_config(config, members[0][2])
  dataset = state_lib.load_dataset(run_config)
  ctx, _ = state_lib.create_state(run_config, dataset)
  test_x = jnp.asarray(dataset.test_images)

  @jax.jit
  def probabilities(params, batch_stats):
    logits = ctx.model.apply({"params": params, "batch_stats": batch_stats}, test_x, train=False)
    return jax.nn.softmax(logits)

  names, vectors, probs = [], [], []
  for run, (name, _, _) in enumerate(members):
    run_dir = os.path.join(workdir, name)
    for period, epoch in end_of_phase_a(run_dir, checkpoint.saved_epochs(run_dir)):
      params, stats, _ = checkpoint.load_weights(run_dir, epoch)
      vectors.append(np.concatenate([np.ravel(get_path(params, p)) for p in ctx.groups.si_paths]))
      probs.append(np.asarray(probabilities(params, stats)))
      names.append((run, period, epoch))
  return names, vectors, probs, np.asarray(dataset.test_labels)


def similarity(names, vectors, probs, test_y, member_names: list[str]) -> dict:
  """Cosine similarities of the SI weights and test errors of single minima and of
  two-member ensembles (mean softmax): periods of one run vs independent runs."""
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
      "checkpoints": [{"run": member_names[r], "period": k, "epoch": e, "test_error": s}
                      for (r, k, e), s in zip(names, single)],
      "cosine": cosine.tolist(),
      "within_run_cosine": [float(cosine[i, j]) for i, j in within],
      "independent_cosine": [float(cosine[i, j]) for i, j in across],
      "within_run_ensemble_error": ensemble(within),
      "independent_ensemble_error": ensemble(across),
  }


def draw(result: dict, names, out: str) -> str:
  """Left: the cosine-similarity matrix; right: test errors of single models and of
  ensembles."""
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


def main(argv):
  del argv  # only flags
  config, workdir = _CONFIG.value, _WORKDIR.value
  experiment.run_family(config, workdir, vmap="no", progress=_PROGRESS.value)
  names, vectors, probs, test_y = collect_minima(config, workdir)
  member_names = [name for name, _, _ in experiment.member_overrides(config)]
  result = similarity(names, vectors, probs, test_y, member_names)
  with open(os.path.join(workdir, "similarity.json"), "w") as f:
    json.dump(result, f, indent=1)
  out = draw(result, names, os.path.join(workdir, "minima_similarity.png"))
  mean = lambda v: float(np.mean(v)) if v else float("nan")
  single = [c["test_error"] for c in result["checkpoints"]]
  print(f"{len(names)} checkpoints: within-run cosine {mean(result['within_run_cosine']):.3f} "
        f"(min {min(result['within_run_cosine'], default=np.nan):.3f}), independent-run cosine "
        f"{mean(result['independent_cosine']):.3f}; test error: single {mean(single):.4f}, "
        f"ensembles of periods {mean(result['within_run_ensemble_error']):.4f}, of independent "
        f"runs {mean(result['independent_ensemble_error']):.4f}")
  print(f"figure: {out}")


if __name__ == "__main__":
  cli.run(main)
