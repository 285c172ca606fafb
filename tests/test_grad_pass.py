"""Appendix B's extra pass: the gradient of the mean train loss over the whole training
set at the epoch's weights (train-mode BN, batch-128 statistics, running statistics
untouched), recomputed here by hand from the final state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import logs, models
from si_jax.engine import loop, train
from si_jax.engine import state as state_lib

from helpers import tiny_config


def tiny(**fields):
  """A tiny run (width 4, 300/100 digits: a partial last batch, lr 0.1, wd 0.01), 3 epochs."""
  return tiny_config(**{"train.epochs": 3, "data.train_size": 300, **fields})


def test_thinning_schedule_of_the_released_code():
  due = [e for e in range(1, 1201) if loop.grad_pass_due(e, -1, 1200)]
  assert due[:20] == list(range(1, 21))
  assert due[20:36] == list(range(25, 101, 5))
  assert due[36:46] == list(range(110, 201, 10))
  assert due[46:62] == list(range(250, 1001, 50))
  assert due[62:] == [1100, 1200]
  assert [e for e in range(1, 9) if loop.grad_pass_due(e, 3, 8)] == [3, 6, 8]
  assert not any(loop.grad_pass_due(e, 0, 8) for e in range(1, 9))


def test_full_pass_gradient_norms_match_a_hand_computation(tmp_path):
  config = tiny(**{"train.grad_pass_every": 2})
  out = train.train_and_evaluate(config, str(tmp_path / "on"), progress=False)
  records = logs.read_run(str(tmp_path / "on"))
  assert ["train_grad_norm" in r for r in records] == [False, True, True]  # epochs 2 and 3
  state, ctx = out["state"], out["task"]
  dataset = state_lib.load_dataset(config)
  x, y = dataset.train_images, dataset.train_labels

  def mean_loss(params):  # batch-128 train-mode statistics, summed, over N
    total = 0.0
    for start in range(0, len(y), 128):
      logits, _ = ctx.model.apply({"params": params, "batch_stats": state.batch_stats},
                                  x[start:start + 128], train=True, mutable=["batch_stats"])
      logp = jax.nn.log_softmax(logits)
      total += -jnp.sum(jnp.take_along_axis(logp, y[start:start + 128, None], axis=1))
    return total / len(y)

  grads = jax.jit(jax.grad(mean_loss))(state.params)  # jitted: eager ops compile one by one
  last = records[-1]
  si = ctx.groups.si_groups
  for name, paths in list(si.items()) + [("", tuple(p for ps in si.values() for p in ps))]:
    prefix = f"{name}/" if name else ""
    g = np.sqrt(sum(np.sum(np.square(np.asarray(models.get_path(grads, p), np.float64)))
                    for p in paths))
    rho = np.sqrt(sum(np.sum(np.square(np.asarray(models.get_path(state.params, p), np.float64)))
                      for p in paths))
    assert last[prefix + "train_grad_norm"] == pytest.approx(g, rel=1e-4)
    assert last[prefix + "train_weight_norm"] == pytest.approx(rho, rel=1e-6)
    assert last[prefix + "train_effective_grad_norm"] == pytest.approx(rho * g, rel=1e-4)
    assert last[prefix + "train_effective_lr"] == pytest.approx(0.1 / rho ** 2, rel=1e-5)
  # the pass leaves training alone: every other key and the BN statistics as without it
  off = train.train_and_evaluate(tiny(**{"train.grad_pass_every": 0}), str(tmp_path / "off"),
                                 progress=False)
  for a, b in zip(records, logs.read_run(str(tmp_path / "off"))):
    assert {k: v for k, v in a.items() if not k.startswith(("train_grad", "train_weight",
            "train_effective", "wall_time")) and "/train_" not in k} == {
                k: v for k, v in b.items() if k != "wall_time"}
  assert jax.tree.all(jax.tree.map(np.array_equal, state.batch_stats, off["state"].batch_stats))
