"""The minima of different periods of a family's runs: train, collect, compare.

The family is ``configs/minima_similarity.py``'s (two seeds, checkpointed often); the
comparison is ``si_jax.analysis.minima.similarity``.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from si_jax.analysis import minima
from si_jax.engine import checkpoint, experiment
from si_jax.engine import state as state_lib
from si_jax.models import get_path


def collect_minima(config, workdir: str):
  """The end-of-phase-A checkpoints of every member of a trained family.

  Returns:
    [(run index, period, epoch)], their SI weight vectors (flattened), their test-set
    softmax outputs and the test labels.
  """
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
    for period, epoch in minima.end_of_phase_a(run_dir, checkpoint.saved_epochs(run_dir)):
      params, stats, _ = checkpoint.load_weights(run_dir, epoch)
      vectors.append(np.concatenate([np.ravel(get_path(params, p)) for p in ctx.groups.si_paths]))
      probs.append(np.asarray(probabilities(params, stats)))
      names.append((run, period, epoch))
  return names, vectors, probs, np.asarray(dataset.test_labels)


def minima_similarity(config, workdir: str, progress: bool = True) -> tuple[dict, list]:
  """Trains the family (or resumes it), compares its minima, writes similarity.json.

  Returns ``si_jax.analysis.minima.similarity``'s result and the minima's
  (run index, period, epoch).
  """
  experiment.run_family(config, workdir, vmap="no", progress=progress)
  names, vectors, probs, test_y = collect_minima(config, workdir)
  member_names = [name for name, _, _ in experiment.member_overrides(config)]
  result = minima.similarity(names, vectors, probs, test_y, member_names)
  with open(os.path.join(workdir, "similarity.json"), "w") as f:
    json.dump(result, f, indent=1)
  return result, names
