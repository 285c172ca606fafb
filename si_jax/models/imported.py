"""Your own model by name: ``model.name = "package.module:attr"``.

``attr``: a linen Module class or factory called with ``num_classes`` (and ``width``), mapping
NHWC images to logits. ``ImportedModel`` wraps it; its SI groups are found at a generic point
(docs/design_notes.md). ``model.last_layer_norm`` does not apply."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax

from si_jax.models.layers import ParamPath

GROUP_BATCH = 16  # inputs per argument set of the group search (two sets)


def is_imported(name: Any) -> bool:
  """Whether a ``model.name`` names a model by import path ('package.module:attr')."""
  return isinstance(name, str) and ":" in name


def _line(e: BaseException) -> str:
  """An exception as one line: its type and the first line of its message."""
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def resolve(name: str) -> Callable[..., Any]:
  """The class or factory that ``name`` = 'package.module:attr' names.

  Raises ValueError naming ``name``: another form, no such module or attribute, not callable."""
  module_name, _, attr = name.partition(":")
  if not module_name or not attr:
    raise ValueError(f"model.name={name!r}: an imported model is named 'package.module:attr'")
  try:
    target = importlib.import_module(module_name)
  except Exception as e:  # ImportError, or whatever the module raises while importing
    raise ValueError(f"model.name={name!r}: module {module_name!r} cannot be imported "
                     f"({_line(e)})") from e
  for part in attr.split("."):
    if not hasattr(target, part):
      raise ValueError(f"model.name={name!r}: module {module_name!r} has no attribute {attr!r}")
    target = getattr(target, part)
  if not callable(target):
    raise ValueError(f"model.name={name!r}: {attr!r} is a {type(target).__name__}, not a "
                     "linen Module class nor a factory")
  return target


def build(name: str, *, num_classes: int, width: int | None = None,
          train_non_si: bool = False) -> ImportedModel:
  """The model ``name`` names, built with ``num_classes`` (and ``width`` unless None).

  Raises ValueError naming ``name``, as ``resolve``, or when the call fails or is no Module."""
  target = resolve(name)
  kwargs = {"num_classes": num_classes, **({} if width is None else {"width": width})}
  try:
    module = target(**kwargs)
  except Exception as e:
    raise ValueError(f"model.name={name!r} does not build from {kwargs}: {_line(e)}") from e
  if not isinstance(module, nn.Module):
    raise ValueError(f"model.name={name!r} built a {type(module).__name__}, not a "
                     "flax.linen Module")
  return ImportedModel(name, module, num_classes, train_non_si)


@functools.lru_cache(maxsize=64)
def _takes_train(module_type: type) -> bool:
  params = inspect.signature(module_type.__call__).parameters
  return "train" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


@dataclasses.dataclass(frozen=True)
class ImportedModel:
  """A linen Module named by import path, with a built-in model's interface."""

  name: str
  module: nn.Module
  num_classes: int
  train_non_si: bool = False
  last_layer: ClassVar[ParamPath | None] = None
  # the input shape init saw (per example): what si_groups() searches with
  _input_shape: list = dataclasses.field(default_factory=list, compare=False, repr=False)

  def _call_kwargs(self, train: bool) -> dict[str, bool]:
    return {"train": train} if _takes_train(type(self.module)) else {}

  def init(self, rng: jax.Array, x: jax.Array, train: bool = False) -> dict[str, Any]:
    """The module's variables for inputs shaped like ``x`` (ValueError when it fails)."""
    self._input_shape[:] = [tuple(x.shape[1:])]
    try:
      return self.module.init(rng, x, **self._call_kwargs(train))
    except Exception as e:
      raise ValueError(f"model.name={self.name!r} does not build: initializing it on inputs "
                       f"of shape {tuple(x.shape)} failed ({_line(e)})") from e

  def apply(self, variables, x: jax.Array, train: bool = False, mutable=False):
    """Logits; with ``mutable``, (logits, updates) with a 'batch_stats' entry."""
    out = self.module.apply(variables, x, **self._call_kwargs(train), mutable=mutable)
    if mutable is False:
      return out
    logits, updated = out
    return logits, {"batch_stats": {}, **updated}

  def si_groups(self) -> dict[str, tuple[ParamPath, ...]]:
    """Its SI groups at a generic point (``find_groups``); ValueError before ``init``, or as it."""
    if not self._input_shape:
      raise ValueError(f"model.name={self.name!r}: its SI groups are found on its inputs: "
                       "initialize it first (models.init_variables)")
    return find_groups(self, self._input_shape[0])


@functools.lru_cache(maxsize=16)
def find_groups(model: ImportedModel, input_shape: tuple[int, ...]
                ) -> dict[str, tuple[ParamPath, ...]]:
  """``find_si_groups`` of the train-mode logits at a generic point (init key 0, normal inputs).

  Raises:
    ValueError: naming the model: it does not build, its output is not (batch, classes)
      logits, or it has no SI group."""
  from si_jax.si_groups import find_si_groups  # si_groups imports the models' layers
  key = jax.random.key(0)
  x, more = (jax.random.normal(jax.random.fold_in(key, k), (GROUP_BATCH, *input_shape))
             for k in (1, 2))
  variables = model.init(key, x, train=False)
  stats = variables.get("batch_stats", {})
  fn = lambda p, x: model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                mutable=["batch_stats"])[0]
  logits = jax.eval_shape(fn, variables["params"], x)
  if logits.shape != (GROUP_BATCH, model.num_classes):
    raise ValueError(f"model.name={model.name!r} returns an output of shape {logits.shape} "
                     f"for {GROUP_BATCH} inputs, not ({GROUP_BATCH}, {model.num_classes}) logits")
  groups = find_si_groups(fn, variables["params"], x, more_args=[(more,)])
  if not groups:
    raise ValueError(f"model.name={model.name!r} has no scale-invariant parameter group "
                     "(find_si_groups at a generic point found none): si_jax needs "
                     "normalized weights")
  return groups
