"""One writer per workdir: an exclusive, non-blocking ``fcntl.flock`` on ``WORKDIR/.lock``.

The kernel drops it when its holder exits; readers take no lock (docs/design_notes.md)."""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import time

LOCK_FILE = ".lock"
# lock path -> [holders in this process, whether the first holder was re-entrant]
_HELD: dict[str, list] = {}


class WorkdirBusy(ValueError):
  """Another process holds the workdir's lock."""


def lock_path(workdir: str, process_index: int = 0) -> str:
  """The lock file of ``workdir`` for one process: ``.lock``, or ``.lock.process_N``."""
  name = LOCK_FILE if process_index == 0 else f"{LOCK_FILE}.process_{process_index}"
  return os.path.join(workdir, name)


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      text = f.read().strip()
  except OSError:
    text = ""
  return text or "another process (it has not written its pid yet)"


class WorkdirLock:
  """An exclusive, non-blocking lock on one workdir; a context manager.

  Args:
    workdir: an existing directory.
    what: the holder's description for the busy message ('run', 'family').
    process_index: which process of a multi-process run takes it.
    reentrant: whether a second holder in this process shares the lock (a family).

  ``acquire`` raises WorkdirBusy (naming the holder) or ValueError (no lock file)."""

  def __init__(self, workdir: str, what: str = "run", process_index: int = 0,
               reentrant: bool = False):
    self.workdir, self.what, self.reentrant = workdir, what, reentrant
    self.path = lock_path(workdir, process_index)
    self._fd: int | None = None

  @property
  def held(self) -> bool:
    """Whether this object holds the lock."""
    return self._fd is not None

  def acquire(self) -> "WorkdirLock":
    """Takes the lock; returns self."""
    key = os.path.realpath(self.path)
    # a re-entrant holder (a family) may be joined: by its program, or by the runs of its
    # members; two plain holders (two runs) are two writers
    if self._fd is None and key in _HELD and (self.reentrant or _HELD[key][1]):
      _HELD[key][0] += 1
      self._fd = -1  # held through the process's first holder
      return self
    while self._fd is None:
      try:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
      except OSError as e:  # a directory, a symbolic link (ELOOP), no permission
        raise ValueError(f"cannot lock {self.workdir}: {self.path}: {e.strerror} (it must "
                         "be a regular file, or absent)") from None
      if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"cannot lock {self.workdir}: {self.path} is not a regular file")
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        os.close(fd)
        raise WorkdirBusy(
            f"{self.workdir} is in use by {_holder(self.path)}: one writer per workdir. Wait "
            "for it to finish (or stop it), or use another --workdir.") from None
      if not _same_file(fd, self.path):  # the holder removed it while we waited: retry
        os.close(fd)
        continue
      os.ftruncate(fd, 0)
      os.write(fd, (f"pid {os.getpid()} on host {socket.gethostname()} ({self.what} started "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n").encode())
      self._fd = fd
      _HELD[key] = [1, self.reentrant]
    return self

  def release(self) -> None:
    """Removes the lock file, then drops the lock (idempotent)."""
    if self._fd is None:
      return
    key = os.path.realpath(self.path)
    _HELD[key][0] -= 1
    if self._fd == -1:  # an inner holder: the outer one still holds it
      self._fd = None
      return
    del _HELD[key]
    try:
      os.unlink(self.path)
    except OSError:
      pass
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def _same_file(fd: int, path: str) -> bool:
  try:
    a, b = os.fstat(fd), os.stat(path)
  except FileNotFoundError:
    return False
  return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
