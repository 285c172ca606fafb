"""Errors orbax's own threads and finalizers raise while a checkpoint is saved or read.

A failed orbax read (a damaged checkpoint) or write (a full disk) abandons concurrent
reads and writes: tensorstore's threads then call into a closed event loop and the
abandoned coroutines fail when collected, and Python's default hooks print a traceback
of orbax's internals for each. ``collected()`` catches what is written to ``sys.stderr``
around the orbax calls only (``contextlib.redirect_stderr``; no hook is replaced): each
traceback becomes one line in ``FAILURES`` (for the programs' closing warning) and its
text in ``TRACEBACKS``; any other text is written on to stderr afterwards.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
from typing import Iterator

from si_jax import logs

FAILURES: list[str] = []  # one line each
TRACEBACKS: list[str] = []  # the same, in full
_STARTS = ("Traceback (most recent call last)", "Exception ignored in", "Exception in thread")
_CHAINED = ("The above exception was", "During handling of the above exception")


class _Catcher(io.TextIOBase):
  """A thread-safe text sink that counts its writes."""

  def __init__(self):
    super().__init__()
    self._lock = threading.Lock()
    self._parts: list[str] = []
    self.writes = 0

  def write(self, text: str) -> int:
    with self._lock:
      self._parts.append(text)
      self.writes += 1
    return len(text)

  def text(self) -> str:
    with self._lock:
      return "".join(self._parts)


def _split(text: str) -> tuple[list[str], str]:
  """(the tracebacks in ``text``, the rest of it).

  A traceback runs from a header line (``_STARTS``) through its indented frames to its
  first unindented line after them (the exception); a chained one continues it.
  """
  blocks: list[list[str]] = []
  rest: list[str] = []
  state = None  # None: outside; "head": header lines; "frames": inside; "done": closed
  for line in text.splitlines(keepends=True):
    chained = line.startswith(_CHAINED)
    if line.startswith(_STARTS) or chained:
      if state in ("head", "done") and blocks and (chained or blocks[-1][-1].startswith(
          _STARTS[1:] + _CHAINED) or not blocks[-1][-1].strip()):
        blocks[-1].append(line)
      else:
        blocks.append([line])
      state = "head"
    elif state in ("head", "done") and not line.strip():
      blocks[-1].append(line)
    elif state in ("head", "frames") and line[:1].isspace():
      blocks[-1].append(line)
      state = "frames"
    elif state == "frames":
      blocks[-1].append(line)  # the exception's line
      state = "done"
    else:
      rest.append(line)
      state = None
  return ["".join(b) for b in blocks], "".join(rest)


def _record(catcher: _Catcher) -> None:
  tracebacks, rest = _split(catcher.text())
  for tb in tracebacks:
    closing = [x for x in tb.splitlines() if x.strip() and not x[0].isspace()]
    FAILURES.append(logs.one_line(closing[-1])[:300])
    TRACEBACKS.append(tb)
  if rest:
    sys.stderr.write(rest)


@contextlib.contextmanager
def collected() -> Iterator[None]:
  """Catches the tracebacks other threads and finalizers print while the body runs.

  The main thread's own errors propagate as usual; after a failed body, waits (at most
  3 s) until nothing has been printed for 0.3 s: a failed write's threads still call
  back into orbax's closed event loop. Not reentrant: the engine calls orbax from the
  main thread only.
  """
  catcher = _Catcher()
  try:
    with contextlib.redirect_stderr(catcher):
      try:
        yield
      except BaseException:
        _settle(catcher)
        raise
  finally:
    _record(catcher)


def _settle(catcher: _Catcher, quiet_s: float = 0.3, limit_s: float = 3.0) -> None:
  """Waits (at most ``limit_s``) until nothing has been written for ``quiet_s`` seconds."""
  start = seen_at = time.monotonic()
  seen = catcher.writes
  while time.monotonic() - seen_at < quiet_s and time.monotonic() - start < limit_s:
    time.sleep(0.05)
    if catcher.writes != seen:
      seen, seen_at = catcher.writes, time.monotonic()
