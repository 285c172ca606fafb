"""tools/paper_settings.py and its table (tools/paper_settings.toml): every figure's rows
exist and every row is used, quotes are on their appendix lines, and the last column's
verdicts follow the rules (same / not stated / differs, explained or failing)."""

import os

import pytest

from tools import paper_settings as ps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "tools", "paper_settings.toml")
APPENDIX = "/work/shared/reference/paper_appendix.txt"


@pytest.fixture(scope="module")
def figures():
  return ps.load_table(TABLE)[1]


def test_table_loads_every_figure_and_uses_every_row(figures):
  with open(TABLE, "rb") as f:
    table = ps.tomllib.load(f)
  used = {name for fig in table["figure"] for name in fig.get("rows", ())}
  assert used == set(table["row"])
  assert len(figures) == len(table["figure"]) == 27
  assert ps.load_table(TABLE)[0].startswith("# The appendix's settings")
  computed = [r for fig in figures for r in fig.rows if r.computed]
  assert len(computed) == 2 and all(f.init_norm for f in figures if "Fig. 19" in f.title)


def test_rows_read_function_defaults(figures):
  fig9 = next(f for f in figures if f.title.startswith("Fig. 9 "))
  assert {r.setting: r.ours for r in fig9.rows if r.ours is not None}["a, b"] == "1, 10"
  fig14 = next(f for f in figures if f.title.startswith("Fig. 14 "))
  assert fig14.rows[0].ours == "(0.01, 1)"  # toy.gradient_descent's w0


@pytest.mark.skipif(not os.path.exists(APPENDIX), reason="the appendix text is not here")
def test_quotes_are_on_their_appendix_lines(figures):
  with open(APPENDIX, encoding="utf-8") as f:
    lines = f.read().splitlines()
  ps.check_quotes(figures, lines)
  wrong = ps.Figure("F", rows=(ps.Row("lr", 1, "no such words", 0.1),))
  with pytest.raises(ValueError, match="'lr': 'no such words' is not on appendix line 1"):
    ps.check_quotes([wrong], lines)


@pytest.mark.parametrize("row, value, said, explained", [
    (ps.Row("lr", 1, "q", 0.1), "0.1", "same", True),
    (ps.Row("lr", 1, "q", 0.1, "why"), "0.1", "same (why)", True),
    (ps.Row("lr", 1, "q", 0.1), "0.2", "**differs, UNEXPLAINED**", False),
    (ps.Row("lr", 1, "q", 0.1, "why"), "0.2", "**differs**: why", True),
    (ps.Row("lr"), "0.2", "not stated, UNEXPLAINED", False),
    (ps.Row("lr", note="ours from X"), "0.2", "not stated: ours from X", True),
    (ps.Row("lr", note="not stated; ours 0.2"), "0.2", "not stated; ours 0.2", True),
    (ps.Row("lr", 1, "q", 1.0, matched=False), "1", "**differs, UNEXPLAINED**", False),
])
def test_verdicts(row, value, said, explained):
  assert ps.verdict(row, value) == (said, explained)


def test_an_unexplained_difference_fails():
  fig = ps.Figure("F", "cmd", (("configs/quickstart.py", "", None),),
                  (ps.Row("momentum", 1, "q", 0.5),))
  with pytest.raises(ValueError, match="F: momentum: ours 0, appendix 0.5: unexplained"):
    ps.table(fig)


def test_differences_are_listed_once_with_every_figure():
  diffs = [("wd", "1", "2", "why", "Fig. 1 (main): a"), ("wd", "1", "2", "why", "Fig. 2: b")]
  assert ps.difference_list(diffs)[-1] == "* **wd** (appendix 1, ours 2) in Fig. 1, Fig. 2: why"


def test_the_last_layer_norm_matches_on_the_member_nearest_pytorchs_init(figures):
  fig19 = next(f for f in figures if "Fig. 19" in f.title and "cifar100" in f.title)
  row = next(r for r in fig19.rows if r.computed)
  init = ps.init_last_layer_norm(**fig19.init_norm)
  assert init == pytest.approx(5.77, abs=0.05)
  near = ps.with_init_norm(row, fig19, "1, 3, 5.77, 10, 30")  # the lowest, 1, is not near
  assert not near.matched and near.note.endswith("ours has one at 5.77 and, below the lowest "
                                                 "the figure presents, 1, 3")
  assert ps.with_init_norm(row, fig19, "5.77, 10, 30").matched
  far = ps.with_init_norm(row, fig19, "1, 20, 30")
  assert not far.matched and "the nearest, 20, is 3.5x above it" in far.note
