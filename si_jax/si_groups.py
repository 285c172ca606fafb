"""Scale-invariant parameter groups, found numerically for any model's parameters.

A group S of tensors is scale-invariant (SI) when f(c x_S, x_rest) = f(x) for every c > 0
(property (1a)); Euler's theorem then gives, for every output direction u, (E):
sum_{i in S} <grad_{x_i} (u . f)(x), x_i> = 0, by which appendix A.2 drops the cross term
of Eqs. (3) and (8). ``find_si_groups`` finds the groups from (E) and confirms each by
rescaling at a ``generic_point``; ``verify_si_groups`` checks given ones on any state;
``compact_groups`` folds groups that differ only by block indices into one kind.
Method and tolerances: docs/design_notes.md; the generic point: docs/analysis_notes.md."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from si_jax.models.layers import ParamPath
from si_jax.models.layers import path_str as _path_str

DEFAULT_RTOL = 3e-3
DEFAULT_MARGIN = 0.1
DEFAULT_SCALES = (0.5, 2.0)
UNUSED_TOL = 1e-6  # max_k ||grad_i(u_k . f)|| ||x_i|| / ||f|| below this: f ignores x_i
MAX_NULL_DIM = 16  # 2^16 pivot patterns per component at most
GENERIC_SIZE = 0.5  # a degenerate tensor moves by this fraction of its natural scale
TINY_CONSTANT = 0.05  # a constant or vector below this fraction of its natural scale: as a zero
TINY_BIAS = 1e-3  # a bias below this fraction of its kernel's output scale: as a zero
MAX_WARNED = 10  # warnings of one kind per search; the report holds every one
_TINY = 1e-30


@dataclasses.dataclass(frozen=True)
class SIGroupsReport:
  """What ``find_si_groups`` measured.

  Attributes:
    groups: name -> paths of each accepted group.
    euler: name -> Euler residual ||M 1_S|| ~ ||d/dc f(c x_S)|| / ||f||, Eq. (E).
    value: name -> max_c ||f(c x_S) - f(x)|| / ||f(x)||.
    baseline: name -> the same change under a random perturbation of x_S of equal size.
    zero: paths excluded for norm 0; unused: paths f does not depend on.
    rejected: name -> (euler, value, baseline) of candidates that failed confirmation.
    nearest_non_si: (path, ||M_i||) of the tensor in no group closest to rtol.
    near_non_si: every (path, ||M_i||) in no group below 3 rtol, nearest first.
    small_only: '+'.join(paths) of groups SI only while barely read tensors stay small ->
      those tensors; the groups with them are reported instead.
    read_without_gradient: path -> the change of f when it doubles, for tensors of zero
      gradient that f reads (a stop_gradient): the search cannot place them.
    generic: whether the search ran at a ``generic_point``; moved: the tensors it moved.
    degenerate_only: '+'.join(paths) of groups SI only at the moved tensors' given values."""

  groups: dict[str, tuple[ParamPath, ...]]
  euler: dict[str, float]
  value: dict[str, float]
  baseline: dict[str, float]
  zero: tuple[ParamPath, ...]
  unused: tuple[ParamPath, ...]
  rejected: dict[str, tuple[float, float, float]]
  nearest_non_si: tuple[ParamPath, float] | None
  generic: bool = False
  moved: tuple[ParamPath, ...] = ()
  degenerate_only: dict[str, tuple[ParamPath, ...]] = dataclasses.field(default_factory=dict)
  near_non_si: tuple[tuple[ParamPath, float], ...] = ()
  small_only: dict[str, tuple[ParamPath, ...]] = dataclasses.field(default_factory=dict)
  read_without_gradient: dict[ParamPath, float] = dataclasses.field(default_factory=dict)


class _Model:
  """fn over flattened numpy leaves (rescaled copies compile nothing), one output vector."""

  def __init__(self, fn: Callable, params, arg_sets: Sequence[tuple]):
    keyed, self.treedef = jax.tree_util.tree_flatten_with_path(params)
    self.paths = [_path_str(kp) for kp, _ in keyed]
    self.leaves = [np.asarray(x) for _, x in keyed]
    bad = [p for p, x in zip(self.paths, self.leaves) if not np.issubdtype(x.dtype, np.inexact)]
    if bad:
      raise ValueError(f"params must hold floating arrays only; not floating: {bad}")
    if len(set(self.paths)) != len(self.paths):
      raise ValueError(f"parameter paths collide once converted to strings: {self.paths}")
    self.arg_sets = [tuple(a) for a in arg_sets]
    self.norms = np.array([float(np.linalg.norm(x)) for x in self.leaves])
    self.apply, self._jvp, self.vjp = _compiled(fn, self.treedef)
    self.base = [np.asarray(self.apply(self.leaves, args)) for args in self.arg_sets]
    for k, y in enumerate(self.base):
      if not np.all(np.isfinite(y)):
        raise ValueError(
            f"fn returned {int(np.sum(~np.isfinite(y)))} non-finite values (NaN or inf) of "
            f"{y.size} at the given params and argument set {k}: scale invariance cannot be "
            "measured there")
    self.base_norms = [max(float(np.linalg.norm(y)), _TINY) for y in self.base]

  def change(self, new_leaves) -> float:
    """Max over argument sets of ||f(new) - f(x)|| / ||f(x)||."""
    return max(float(np.linalg.norm(np.asarray(self.apply(new_leaves, args)) - y)) / n
               for args, y, n in zip(self.arg_sets, self.base, self.base_norms))

  def euler(self, members: Sequence[int]) -> float:
    """Max over argument sets of ||d/dc f(c x_S) at c = 1|| / ||f(x)||, Eq. (E)."""
    tangents = [x if i in members else np.zeros_like(x) for i, x in enumerate(self.leaves)]
    return max(float(np.linalg.norm(self._jvp(self.leaves, tangents, args))) / n
               for args, n in zip(self.arg_sets, self.base_norms))

  def scaled(self, members: Sequence[int], c: float) -> list:
    return [x * np.asarray(c, x.dtype) if i in members else x for i, x in enumerate(self.leaves)]

  def rescaled_change(self, leaves: Sequence[np.ndarray], members: Sequence[int],
                      scales: Sequence[float]) -> float:
    """Max over c and argument sets of ||f(c x_S, x_rest) - f(x)|| / ||f(x)|| at ``leaves``."""
    worst = 0.0
    for args in self.arg_sets:
      y = np.asarray(self.apply(leaves, args))
      norm = max(float(np.linalg.norm(y)), _TINY)
      for c in scales:
        scaled = [x * np.asarray(c, x.dtype) if i in members else x for i, x in enumerate(leaves)]
        worst = max(worst, float(np.linalg.norm(np.asarray(self.apply(scaled, args)) - y)) / norm)
    return worst

  def perturbed(self, members: Sequence[int], size: float, rng: np.random.Generator) -> list:
    """x_S + size * xi with xi a random unit vector over the stacked group."""
    noise = {i: rng.standard_normal(self.leaves[i].shape) for i in members}
    scale = size / np.sqrt(sum(np.sum(n * n) for n in noise.values()))
    return [(x + scale * noise[i]).astype(x.dtype) if i in noise else x
            for i, x in enumerate(self.leaves)]


@functools.lru_cache(maxsize=16)
def _compiled(fn: Callable, treedef) -> tuple[Callable, Callable, Callable]:
  """Compiled f(leaves, args) as one vector, its JVP and its VJP (one cotangent: design_notes)."""
  apply = jax.jit(lambda leaves, args: _as_vector(fn(treedef.unflatten(leaves), *args)))
  jvp = jax.jit(lambda leaves, tangents, args: jax.jvp(
      lambda ls: apply(ls, args), (leaves,), (tangents,))[1])
  vjp = jax.jit(lambda leaves, args, u: jax.vjp(lambda ls: apply(ls, args), leaves)[1](u)[0])
  return apply, jvp, vjp


def _as_vector(out) -> jax.Array:
  leaves = [jnp.ravel(x) for x in jax.tree.leaves(out)
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  if not leaves:
    raise ValueError("fn must return floating arrays (e.g. logits), got none")
  return jnp.concatenate(leaves).astype(jnp.float32)


def _probe_matrix(model: _Model, columns: Sequence[int], num_probes: int | None,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """M[k, i] = <grad_{x_i}(u_k . f), x_i> / ||f|| (stacked over argument sets), and the sizes."""
  rows, sizes = [], np.zeros(len(columns))
  leaves = [model.leaves[i].astype(np.float64) for i in columns]
  for args, y, norm in zip(model.arg_sets, model.base, model.base_norms):
    k = min(y.size, num_probes or len(columns) + 16)
    if k == y.size:  # every output coordinate: the exact Jacobian-vector products
      probes = np.eye(y.size, dtype=np.float32)
    else:  # E ||U v||^2 = ||v||^2 for U with N(0, 1/k) entries
      probes = (rng.standard_normal((k, y.size)) / np.sqrt(k)).astype(np.float32)
    block = np.empty((k, len(columns)))
    for row, u in enumerate(probes):
      grads = model.vjp(model.leaves, args, u)
      grads = [np.asarray(grads[i], np.float64) for i in columns]
      block[row] = [np.vdot(g, x) for g, x in zip(grads, leaves)]
      sizes = np.maximum(sizes, [np.linalg.norm(g) * np.linalg.norm(x) / norm
                                 for g, x in zip(grads, leaves)])
    rows.append(block / norm)
  return np.concatenate(rows), sizes


def _null_space(m: np.ndarray, tol: float) -> np.ndarray:
  """Orthonormal basis (columns) of {z : ||M z|| <= tol ||z||}, numerically."""
  _, s, vt = np.linalg.svd(m, full_matrices=True)
  rank = int(np.sum(s > tol))
  return vt[rank:].T


def _pivots(basis: np.ndarray) -> list[int]:
  """d rows of the (n x d) basis that span it, well conditioned (greedy pivoted QR)."""
  rest, pivots = basis.copy(), []
  for _ in range(basis.shape[1]):
    i = int(np.argmax(np.linalg.norm(rest, axis=1)))
    pivots.append(i)
    q = rest[i] / np.linalg.norm(rest[i])
    rest = rest - np.outer(rest @ q, q)
  return pivots


def _components(coeffs: np.ndarray, pivots: list[int], tol: float = 0.05) -> list[list[int]]:
  """The matroid's components over the pivots: joined when a column uses both."""
  parent = list(range(len(pivots)))

  def find(a):
    while parent[a] != a:
      parent[a] = parent[parent[a]]
      a = parent[a]
    return a

  for row in np.abs(coeffs) > tol:
    linked = np.flatnonzero(row)
    for a in linked[1:]:
      parent[find(a)] = find(linked[0])
  comps: dict[int, list[int]] = {}
  for a in range(len(pivots)):
    comps.setdefault(find(a), []).append(a)
  return list(comps.values())


def _binary_null_vectors(m: np.ndarray, rtol: float, max_dim: int) -> list[tuple[int, ...]]:
  """Supports of the 0/1 vectors z with M z ~ 0 (step 3), as column index tuples."""
  if m.shape[1] == 0:
    return []
  basis = _null_space(m, rtol)
  if basis.shape[1] == 0:
    return []
  pivots = _pivots(basis)
  coeffs = basis @ np.linalg.inv(basis[pivots])  # z = coeffs @ z_P; coeffs[pivots] = I
  supports = set()
  for comp in _components(coeffs, pivots):
    if len(comp) > max_dim:
      raise ValueError(
          f"a component of {len(comp)} independent near-SI directions exceeds max_null_dim="
          f"{max_dim}: the model may have exponentially many minimal groups (K normalized "
          "towers into one norm have 2^K), or f barely reads some tensors (they count too); "
          "pass more argument sets (more_args) or raise max_null_dim")
    patterns = np.array(list(itertools.product((0.0, 1.0), repeat=len(comp)))[1:])
    z = patterns @ coeffs[:, comp].T  # (patterns, columns)
    binary = np.all((np.abs(z) < 0.25) | (np.abs(z - 1) < 0.25), axis=1)
    supports.update(tuple(np.flatnonzero(row > 0.5)) for row in z[binary])
  return sorted(supports, key=lambda s: (len(s), s))


def _confirm(model: _Model, candidates, euler_fn: Callable, rtol: float, margin: float,
             scales, rng: np.random.Generator):
  """Step 4: the accepted minimal groups, their (euler, value, baseline), the rejected."""
  accepted, stats, rejected = [], {}, {}
  for members in sorted(candidates, key=lambda s: (len(s), s)):
    if any(set(a) <= set(members) for a in accepted):
      continue  # not minimal
    euler = euler_fn(members)
    group_norm = float(np.sqrt(sum(model.norms[i] ** 2 for i in members)))
    value = baseline = 0.0
    flat = True
    for c in scales:
      change = model.change(model.scaled(members, c))
      noise = model.perturbed(members, abs(c - 1) * group_norm, rng)
      reference = model.change(noise)
      flat &= change <= margin * reference
      value, baseline = max(value, change), max(baseline, reference)
    if euler <= rtol and value <= rtol and flat:
      accepted.append(members)
      stats[members] = (euler, value, baseline)
    else:
      rejected[members] = (euler, value, baseline)
  return accepted, stats, rejected


def _degenerate(x: np.ndarray) -> bool:
  """Exactly zero, or constant over two or more entries (a framework init's 0 or 1)."""
  return x.size > 0 and (not np.any(x) or (x.size > 1 and bool(np.all(x == x.flat[0]))))


def _natural_scale(i: int, paths: Sequence[ParamPath], leaves: Sequence[np.ndarray],
                   degenerate: Sequence[bool]) -> float:
  """Tensor i's natural scale (``generic_point``), from the tensors beside it."""
  beside = [j for j, p in enumerate(paths)
            if j != i and p[:-1] == paths[i][:-1] and jnp.issubdtype(leaves[j].dtype, jnp.inexact)
            and np.any(leaves[j])]
  generic = [j for j in beside if not degenerate[j]]
  if generic:
    rms = _rms(np.concatenate([np.ravel(leaves[j]) for j in generic]))
    size = leaves[i].size
    fan_in = [leaves[j].size // size for j in generic if _kernel_of(leaves[j], leaves[i])]
    return rms * float(np.sqrt(max(fan_in))) if fan_in else rms  # a bias: the output's scale
  if np.any(leaves[i]) or not beside:  # a constant beside constants only: 1
    return 1.0
  return max(float(np.abs(leaves[j].flat[0])) for j in beside)  # a zero bias: the scale's


def _kernel_of(kernel: np.ndarray, bias: np.ndarray) -> bool:
  """Whether ``bias`` has ``kernel``'s trailing (output) axes: (D,) of Dense's (F, D)."""
  return 1 <= bias.ndim < kernel.ndim and kernel.shape[kernel.ndim - bias.ndim:] == bias.shape


def _rms(x: np.ndarray) -> float:
  return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _tiny_vector(i: int, paths: Sequence[ParamPath], leaves: Sequence[np.ndarray]) -> bool:
  """A vector or scalar near 0 for its role, random or not.

  A kernel's bias below TINY_BIAS of the kernel's output scale (a step from 0); any other
  (a layer scale, a temperature) below TINY_CONSTANT: its branch is nearly off, below what
  float32 resolves at 1e-6, or within rtol of off at 1e-2."""
  x = leaves[i]
  if x.size == 0:
    return False
  kernels = [j for j, p in enumerate(paths)
             if j != i and p[:-1] == paths[i][:-1] and _kernel_of(leaves[j], x)]
  if kernels:  # torch's bias init is 1/sqrt(fan-in) of the output's scale: kept
    scale = max(_rms(leaves[j]) * np.sqrt(leaves[j].size // x.size) for j in kernels)
    return _rms(x) < TINY_BIAS * scale
  return x.ndim <= 1 and _rms(x) < TINY_CONSTANT


def generic_point(params, seed: int = 0):
  """(``params``, each zero, constant or tiny vector tensor moved, and their paths).

  Why and how: docs/analysis_notes.md#the-generic-point; ``seed`` fixes the point."""
  keyed, treedef = jax.tree_util.tree_flatten_with_path(params)
  paths = [_path_str(kp) for kp, _ in keyed]
  leaves = [np.asarray(x) for _, x in keyed]
  degenerate = [jnp.issubdtype(x.dtype, jnp.inexact) and (_degenerate(x) or _tiny_vector(
      i, paths, leaves)) for i, x in enumerate(leaves)]
  rng = np.random.default_rng([seed, 1])
  out = [x for _, x in keyed]
  for i, x in enumerate(leaves):
    if not degenerate[i]:
      continue
    scale = _natural_scale(i, paths, leaves, degenerate)
    if _rms(x) >= TINY_CONSTANT * scale:  # a norm's scale of 1
      new = x * (1 + GENERIC_SIZE * rng.uniform(-1.0, 1.0, x.shape))
    else:  # zero, or a branch nearly switched off (a layer scale of 1e-6)
      new = GENERIC_SIZE * scale * rng.standard_normal(x.shape)
    out[i] = new.astype(x.dtype)
  return treedef.unflatten(out), tuple(p for p, d in zip(paths, degenerate) if d)


def _in_float32(params):
  """``params`` with bfloat16 and float16 leaves in float32 (groups do not hang on dtype)."""
  return jax.tree.map(lambda x: np.asarray(x, np.float32) if jnp.issubdtype(
      jnp.result_type(x), jnp.floating) and jnp.dtype(jnp.result_type(x)).itemsize < 4 else x,
      params)


def _check_scales(scales) -> None:
  if not scales or any(not (c > 0) or c == 1 for c in scales):
    raise ValueError(f"scales must be positive factors other than 1, got {scales!r}")


def check_paths(paths, where: str) -> tuple[ParamPath, ...]:
  """``paths`` (e.g. (('conv_0', 'kernel'),)) as tuples of str; a string is never split.

  Raises TypeError for a string or non-sequence, ValueError for an empty one, naming ``where``."""
  example = "e.g. (('dense_0', 'kernel'),), not 'dense_0/kernel'"
  if isinstance(paths, (str, bytes)) or not isinstance(paths, Sequence):
    raise TypeError(f"{where} must be a sequence of paths, each a tuple of path components "
                    f"({example}); got {paths!r}")
  if not paths:
    raise ValueError(f"{where} is empty: a group needs at least one parameter path")
  out = []
  for p in paths:
    if isinstance(p, (str, bytes)) or not isinstance(p, Sequence):
      raise TypeError(f"{where} holds {p!r} where a path is expected: pass each path as a "
                      f"tuple of path components ({example})")
    if not p:
      raise ValueError(f"{where} holds an empty path ()")
    out.append(tuple(str(k) for k in p))
  return tuple(out)


def check_groups(si_groups, where: str = "si_groups", allow_none: bool = False,
                 ) -> dict[str, tuple[ParamPath, ...]]:
  """{name: ``check_paths(paths)``} for a {name: paths} mapping; ``allow_none``: {} is valid."""
  if not isinstance(si_groups, Mapping):
    raise TypeError(f"{where} must be a mapping {{group name: paths}}, got "
                    f"{type(si_groups).__name__}")
  if not si_groups and not allow_none:
    raise ValueError(f"{where} is empty: no SI group to act on (find_si_groups found none?)")
  return {name: check_paths(paths, f"{where}[{name!r}]") for name, paths in si_groups.items()}


def check_in_params(si_groups: Mapping[str, Sequence[ParamPath]], params,
                    where: str = "si_groups") -> None:
  """Raises ValueError naming the first path of ``si_groups`` not in ``params``, and the closest."""
  known = [_path_str(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  known_set = set(known)
  for name, paths in si_groups.items():
    chars = [str(k) for q in paths for k in q]
    for p in (tuple(str(k) for k in p) for p in paths):
      if p in known_set:
        continue
      joined = {"/".join(q): q for q in known}
      close = [repr(joined[c]) if any("/" in k for k in joined[c]) else c  # a key with '/'
               for c in difflib.get_close_matches("/".join(p), list(joined), n=3, cutoff=0.5)]
      pieces = p if len(p) > 1 else chars  # a path, or the whole group, split up
      hint = (f"; it looks like the string {''.join(pieces)!r} split into characters: pass "
              "each path as a tuple of path components" if len(pieces) > 1 and
              all(len(k) == 1 for k in pieces) else "")
      raise ValueError(f"{where}[{name!r}]: path {p} is not in the params (closest: "
                       f"{', '.join(close) or 'none'}){hint}")


def group_name(group: Sequence[ParamPath], all_paths: Sequence[ParamPath]) -> str:
  """A readable name for a group, e.g. 'stem+layer1_0/conv2' (shortest covering prefixes)."""
  members, names = set(group), []
  for path in group:
    name = None
    for k in range(1, len(path)):
      under = [q for q in all_paths if q[:k] == path[:k]]
      if len(under) > 1 and all(q in members for q in under):
        name = "/".join(path[:k])
        break
    if name is None:
      name = "/".join(path[:-1] if len(path) > 1 and path[-1] == "kernel" else path)
    if name not in names:
      names.append(name)
  return "+".join(names)


_BLOCK_INDEX = re.compile(r"_\d+(?=_|$)")  # 'block_0_attn' -> 'block_attn', 'layer1_0' -> 'layer1'


def kind_name(name: str) -> str:
  """A group's name without its block indices: the kind ``compact_groups`` files it under.

  Per '/'-separated component of each '+'-joined piece, '_<digits>' before a '_' or the end
  is dropped ('block_0_attn/key' -> 'block_attn/key', 'layer1_0/conv1' -> 'layer1/conv1',
  'conv_2' -> 'conv') and so is an all-digit component (a list index); so is a trailing
  '#<digits>' (``find_si_groups``' duplicate names). The pieces are then kept once, sorted,
  without those under another ('a/out/bias' under 'a/out'): the name depends on which roles
  the group holds, not on their order."""
  pieces = set()
  for piece in re.sub(r"#\d+$", "", name).split("+"):
    parts = [_BLOCK_INDEX.sub("", c) for c in piece.split("/") if not c.isdigit()]
    pieces.add("/".join(parts) or piece)
  return "+".join(sorted(p for p in pieces if not any(p.startswith(q + "/") for q in pieces)))


def compact_groups(groups: Mapping[str, Sequence[ParamPath]]) -> dict[str, tuple[ParamPath, ...]]:
  """{kind: the union of the paths of its groups}: groups merged by ``kind_name``.

  E.g. a transformer's 'block_0/query', 'block_1/query' -> 'block/query'; a ResNet's
  'layer2_0/conv1', 'layer2_1/conv1' -> 'layer2/conv1'. Only disjoint groups merge, so each
  kind of SI groups is SI (rescaling it rescales each group, which (1a) leaves f unchanged
  in turn); a group sharing a tensor with its kind (an alternative ``find_si_groups``
  reports, e.g. a block's value projection for its output projection) starts the next
  kind of that name, 'kind#2'. Kinds keep the order of their first group, paths that of
  their groups. ``si_metrics`` over the kinds gives the union's metrics and each kind's, as
  over groups. Raises as ``check_groups``."""
  kinds: dict[str, list[ParamPath]] = {}
  for name, paths in check_groups(groups, "groups").items():
    kind = label = kind_name(name)
    count = 1
    while label in kinds and not set(kinds[label]).isdisjoint(paths):
      count += 1
      label = f"{kind}#{count}"
    kinds.setdefault(label, []).extend(paths)
  return {kind: tuple(dict.fromkeys(paths)) for kind, paths in kinds.items()}


def find_si_groups(
    fn: Callable[..., Any],
    params,
    *args,
    more_args: Sequence[tuple] = (),
    rtol: float = DEFAULT_RTOL,
    margin: float = DEFAULT_MARGIN,
    scales: Sequence[float] = DEFAULT_SCALES,
    num_probes: int | None = None,
    seed: int = 0,
    max_null_dim: int = MAX_NULL_DIM,
    generic: bool = True,
    return_report: bool = False,
    compact: bool = False,
):
  """Every minimal group of tensors on which ``fn(params, *args)`` is scale-invariant.

  Groups that hold at ``params`` only because a tensor is zero or constant there are left
  out (with a warning) unless ``generic`` is False; a near-SI tensor in no group warns too.

  Args:
    fn: jittable f(params, *args) -> floating arrays (e.g. logits; train-mode BN: output only).
    params: a pytree of floating arrays (linen params, an nnx ``State`` or its pure dict).
    *args: the arguments after params, e.g. a batch of inputs.
    more_args: further argument tuples: more rows of M; confirmation takes the worst.
    rtol: tolerance of the relative residuals (Euler and value).
    margin: the rescaling change must be <= margin x that of a random perturbation.
    scales: rescaling factors c of the confirmation.
    num_probes: output directions per argument set; default min(outputs, tensors + 16).
    seed: for the generic point, the random probes and perturbations.
    max_null_dim: largest null-space dimension enumerated per component (2^d patterns).
    generic: search at ``generic_point(params, seed)``, else at ``params``.
    return_report: also return a ``SIGroupsReport``.
    compact: return ``compact_groups`` of the groups (the report keeps each group).

  Returns:
    {name: (path, ...)} ({kind: (path, ...)} with ``compact``), and the ``SIGroupsReport``
    with ``return_report``.

  Raises:
    ValueError: a non-finite ``fn``, bad ``scales`` or non-floating leaves."""
  _check_scales(scales)
  search = functools.partial(_search, rtol=rtol, margin=margin, scales=scales,
                             num_probes=num_probes, max_null_dim=max_null_dim, seed=seed)
  arg_sets = (args, *more_args)
  params = _in_float32(params)
  at, moved = generic_point(params, seed) if generic else (params, ())
  model = _Model(fn, at, arg_sets)
  report = dataclasses.replace(search(model), generic=generic, moved=moved)
  if moved:  # which groups of the params as given the generic point breaks, for the warning
    broken = _degenerate_only(_Model(fn, params, arg_sets), model, report, search)
    report = dataclasses.replace(report, degenerate_only=broken)
  _warn(report, rtol)
  groups = compact_groups(report.groups) if compact else report.groups
  return (groups, report) if return_report else groups


def _warn(report: SIGroupsReport, rtol: float) -> None:
  """One line for a near-SI tensor in no group, one per group of ``degenerate_only``."""
  if report.nearest_non_si is not None and report.nearest_non_si[1] < 3 * rtol:
    path, residual = report.nearest_non_si
    near = (f"below rtol={rtol:g}, yet the rescaling check rejected it (f may barely "
            "depend on it)" if residual <= rtol else f"within 3x of rtol={rtol:g}")
    others = [f"{'/'.join(p)} ({r:.1e})" for p, r in report.near_non_si if p != path]
    also = (f"; also near SI: {', '.join(others[:3])}"
            f"{f' and {len(others) - 3} more' if len(others) > 3 else ''}" if others else "")
    warnings.warn(  # noqa: B028 -- stacklevel would move the reported line (behaviour)
        f"{'/'.join(path)} is in no SI group but its Euler residual {residual:.2e} is "
        f"{near}: the groups found may depend on the tolerance{also}")
  for path, change in report.read_without_gradient.items():
    warnings.warn(  # noqa: B028
        f"{'/'.join(path)} has a zero gradient, yet doubling it changes f by {change:.1e} "
        "(a stop_gradient or a custom VJP?): the search cannot tell which groups hold it")
  for label, small in report.small_only.items():
    warnings.warn(  # noqa: B028
        f"SI group {label} holds here only because f barely reads "
        f"{', '.join('/'.join(p) for p in small)}: it stops holding once training grows "
        f"{'it' if len(small) == 1 else 'them'}, so the groups with "
        f"{'it' if len(small) == 1 else 'them'} are reported instead")
  shown = list(report.degenerate_only.items())[:MAX_WARNED]
  if len(report.degenerate_only) > MAX_WARNED:
    warnings.warn(  # noqa: B028
        f"{len(report.degenerate_only)} SI groups hold at the given params only because "
        f"tensors are zero, constant or near zero there; the first {MAX_WARNED} follow, all "
        "in report.degenerate_only")
  for label, needs in shown:
    warnings.warn(  # noqa: B028
        f"SI group {label} holds at the given params only because "
        f"{', '.join('/'.join(p) for p in needs)} {'is' if len(needs) == 1 else 'are'} zero, "
        "constant or near zero there: not SI once training moves it, so left out (generic=False "
        "keeps it)")


def _degenerate_only(given: _Model, at_generic: _Model, report: SIGroupsReport,
                     search: Callable) -> dict[str, tuple[ParamPath, ...]]:
  """'+'.join(paths) of each group the generic point breaks -> the moved tensors that break it."""
  try:
    found = search(given)
  except ValueError as e:  # e.g. too many near-SI directions where tensors are zero
    warnings.warn(f"find_si_groups: no search at the params as given ({e}): groups that "  # noqa: B028
                  "hold there only because a tensor is zero or constant are not named")
    return {}
  kept = {frozenset(paths) for paths in report.groups.values()}
  index = {p: i for i, p in enumerate(given.paths)}
  moved = [index[p] for p in report.moved]
  rtol = search.keywords["rtol"]
  scales = search.keywords["scales"]
  out = {}
  for paths in found.groups.values():
    members = [index[p] for p in paths]
    if frozenset(paths) in kept or at_generic.rescaled_change(
        at_generic.leaves, members, scales) <= rtol:
      continue
    needs = []
    for d in moved:
      leaves = [at_generic.leaves[i] if i == d else x for i, x in enumerate(given.leaves)]
      if given.rescaled_change(leaves, members, scales) > rtol:
        needs.append(given.paths[d])
    out["+".join("/".join(p) for p in paths)] = tuple(needs) or report.moved
  return out


def _weak_candidates(m: np.ndarray, sizes: np.ndarray, rtol: float, max_null_dim: int
                     ) -> list[tuple[int, ...]]:
  """Candidate groups among columns below rtol alone yet not SI alone, at their own scale.

  Such tensors f barely reads (a branch behind a small layer scale): M over their largest
  ||grad_i|| ||x_i|| / ||f||, then again among the columns still below rtol there."""
  found, rest = [], np.arange(m.shape[1])
  while len(rest) >= 2:
    sub = m[:, rest] / max(float(np.max(sizes[rest])), _TINY)
    below = np.linalg.norm(sub, axis=0) <= rtol
    if below.all():
      break
    above = rest[~below]
    found += [tuple(int(above[j]) for j in support) for support in
              _binary_null_vectors(sub[:, ~below], rtol, max_null_dim) if len(support) > 1]
    rest = rest[below]
  return found


def _extensions(residual: np.ndarray, m: np.ndarray, margin: float,
                max_null_dim: int) -> list[tuple[int, ...]]:
  """Sets T of the columns of ``m`` that cancel ``residual`` (M 1_S of a group S).

  ||M (1_S + 1_T)|| <= margin ||M 1_S||: S is SI only while the tensors of T, which f
  barely reads, stay small. ``margin``, not rtol: S's residual may be 1e-3 and S u T's
  the normalization epsilon's 1e-5 (columns below margin^2 of the residual cannot help)."""
  size = float(np.linalg.norm(residual))
  if m.shape[1] == 0 or size == 0:
    return []
  sub = np.column_stack([residual, m]) / size
  above = np.flatnonzero(np.linalg.norm(sub, axis=0) > margin ** 2)  # the residual's first
  supports = _binary_null_vectors(sub[:, above], margin, max_null_dim)
  return [tuple(int(above[j]) - 1 for j in s if j) for s in supports if 0 in s and len(s) > 1]


def _barely_read(m_weak: np.ndarray, weak_sizes: np.ndarray, weak: list[int],
                 candidates, accepted, residual: Callable, confirm: Callable, rtol: float,
                 margin: float, max_null_dim: int):
  """Step 5: groups holding tensors f barely reads (``weak``: below rtol alone, not SI).

  Groups among the weak alone (``_weak_candidates``), and each candidate of steps 2-3
  joined with the weak sets that cancel its residual (``_extensions``), confirmed. An
  accepted group whose residual weak tensors cancel holds only while they stay small: it
  gives way to its unions. Returns (the accepted groups, the confirmation of the new
  candidates, {a group given way: the weak tensors of its unions})."""
  grown = {g: [g + tuple(weak[j] for j in t) for t in _extensions(
      residual(g), m_weak, margin, max_null_dim)] for g in dict.fromkeys([*accepted, *candidates])}
  more = [u for unions in grown.values() for u in unions]
  more += [tuple(weak[j] for j in c)
           for c in _weak_candidates(m_weak, weak_sizes, rtol, max_null_dim)]
  keep = [a for a in accepted if not grown[a]]
  found = confirm([u for u in dict.fromkeys(more) if not any(set(a) < set(u) for a in keep)])
  small_only = {}
  for g in accepted:
    done = [u for u in grown[g] if u in found[1]]
    if done:
      small_only[g] = tuple(sorted({i for u in done for i in u} - set(g)))
  return [a for a in accepted if a not in small_only] + found[0], found, small_only


def _search(model: _Model, *, rtol, margin, scales, num_probes, max_null_dim, seed
            ) -> SIGroupsReport:
  """Steps 1-5 of the method (docs/design_notes.md) at the model's params."""
  rng = np.random.default_rng(seed)
  nonzero = [i for i, n in enumerate(model.norms) if n > 0]
  m, sizes = _probe_matrix(model, nonzero, num_probes, rng)
  used = sizes > UNUSED_TOL
  columns, m = [i for i, u in zip(nonzero, used) if u], m[:, used]
  unused = [i for i, u in zip(nonzero, used) if not u]
  changes = {i: model.change(model.scaled([i], 2.0)) for i in unused}
  read = {i: c for i, c in changes.items() if c > 10 * UNUSED_TOL}  # under a stop_gradient
  column_residuals = np.linalg.norm(m, axis=0)
  single = column_residuals <= rtol
  position = {i: j for j, i in enumerate(columns)}
  residual = lambda members: m[:, [position[i] for i in members]].sum(1)  # M 1_S
  euler = lambda members: float(np.linalg.norm(residual(members)))
  confirm = functools.partial(_confirm, model, euler_fn=euler, rtol=rtol, margin=margin,
                              scales=scales, rng=rng)
  accepted, stats, rejected = confirm([(i,) for i, s in zip(columns, single) if s])
  weak = [i for i, s in zip(columns, single) if s and (i,) not in stats]
  rest = [i for i, s in zip(columns, single) if not s]  # a group holds no SI single
  candidates = [tuple(rest[j] for j in support) for support in _binary_null_vectors(
      m[:, [position[i] for i in rest]], rtol, max_null_dim)]
  found = confirm(candidates)
  accepted, stats, rejected = accepted + found[0], {**stats, **found[1]}, {**rejected, **found[2]}
  weak_columns = [position[i] for i in weak]
  accepted, found, small_only = _barely_read(
      m[:, weak_columns], sizes[used][weak_columns], weak, candidates, accepted, residual,
      confirm, rtol, margin, max_null_dim)
  stats, rejected = {**stats, **found[1]}, {**rejected, **found[2]}
  named = {}
  for members in sorted(accepted, key=min):
    name = group_name([model.paths[i] for i in members], model.paths)
    named[name if name not in named else f"{name}#{len(named)}"] = members
  in_groups = {i for members in accepted for i in members}
  outside = [(model.paths[i], float(r)) for i, r in zip(columns, column_residuals)
             if i not in in_groups]
  return SIGroupsReport(
      groups={name: tuple(model.paths[i] for i in s) for name, s in named.items()},
      euler={name: stats[s][0] for name, s in named.items()},
      value={name: stats[s][1] for name, s in named.items()},
      baseline={name: stats[s][2] for name, s in named.items()},
      zero=tuple(model.paths[i] for i, n in enumerate(model.norms) if n == 0),
      unused=tuple(model.paths[i] for i in unused if i not in read),
      read_without_gradient={model.paths[i]: read[i] for i in read},
      rejected={group_name([model.paths[i] for i in s], model.paths): r
                for s, r in rejected.items()},
      nearest_non_si=min(outside, key=lambda t: t[1]) if outside else None,
      near_non_si=tuple(sorted((t for t in outside if t[1] < 3 * rtol), key=lambda t: t[1])),
      small_only={"+".join("/".join(model.paths[i]) for i in s):
                  tuple(model.paths[i] for i in t) for s, t in small_only.items()},
  )


def verify_si_groups(
    fn: Callable[..., Any],
    params,
    groups: Mapping[str, Sequence[Sequence[Any]]],
    *args,
    scales: Sequence[float] = DEFAULT_SCALES,
    with_euler: bool = False,
    more_args: Sequence[tuple] = (),
    rtol: float | None = None,
) -> dict[str, Any]:
  """Property (1a) checked directly for given groups, e.g. on a state after training.

  ``fn``, ``*args``, ``scales``, ``more_args`` as for ``find_si_groups``; ``rtol``: warn per
  group above it. Returns {name: max_c ||f(c x_S) - f(x)|| / ||f(x)||} (worst over argument
  sets), or with ``with_euler`` {name: {'value', 'euler'}} (Eq. (E)). Raises TypeError or
  ValueError for malformed groups, a path not in ``params``, a non-finite ``fn``."""
  _check_scales(scales)
  groups = check_groups(groups, "groups")
  check_in_params(groups, params, "groups")
  model = _Model(fn, _in_float32(params), (args, *more_args))
  index = {p: i for i, p in enumerate(model.paths)}
  out = {}
  for name, paths in groups.items():
    members = [index[p] for p in paths]
    value = max(model.change(model.scaled(members, c)) for c in scales)
    if rtol is not None and value > rtol:
      warnings.warn(f"SI group {name!r} does not hold at these params: rescaling changes "  # noqa: B028
                    f"f by {value:.2e} > rtol={rtol:g}")
    out[name] = {"value": value, "euler": model.euler(members)} if with_euler else value
  return out
