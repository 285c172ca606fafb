"""compact_groups: SI groups folded into kinds by the roles of their tensors.

The expected kinds below are written out from the architectures: the pre-LN
transformer's residual stream (both embeddings, every block's attention and MLP output
projections) and, with qk_norm, its query and key projections per block; find_si_groups
also reports the stream with a block's value projection in place of its output kernel
(the attention output is linear in W_V, then W_O). The ConvNet's four convs are one
kind, the ResNet's groups one kind per stage and role. A kind of disjoint SI groups is
SI (rescaling it moves the logits by < 1e-4 relative at LayerNorm epsilon 1e-5, width
16); the union of two overlapping alternatives is not (> 1e-2), so they stay apart.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from si_jax import metrics, models, si_groups
from si_jax.data import sequence

from conftest import make, rng_images
from helpers import paths

WIDTH, BATCH = 16, 32
STREAM = ("embed/embedding", "pos_embed", *(f"block_{i}_{proj}/{leaf}" for i in range(2)
                                          for proj in ("attn/out", "mlp_out")
                                          for leaf in ("kernel", "bias")))


def projection(proj, blocks=(0, 1)):
  """The kernel and bias of attention projection ``proj`` in ``blocks``."""
  return paths(*(f"block_{i}_attn/{proj}/{leaf}" for i in blocks for leaf in ("kernel", "bias")))


def as_sets(groups):
  return {name: frozenset(ps) for name, ps in groups.items()}


@pytest.fixture(scope="module")
def qknorm():
  """(model, params at a generic point, tokens) of transformer_qknorm at width 16."""
  model = models.create_model("transformer_qknorm", num_classes=31, width=WIDTH, norm="layer",
                              train_non_si=True)
  tokens = jnp.asarray(sequence.modular_addition(31)["train_images"][:BATCH])
  params = models.init_variables(model, jax.random.key(1), tokens.shape[1:])["params"]
  return model, si_groups.generic_point(params, seed=3)[0], tokens


@pytest.mark.parametrize("name, kind", [
    ("block_0_attn/key", "block_attn/key"),
    ("block_1/query", "block/query"),
    ("layer2_1/conv1", "layer2/conv1"),
    ("layer3_0_conv1", "layer3_conv1"),
    ("conv_12", "conv"),
    ("stage2_stream", "stage2_stream"),
    ("layers/0/Dense_1#3", "layers/Dense"),
    ("layer2_0/shortcut_conv+layer2_0/conv2+layer2_1/conv2", "layer2/conv2+layer2/shortcut_conv"),
    ("block_0_attn/out+block_1_attn/out/bias+block_1_attn/value",
     "block_attn/out+block_attn/value"),
])
def test_kind_name_drops_block_indices(name, kind):
  assert si_groups.kind_name(name) == kind


def test_declared_transformer_groups_fold_to_three_kinds(qknorm):
  model, _, _ = qknorm
  declared = model.si_groups()
  assert len(declared) == 5
  assert as_sets(si_groups.compact_groups(declared)) == {
      "residual": frozenset(paths(*STREAM)),
      "block/query": frozenset(projection("query")),
      "block/key": frozenset(projection("key"))}


def test_found_transformer_groups_fold_to_kinds_that_are_si(qknorm):
  model, params, tokens = qknorm
  fn = lambda p, x: model.apply({"params": p}, x)
  found = si_groups.find_si_groups(fn, params, tokens, generic=False)
  kinds = si_groups.find_si_groups(fn, params, tokens, generic=False, compact=True)
  assert kinds == si_groups.compact_groups(found) and len(found) == 8
  stream = frozenset(paths(*STREAM))
  value_in = lambda b: (stream - set(paths(f"block_{b}_attn/out/kernel"))) | set(
      projection("value", (b,)))
  both = (value_in(0) & value_in(1)) | set(projection("value"))
  names = "block_attn/out+block_mlp_out+embed/embedding+pos_embed"
  with_value = "block_attn/out+block_attn/value+block_mlp_out+embed/embedding+pos_embed"
  all_value = "block_attn/out/bias+block_attn/value+block_mlp_out+embed/embedding+pos_embed"
  assert as_sets(kinds) == {
      "block_attn/key": frozenset(projection("key")),
      "block_attn/query": frozenset(projection("query")),
      names: stream, with_value: value_in(1), f"{with_value}#2": value_in(0), all_value: both}
  change = si_groups.verify_si_groups(fn, params, kinds, tokens)
  assert max(change.values()) < 1e-4, change
  # the two single-value alternatives share the stream's other tensors: their union
  # rescales W_V and W_O of a block together, f by c^2 there
  union = {"union": tuple(value_in(0) | value_in(1))}
  assert si_groups.verify_si_groups(fn, params, union, tokens)["union"] > 1e-2


def test_convnet_and_resnet_kinds():
  model, v, g = make("convnet_si", width=4, input_shape=(8, 8, 1))
  fn = lambda p, x: model.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True,
                                mutable=["batch_stats"])[0]
  kinds = si_groups.find_si_groups(fn, v["params"], rng_images(32, (8, 8, 1)), compact=True)
  assert kinds == si_groups.compact_groups(g.si_groups) == {
      "conv": paths(*(f"conv_{i}/kernel" for i in range(4)))}
  resnet = models.create_model("resnet18_si", num_classes=10, width=4)
  expected = {}
  for s in range(1, 5):
    writers = ["stem"] if s == 1 else [f"layer{s}_0/shortcut_conv"]
    expected[f"stage{s}_stream"] = paths(*(f"{w}/kernel" for w in writers),
                                         f"layer{s}_0/conv2/kernel", f"layer{s}_1/conv2/kernel")
    expected[f"layer{s}_conv1"] = paths(f"layer{s}_0/conv1/kernel", f"layer{s}_1/conv1/kernel")
  assert si_groups.compact_groups(resnet.si_groups()) == expected


def test_kind_metrics_are_those_of_the_union_of_its_tensors(qknorm):
  model, params, _ = qknorm
  kinds = si_groups.compact_groups(model.si_groups())
  rng = np.random.default_rng(0)
  grads = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), params)
  lr = 0.3
  new_params = jax.tree.map(lambda x, g: x - lr * g, params, grads)
  out = jax.jit(lambda p, g, n: metrics.si_metrics(p, g, n, kinds, lr=lr))(
      params, grads, new_params)
  flat = lambda tree, ps: np.concatenate(
      [np.ravel(np.asarray(models.get_path(tree, p), np.float64)) for p in ps])
  every = tuple(p for ps in kinds.values() for p in ps)
  for prefix, ps in [("", every), *((f"{k}/", ps) for k, ps in kinds.items())]:
    x, g, x_next = flat(params, ps), flat(grads, ps), flat(new_params, ps)
    rho, grad_norm = np.linalg.norm(x), np.linalg.norm(g)
    angle = np.arccos(np.dot(x, x_next) / (rho * np.linalg.norm(x_next)))
    expected = {"weight_norm": rho, "grad_norm": grad_norm, "effective_grad_norm": rho * grad_norm,
                "effective_lr": lr / rho**2, "angular_update": angle}
    for key, value in expected.items():
      np.testing.assert_allclose(float(out[prefix + key]), value, rtol=1e-5, err_msg=prefix + key)
  # 4 query tensors of 2 blocks: rho^2 of the kind is the sum of the blocks' rho^2
  per_block = si_groups.compact_groups({f"block_{i}/query": projection("query", (i,))
                                        for i in range(2)})
  assert list(per_block) == ["block/query"]
  assert np.isclose(float(out["block/query/weight_norm"]) ** 2, sum(
      np.sum(flat(params, projection("query", (i,))) ** 2) for i in range(2)), rtol=1e-5)


def test_bad_groups_raise():
  with pytest.raises(ValueError, match="empty"):
    si_groups.compact_groups({})
  with pytest.raises(TypeError, match="sequence of paths"):
    si_groups.compact_groups({"a": "conv_0/kernel"})
