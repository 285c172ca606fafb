"""Scale-invariant models chosen by name, and their parameter groups.

Each model declares its scale-invariant (SI) groups explicitly (``si_groups()``):
tuples of parameter paths whose joint rescaling leaves the function unchanged. All
other parameters (norm scale/shift, the last layer) are non-SI; they are frozen
unless ``train_non_si`` is on (the paper's "practical" setting, Fig. 21).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from si_jax.models.convnet import ConvNetSI
from si_jax.models import layers
from si_jax.models.layers import NORMS, ParamPath
from si_jax.models.resnet import ResNet18SI

MODELS: dict[str, Callable[..., nn.Module]] = {
    "convnet_si": ConvNetSI,
    "resnet18_si": ResNet18SI,
}
DEFAULT_WIDTH = {"convnet_si": 32, "resnet18_si": 64}


def check_options(*, name: str, norm: str, width: int | None, norm_epsilon: float,
                  conv_impl: str = "xla", last_layer_norm: float | None = None) -> None:
  """Raises ValueError naming the config field (``model.*``) of the first bad value."""
  if name not in MODELS:
    raise ValueError(f"model.name must be one of {sorted(MODELS)}, got {name!r}")
  if norm not in NORMS:
    raise ValueError(f"model.norm must be one of {NORMS}, got {norm!r}")
  if width is not None and (not isinstance(width, int) or isinstance(width, bool) or width <= 0):
    raise ValueError(f"model.width must be a positive integer, got {width!r}")
  if not norm_epsilon >= 0:
    raise ValueError(f"model.norm_epsilon must be non-negative, got {norm_epsilon!r}")
  if conv_impl not in layers.CONV_IMPLS:
    raise ValueError(f"model.conv_impl must be one of {layers.CONV_IMPLS}, got {conv_impl!r}")
  if last_layer_norm is not None and not last_layer_norm > 0:
    raise ValueError(f"model.last_layer_norm must be positive or None, got {last_layer_norm!r}")


def create_model(
    name: str,
    *,
    num_classes: int,
    width: int | None = None,
    norm: str = "batch",
    train_non_si: bool = False,
    norm_epsilon: float = 1e-5,
    conv_impl: str = "xla",
) -> nn.Module:
  """Returns the named model; raises ValueError naming the field on bad input.

  ``norm_epsilon`` is the normalization's epsilon (PyTorch's 1e-5). It is what breaks
  exact scale invariance at small weight norms; 0 makes the model exactly SI (up to
  float round-off) for invariance studies. ``conv_impl`` 'patches' computes the
  convolutions as im2col + matmul (same function and parameters; faster on XLA:CPU).
  """
  width = DEFAULT_WIDTH.get(name) if width is None else width
  check_options(name=name, norm=norm, width=width, norm_epsilon=norm_epsilon, conv_impl=conv_impl)
  if not isinstance(num_classes, int) or num_classes <= 1:
    raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
  return MODELS[name](width=width, num_classes=num_classes, norm=norm,
                      train_non_si=train_non_si, norm_epsilon=norm_epsilon, conv_impl=conv_impl)


@dataclasses.dataclass(frozen=True)
class ParamGroups:
  """Which parameters are scale-invariant, and how they are grouped.

  The optimizer (``optim.make_optimizer``) reads two masks from it: the SI parameters
  (``si_mask``: the union of all groups; always trained, with weight decay, and the
  ones the fixed-norm and fixed-effective-LR ablations act on) and the trainable ones
  (``trainable_mask``: the SI ones, plus every other parameter iff ``train_non_si``).
  The metrics read ``si_groups`` per group.

  Attributes:
    si_groups: group name -> paths of the parameters that are jointly SI.
    last_layer: path of the last layer's weight matrix (rescaled at init by
      ``init_variables``), or None: nothing special.
    train_non_si: whether the non-SI parameters are trained (else frozen).
    allow_overlap: whether a tensor may sit in several groups, as in
      ``find_si_groups``' minimal groups (see ``from_si_groups``).
  """

  si_groups: Mapping[str, tuple[ParamPath, ...]]
  last_layer: ParamPath | None = None
  train_non_si: bool = False
  allow_overlap: bool = False

  @classmethod
  def from_si_groups(cls, si_groups: Mapping[str, Sequence[ParamPath]],
                     train_non_si: bool = True) -> ParamGroups:
    """Groups found by ``si_jax.find_si_groups`` (paths relative to the params the
    optimizer sees), no last layer.

    Minimal groups may overlap: in a pre-LN residual stream each block's branch scales
    with its output kernel or, through the ReLU, with its input kernel, so a tensor can
    sit in two groups. The optimizer takes the union of all SI tensors (each once) for
    its masks; the metrics keep the groups as given. The union of overlapping groups is
    not itself SI (rescaling all of it rescales a branch twice), so the ablations that
    rescale the union jointly (``fix_si_norm``, ``fixed_effective_lr``) are meaningful
    only when ``disjoint``.
    """
    from si_jax.si_groups import check_groups  # si_groups imports the models' layers
    groups = check_groups(si_groups, "si_groups")
    return cls(groups, last_layer=None, train_non_si=train_non_si, allow_overlap=True)

  @property
  def si_paths(self) -> tuple[ParamPath, ...]:
    """Every SI parameter once, in group order."""
    return tuple(dict.fromkeys(p for paths in self.si_groups.values() for p in paths))

  @property
  def disjoint(self) -> bool:
    """Whether no tensor is in two groups (then the union is jointly SI too)."""
    return len(self.si_paths) == sum(len(paths) for paths in self.si_groups.values())

  def si_mask(self, params) -> Any:
    """Pytree of bools: True for SI parameters."""
    si = set(self.si_paths)
    return _map_with_path(lambda path, _: path in si, params)

  def trainable_mask(self, params) -> Any:
    """Pytree of bools: SI parameters always, non-SI ones iff train_non_si."""
    si = set(self.si_paths)
    return _map_with_path(lambda path, _: self.train_non_si or path in si, params)

  def check(self, params) -> None:
    """Every declared path exists; groups are disjoint unless ``allow_overlap``."""
    if not self.allow_overlap and not self.disjoint:
      raise ValueError("SI groups overlap")
    existing = {path for path, _ in flatten_with_paths(params)}
    declared = self.si_paths + (() if self.last_layer is None else (self.last_layer,))
    missing = [p for p in declared if p not in existing]
    if missing:
      raise ValueError(f"declared parameter paths not in the model: {missing}")


def param_groups(model: nn.Module) -> ParamGroups:
  return ParamGroups(model.si_groups(), model.last_layer, model.train_non_si)


def flatten_with_paths(tree) -> list[tuple[ParamPath, Any]]:
  """[(('conv_0', 'kernel'), leaf), ...] for a nested dict of parameters."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(tuple(str(k.key) for k in path), leaf) for path, leaf in leaves]


def _map_with_path(fn, tree):
  return jax.tree_util.tree_map_with_path(lambda kp, x: fn(layers.path_str(kp), x), tree)


def get_path(tree, path: ParamPath):
  for key in path:
    tree = tree[key]
  return tree


def set_path(tree, path: ParamPath, value):
  """Functional update of a nested dict."""
  if not path:
    return value
  return {**tree, path[0]: set_path(tree[path[0]], path[1:], value)}


def init_variables(
    model: nn.Module,
    rng: jax.Array,
    input_shape: tuple[int, ...],
    last_layer_norm: float | None = 10.0,
) -> dict[str, Any]:
  """Initializes {'params', 'batch_stats'} as PyTorch would, then rescales the last layer.

  The last layer's weight matrix is rescaled to Frobenius norm ``last_layer_norm``
  (appendix B and G; the bias is not rescaled). ``None`` keeps the random init.
  """
  if last_layer_norm is not None and not last_layer_norm > 0:
    raise ValueError(f"model.last_layer_norm must be positive or None, got {last_layer_norm!r}")
  variables = jax.jit(functools.partial(model.init, train=False))(
      rng, jnp.zeros((1, *input_shape), jnp.float32)
  )
  variables = {"batch_stats": {}, **variables}
  params = variables["params"]
  groups = param_groups(model)
  groups.check(params)
  if last_layer_norm is not None:
    w = get_path(params, groups.last_layer)
    params = set_path(params, groups.last_layer, w * (last_layer_norm / jnp.linalg.norm(w)))
  return {"params": params, "batch_stats": variables["batch_stats"]}
