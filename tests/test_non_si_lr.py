"""optim.non_si_lr, the released code's separate learning rate for trainable non-SI
parameters: -1 the SI lr, 0 frozen, > 0 its own; checked against Eq. (2) by hand."""

import jax
import numpy as np
import pytest

from si_jax import models, optim

from conftest import make

LR, WD = 0.1, 0.01


def one_step(non_si_lr, momentum=0.0):
  model, v, g = make("convnet_si", train_non_si=True)
  params = v["params"]
  grads = jax.tree.map(lambda x: np.random.default_rng(x.size).standard_normal(x.shape)
                       .astype(np.float32), params)
  tx = optim.make_optimizer(params, g, lr=LR, wd=WD, momentum=momentum, non_si_lr=non_si_lr)
  updates, _ = tx.update(grads, tx.init(params), params)
  si = set(g.si_paths)
  rows = []
  for (path, p), (_, gr), (_, u) in zip(models.flatten_with_paths(params),
                                        models.flatten_with_paths(grads),
                                        models.flatten_with_paths(updates)):
    rows.append((path in si, np.asarray(p, np.float64), np.asarray(gr, np.float64),
                 np.asarray(u, np.float64)))
  return rows


@pytest.mark.parametrize("non_si_lr, expected", [(-1.0, LR), (0.05, 0.05), (0.0, 0.0)])
def test_non_si_parameters_step_with_their_own_lr(non_si_lr, expected):
  rows = one_step(non_si_lr)
  assert any(not si for si, *_ in rows)
  for si, p, gr, u in rows:
    lr = LR if si else expected
    np.testing.assert_allclose(u, -lr * (gr + WD * p), rtol=2e-6, atol=1e-7)


def test_non_si_lr_needs_trainable_non_si_and_a_valid_value():
  model, v, g = make("convnet_si", train_non_si=False)
  with pytest.raises(ValueError, match="model.train_non_si is False"):
    optim.make_optimizer(v["params"], g, lr=LR, non_si_lr=0.05)
  model, v, g = make("convnet_si", train_non_si=True)
  with pytest.raises(ValueError, match="optim.non_si_lr must be -1"):
    optim.make_optimizer(v["params"], g, lr=LR, non_si_lr=-0.5)
