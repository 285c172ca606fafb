"""The package's shape: concerns in sub-packages, imports one way, short functions, short docs.

Layers, from the bottom: core (the top-level modules, ``models``, ``data``, ``logs``),
then ``engine`` and ``analysis``, then ``plots``, then ``programs``. A layer imports
only from layers below it, with two sideways exceptions: the engine may use analysis
(the phase analysis of a family's summary) and plots may use the engine's config helpers
(a family's members); the engine never imports plots, analysis never the engine.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "si_jax"
LAYER = {"engine": 1, "analysis": 1, "plots": 2, "programs": 3}
ALLOWED_SIDEWAYS = {("engine", "analysis"), ("plots", "engine")}
MAX_TOP_LEVEL_MODULES = 10
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out[name] = path
  return out


def _imports(path: pathlib.Path, module_level_only: bool) -> set[str]:
  """The si_jax modules ``path`` imports (``from si_jax.x import y`` counts as x.y when
  that is a module, else x)."""
  tree = ast.parse(path.read_text())
  nodes = tree.body if module_level_only else list(ast.walk(tree))
  names = set(_modules())
  found = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.startswith("si_jax")}
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("si_jax"):
      for a in node.names:
        full = f"{node.module}.{a.name}"
        found.add(full if full in names else node.module)
  return found


# `python -m si_jax.main`: programs at the top
SHIMS = ("si_jax.main", "si_jax.plot", "si_jax.forecast")


def _concern(module: str) -> str:
  if module in SHIMS:
    return "programs"
  parts = module.split(".")
  return parts[1] if len(parts) > 1 and parts[1] in LAYER else "core"


def test_at_most_ten_top_level_modules():
  top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
  assert len(top) <= MAX_TOP_LEVEL_MODULES, top


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_run_one_way(module):
  mine = _concern(module)
  for target in _imports(_modules()[module], module_level_only=False):
    theirs = _concern(target)
    if theirs == mine or (mine, theirs) in ALLOWED_SIDEWAYS:
      continue
    assert LAYER.get(theirs, 0) < LAYER.get(mine, 0), f"{module} imports {target}"


def test_no_import_cycle():
  graph = {m: _imports(p, module_level_only=True) & set(_modules())
           for m, p in _modules().items()}
  # a package's __init__ is imported with any of its modules: not a cycle by itself
  graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
  state: dict[str, int] = {}

  def visit(node, path):
    state[node] = 1
    for nxt in sorted(graph[node]):
      assert state.get(nxt) != 1, " -> ".join(path + [nxt])
      if nxt not in state:
        visit(nxt, path + [nxt])
    state[node] = 2
  for node in sorted(graph):
    if node not in state:
      visit(node, [node])


def test_no_function_is_longer_than_sixty_lines():
  long = []
  for module, path in _modules().items():
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_FUNCTION_LINES:
          long.append(f"{module}.{node.name}: {lines}")
  assert not long, long


MAX_DOCSTRING_SHARE = 0.15  # docstrings are contracts; measurements live in docs/


def _docstring_lines(tree: ast.Module) -> int:
  count = 0
  for node in ast.walk(tree):
    if (isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and ast.get_docstring(node, clean=False) is not None):
      count += node.body[0].end_lineno - node.body[0].lineno + 1
  return count


def test_docstrings_are_at_most_fifteen_percent_of_the_library():
  assert _docstring_lines(ast.parse('"""a\n\nb"""\n\ndef f():\n  """c"""\n  return 1\n')) == 4
  total = docs = 0
  for path in _modules().values():
    source = path.read_text()
    total += len(source.splitlines())
    docs += _docstring_lines(ast.parse(source))
  assert 0 < docs / total <= MAX_DOCSTRING_SHARE, (docs, total)


PROCESS_HOOKS = {("sys", "excepthook"), ("threading", "excepthook"), ("sys", "unraisablehook")}


def _hook_assignments(source: str) -> list[str]:
  """``module.hook = ...`` (plain, augmented or in a tuple) for the process-wide hooks."""
  found = []
  for node in ast.walk(ast.parse(source)):
    targets = (node.targets if isinstance(node, ast.Assign)
               else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
    for target in targets:
      for t in ast.walk(target):
        if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                and (t.value.id, t.attr) in PROCESS_HOOKS):
          found.append(f"{t.value.id}.{t.attr} (line {t.lineno})")
  return found


def test_no_process_wide_exception_hook_is_replaced():
  assert _hook_assignments("import sys\nsys.excepthook, x = f, 1\nsys.excepthook(1)\n") == [
      "sys.excepthook (line 2)"]
  roots = [PACKAGE, PACKAGE.parent / "experiments", PACKAGE.parent / "tools"]
  found = [f"{path.name}: {hook}" for root in roots for path in sorted(root.rglob("*.py"))
           for hook in _hook_assignments(path.read_text())]
  assert not found, found
