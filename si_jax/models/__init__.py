"""Scale-invariant models chosen by name, and their parameter groups.

Built-in models declare their SI groups (``si_groups()``); an imported one ('package.module:attr')
has them found. Non-SI parameters are frozen unless ``train_non_si`` (docs/design_notes.md)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from si_jax.models import imported, layers, transformer
from si_jax.models.convnet import ConvNetSI
from si_jax.models.layers import NORMS, ParamPath
from si_jax.models.resnet import ResNet18SI

MODELS: dict[str, Callable[..., nn.Module]] = {
    "convnet_si": ConvNetSI,
    "resnet18_si": ResNet18SI,
    **{name: functools.partial(transformer.Transformer, **options)
       for name, options in transformer.PRESETS.items()},
}
DEFAULT_WIDTH = {"convnet_si": 32, "resnet18_si": 64,
                 **dict.fromkeys(transformer.PRESETS, transformer.DEFAULT_WIDTH)}


def check_options(*, name: str, norm: str, width: int | None, norm_epsilon: float,
                  conv_impl: str = "xla", last_layer_norm: float | None = None) -> None:
  """Raises ValueError naming the ``model.*`` field of the first bad value (imports ``name``)."""
  if imported.is_imported(name):
    imported.resolve(name)
  elif name not in MODELS:
    raise ValueError(f"model.name must be one of {sorted(MODELS)} or 'package.module:attr' "
                     f"(your own model), got {name!r}")
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
  if name in transformer.PRESETS:
    transformer.check_options(norm=norm, width=width)


def create_model(
    name: str,
    *,
    num_classes: int,
    width: int | None = None,
    norm: str = "batch",
    train_non_si: bool = False,
    norm_epsilon: float = 1e-5,
    conv_impl: str = "xla",
) -> nn.Module | imported.ImportedModel:
  """The named model of ``MODELS``, or the one imported from 'package.module:attr'.

  Args:
    name: 'convnet_si', 'resnet18_si', a transformer (``transformer.PRESETS``), or
      'package.module:attr': a linen Module class or factory (``imported.ImportedModel``).
    num_classes: the classifier's outputs (>= 2).
    width: k; None: ``DEFAULT_WIDTH`` (an imported model: its own default).
    norm: 'batch', 'layer' or 'instance'.
    train_non_si: whether the norms have an affine scale and shift (trainable non-SI).
    norm_epsilon: the norm's epsilon (PyTorch's 1e-5; 0 makes the model exactly SI).
    conv_impl: 'xla', or 'patches' (the same convolution as im2col + matmul).

  Raises:
    ValueError: naming the config field of a bad value."""
  width = DEFAULT_WIDTH.get(name) if width is None else width
  check_options(name=name, norm=norm, width=width, norm_epsilon=norm_epsilon, conv_impl=conv_impl)
  if not isinstance(num_classes, int) or num_classes <= 1:
    raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
  if imported.is_imported(name):
    return imported.build(name, num_classes=num_classes, width=width, train_non_si=train_non_si)
  return MODELS[name](width=width, num_classes=num_classes, norm=norm,
                      train_non_si=train_non_si, norm_epsilon=norm_epsilon, conv_impl=conv_impl)


@dataclasses.dataclass(frozen=True)
class ParamGroups:
  """Which parameters are scale-invariant, and how they are grouped.

  Attributes:
    si_groups: group name -> paths of the parameters that are jointly SI.
    last_layer: path of the last layer's weight matrix (rescaled at init), or None.
    train_non_si: whether the non-SI parameters are trained (else frozen).
    allow_overlap: whether a tensor may sit in several groups (``from_si_groups``)."""

  si_groups: Mapping[str, tuple[ParamPath, ...]]
  last_layer: ParamPath | None = None
  train_non_si: bool = False
  allow_overlap: bool = False

  @classmethod
  def from_si_groups(cls, si_groups: Mapping[str, Sequence[ParamPath]],
                     train_non_si: bool = True) -> ParamGroups:
    """Groups found by ``si_jax.find_si_groups``, no last layer; they may overlap.

    Their union is then not SI (docs/design_notes.md). Raises as ``check_groups``."""
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
    """Raises ValueError for a declared path not in ``params``, or overlap not allowed."""
    if not self.allow_overlap and not self.disjoint:
      raise ValueError("SI groups overlap")
    existing = {path for path, _ in flatten_with_paths(params)}
    declared = self.si_paths + (() if self.last_layer is None else (self.last_layer,))
    missing = [p for p in declared if p not in existing]
    if missing:
      raise ValueError(f"declared parameter paths not in the model: {missing}")


def param_groups(model: nn.Module | imported.ImportedModel) -> ParamGroups:
  """The ``ParamGroups`` a si_jax model declares, or an imported model's (after ``init_variables``).

  Raises ValueError as ``ImportedModel.si_groups``."""
  if isinstance(model, imported.ImportedModel):
    return ParamGroups(model.si_groups(), None, model.train_non_si, allow_overlap=True)
  return ParamGroups(model.si_groups(), model.last_layer, model.train_non_si)


def flatten_with_paths(tree) -> list[tuple[ParamPath, Any]]:
  """[(('conv_0', 'kernel'), leaf), ...] for a nested dict of parameters or an nnx State."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(layers.path_str(path), leaf) for path, leaf in leaves]


def _map_with_path(fn, tree):
  return jax.tree_util.tree_map_with_path(lambda kp, x: fn(layers.path_str(kp), x), tree)


def get_path(tree, path: ParamPath):
  """The leaf of a nested dict at ``path``."""
  for key in path:
    tree = tree[key]
  return tree


def set_path(tree, path: ParamPath, value):
  """Functional update of a nested dict."""
  if not path:
    return value
  return {**tree, path[0]: set_path(tree[path[0]], path[1:], value)}


def _init_compiler_options() -> dict[str, Any] | None:
  """LLVM's level 2 for the one-off init on CPU, several times faster to compile.

  It gives the default level 3's bits (tests/test_models.py); level 0 would not.
  """
  return {"xla_backend_optimization_level": 2} if jax.default_backend() == "cpu" else None


def init_variables(
    model: nn.Module | imported.ImportedModel,
    rng: jax.Array,
    input_shape: tuple[int, ...],
    last_layer_norm: float | None = 10.0,
) -> dict[str, Any]:
  """Initializes {'params', 'batch_stats'} as PyTorch would, then rescales the last layer.

  Its weight matrix gets Frobenius norm ``last_layer_norm`` > 0 (appendices B, G; None: kept).
  An imported model's SI groups are found here (ValueError if it has none)."""
  if last_layer_norm is not None and not last_layer_norm > 0:
    raise ValueError(f"model.last_layer_norm must be positive or None, got {last_layer_norm!r}")
  variables = jax.jit(functools.partial(model.init, train=False),
                      compiler_options=_init_compiler_options())(
      rng, jnp.zeros((1, *input_shape), jnp.float32)
  )
  variables = {"batch_stats": {}, **variables}
  params = variables["params"]
  groups = param_groups(model)
  groups.check(params)
  if last_layer_norm is not None and groups.last_layer is not None:
    w = get_path(params, groups.last_layer)
    params = set_path(params, groups.last_layer, w * (last_layer_norm / jnp.linalg.norm(w)))
  return {"params": params, "batch_stats": variables["batch_stats"]}
