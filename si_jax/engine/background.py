"""Errors orbax's own threads and finalizers raise while a checkpoint is saved or read.

A failed orbax read (a damaged checkpoint) or write (a full disk) abandons concurrent
reads and writes: tensorstore's threads then call into a closed event loop and the
abandoned coroutines fail when collected, each printing a traceback of orbax's
internals. ``collected()`` records them instead, only around the orbax calls (the
previous hooks come back after it; after a failed call, once the threads have been quiet
for 0.3 s), and ``FAILURES`` holds them for the programs' closing warning. The hooks
are Python's extension points for exactly this: they receive the exception objects,
where a capture of stderr's text cannot tell a many-line message from other output.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import traceback
from typing import Iterator

from si_jax import logs

FAILURES: list[str] = []  # one line each
TRACEBACKS: list[str] = []  # the same, in full


def _record(kind: type[BaseException], value: object, where: str, tb=None) -> None:
  if not issubclass(kind, SystemExit):
    FAILURES.append(f"{where}: {kind.__name__}: {logs.one_line(str(value))[:300]}")
    TRACEBACKS.append(f"in {where}:\n" + "".join(traceback.format_exception(kind, value, tb)))


@contextlib.contextmanager
def collected() -> Iterator[None]:
  """Records the errors of other threads and of finalizers while the body runs.

  The main thread's own errors propagate as usual. Not reentrant across threads: the
  engine calls orbax from the main thread only.
  """
  saved = sys.excepthook, threading.excepthook, sys.unraisablehook
  main = threading.main_thread()

  def excepthook(kind, value, tb):  # tensorstore's threads report through PyErr_Print
    if threading.current_thread() is main:
      saved[0](kind, value, tb)
    else:
      _record(kind, value, f"thread {threading.current_thread().name}", tb)

  sys.excepthook = excepthook
  threading.excepthook = lambda a: _record(a.exc_type, a.exc_value, "a thread", a.exc_traceback)
  sys.unraisablehook = lambda u: _record(u.exc_type, u.exc_value, u.err_msg or "a finalizer",
                                         u.exc_traceback)
  try:
    yield
  except BaseException:
    _settle()  # a failed write's threads still call back into orbax's closed event loop
    raise
  finally:
    sys.excepthook, threading.excepthook, sys.unraisablehook = saved


def _settle(quiet_s: float = 0.3, limit_s: float = 3.0) -> None:
  """Waits (at most ``limit_s``) until no thread has failed for ``quiet_s`` seconds."""
  start = seen_at = time.monotonic()
  seen = len(FAILURES)
  while time.monotonic() - seen_at < quiet_s and time.monotonic() - start < limit_s:
    time.sleep(0.05)
    if len(FAILURES) != seen:
      seen, seen_at = len(FAILURES), time.monotonic()
