"""A run's logs in its workdir: writing them, and reading them back.

``metrics.jsonl`` (a JSON line per epoch), ``steps.bin`` (a record per step with
``train.log_every='step'``) and TensorBoard events; what they hold: docs/design_notes.md."""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
import zlib
from typing import NamedTuple

import numpy as np

from si_jax.logs import tensorboard_log

METRICS_FILE = "metrics.jsonl"
STEPS_FILE = "steps.bin"
STEPS_JSONL_FILE = "steps.jsonl"  # the per-step logs of runs begun before steps.bin
DIVERGED_FILE = "diverged.json"  # written when a run stops on a non-finite loss
FAMILY_FILE = "family.json"  # a family's identity at its top folder (si_jax.engine.experiment)

_RECORD_MARK = 0x1E
_VERSION = 2  # what the writer writes; the reader reads 1 (no CRC) and 2
_CRC = struct.Struct("<I")
_NUMPY_TYPES = {"i8": "<i8", "f4": "<f4", "f8": "<f8", "b1": "?"}
_STRUCT_CODES = {"i8": "q", "f4": "f", "f8": "d", "b1": "?"}
_ZEROS = {"i8": 0, "f4": 0.0, "f8": 0.0, "b1": False}
_FLOAT32 = struct.Struct("<f")


class _Stderr(logging.StreamHandler):
  """A handler writing to the ``sys.stderr`` of the moment (a redirection, pytest's capture)."""

  def __init__(self):
    logging.Handler.__init__(self)  # pylint: disable=non-parent-init-called

  @property
  def stream(self):
    return sys.stderr


class _Format(logging.Formatter):
  """'warning: ...' ('error: ...') for warnings and errors; status lines as they are."""

  def format(self, record: logging.LogRecord) -> str:
    message = super().format(record)
    if record.levelno < logging.WARNING:
      return message
    return f"{record.levelname.lower()}: {message}"


def one_line(error: BaseException | str) -> str:
  """An error message on one line; an OSError as 'PATH: what' (no [Errno N])."""
  if isinstance(error, OSError) and error.filename and error.strerror:
    paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p)
    error = f"{paths}: {error.strerror}"
  return " ".join(str(error).split()) or type(error).__name__


def warnings_to_stderr(name: str = "si_jax") -> None:
  """Shows the ``name`` logger's records on stderr, one line each; ``import si_jax`` calls it.

  A logger with a handler is left as it is; else it gets level INFO and stops propagating
  (absl's root handler would repeat each line)."""
  logger = logging.getLogger(name)
  if logger.handlers:
    return
  handler = _Stderr()
  handler.setFormatter(_Format())
  logger.addHandler(handler)
  if logger.level == logging.NOTSET:
    logger.setLevel(logging.INFO)
  logger.propagate = False


def steps_path(log_dir: str) -> str:
  """The per-step log in ``log_dir``: steps.bin, else an older run's steps.jsonl."""
  binary, lines = os.path.join(log_dir, STEPS_FILE), os.path.join(log_dir, STEPS_JSONL_FILE)
  return lines if os.path.exists(lines) and not os.path.exists(binary) else binary


def _open_at(path: str, offset: int, mode: str = "a"):
  """Opens ``path`` for appending after cutting it to ``offset`` bytes (resume)."""
  if os.path.exists(path):
    os.truncate(path, min(offset, os.path.getsize(path)))
  return open(path, mode)


def _value_type(key: str, value) -> str:
  """The narrowest column type that holds ``value`` exactly."""
  if isinstance(value, bool):
    return "b1"
  if isinstance(value, int):
    if not -2**63 <= value < 2**63:
      raise ValueError(f"step record field {key!r}: {value} does not fit in int64")
    return "i8"
  if isinstance(value, float):
    if value != value:  # NaN
      return "f4"
    try:
      return "f4" if _FLOAT32.unpack(_FLOAT32.pack(value))[0] == value else "f8"
    except OverflowError:
      return "f8"
  raise TypeError(f"step record field {key!r}: {value!r} is not a number")


def _holds(column_type: str, value_type: str) -> bool:
  return column_type == value_type or (column_type, value_type) == ("f8", "f4")


def _wider(old: str | None, new: str | None) -> str:
  """A column's type in a new segment: the new value's, but float64 stays float64."""
  if new is None or (old, new) == ("f8", "f4"):
    return old
  return new


def _merged(old: list[str], new: list[str]) -> list[str]:
  """``new``'s keys, each of ``old``'s others right after the key it followed in ``old``."""
  out = list(new)
  for i, key in enumerate(old):
    if key not in out:
      out.insert(out.index(old[i - 1]) + 1 if i else 0, key)
  return out


class StepLogWriter:
  """Appends step records to the ``steps.bin`` file ``path``, first cut to ``offset`` bytes."""

  def __init__(self, path: str, offset: int = 0):
    self._file = _open_at(path, offset, "ab")
    self._columns: dict[str, tuple[int, str]] = {}  # the segment's: name -> (index, type)
    self._defaults: list = []
    self._mask_bytes = 0
    self._struct: struct.Struct | None = None
    self._crc = 0  # the segment's running CRC-32: header line and records so far

  def tell(self) -> int:
    """The file's byte length: a record boundary, a valid place to cut it on resume."""
    return self._file.tell()

  def write(self, records: list[dict]) -> None:
    """Appends ``records`` in one write (buffered until ``flush``).

    Raises TypeError for a value not a bool, int or float, ValueError for an int beyond int64."""
    chunks = []
    for r in records:
      if not self._fits(r):
        chunks.append(self._start_segment(r))
      values, mask = list(self._defaults), 0
      for key, value in r.items():
        i = self._columns[key][0]
        values[i], mask = value, mask | (1 << i)
      body = self._struct.pack(_RECORD_MARK, mask.to_bytes(self._mask_bytes, "little"), *values)
      self._crc = zlib.crc32(body, self._crc)
      chunks += (body, _CRC.pack(self._crc))
    self._file.write(b"".join(chunks))

  def _fits(self, record: dict) -> bool:
    last = -1
    for key, value in record.items():
      column = self._columns.get(key)
      if column is None or column[0] <= last or not _holds(column[1], _value_type(key, value)):
        return False
      last = column[0]
    return True

  def _start_segment(self, record: dict) -> bytes:
    """Makes the segment that ``record`` begins the current one; returns its header line."""
    new = {k: _value_type(k, v) for k, v in record.items()}
    old = {k: t for k, (_, t) in self._columns.items()}
    names = _merged(list(old), list(new))
    types = [_wider(old.get(k), new.get(k)) for k in names]
    header = {"format": "si_jax.steps", "version": _VERSION, "columns": names, "types": types}
    line = (json.dumps(header) + "\n").encode()
    self._columns = {k: (i, t) for i, (k, t) in enumerate(zip(names, types))}
    self._defaults = [_ZEROS[t] for t in types]
    self._mask_bytes = (len(names) + 7) // 8
    codes = "".join(_STRUCT_CODES[t] for t in types)
    self._struct = struct.Struct(f"<B{self._mask_bytes}s{codes}")
    self._crc = zlib.crc32(line)
    return line

  def flush(self) -> None:
    """Writes the buffered records to the file."""
    self._file.flush()

  def close(self) -> None:
    """Closes the file."""
    self._file.close()


class _JsonLinesWriter:
  """Appends step records as JSON lines (a run begun with steps.jsonl goes on in it)."""

  def __init__(self, path: str, offset: int = 0):
    self._file = _open_at(path, offset)

  def tell(self) -> int:
    return self._file.tell()

  def write(self, records: list[dict]) -> None:
    for r in records:
      self._file.write(json.dumps(r) + "\n")

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class _Segment(NamedTuple):
  dtype: np.dtype  # its records'
  columns: list[str]
  crc: int | None  # the CRC-32 of its header line (None: version 1, records without CRC)


def _not_written(path: str, position: int, why: str) -> ValueError:
  return ValueError(f"{path}: bytes from offset {position} are not a record this program "
                    f"wrote ({why})")


def _is_header(header: dict) -> bool:
  """Whether ``header`` is a step log segment header this reader reads."""
  columns, types = header.get("columns"), header.get("types")
  return (header.get("format") == "si_jax.steps" and type(header.get("version")) is int
          and 1 <= header["version"] <= _VERSION and isinstance(columns, list)
          and isinstance(types, list) and len(columns) == len(types) == len(set(columns))
          and all(isinstance(k, str) for k in columns) and all(t in _NUMPY_TYPES for t in types))


def _read_header(path: str, data: bytes, position: int) -> tuple[_Segment, int]:
  """(The segment whose header line is at ``position``, its first record's offset)."""
  end = data.find(b"\n", position)
  try:
    header = json.loads(data[position:end]) if end >= 0 else None
  except (ValueError, RecursionError):  # not JSON, or not UTF-8
    header = None
  if not isinstance(header, dict):
    raise _not_written(path, position, "a '{' that begins no JSON header line: a log cut by "
                       "a crash or a partial copy?")
  version = header.get("version")
  if header.get("format") == "si_jax.steps" and type(version) is int and version > _VERSION:
    raise ValueError(f"{path}: the step log segment at offset {position} is version {version},"
                     f" written by a newer si_jax (this one reads versions 1 to {_VERSION})")
  if not _is_header(header):
    raise _not_written(path, position, f"not an si_jax step log header: format "
                       f"{header.get('format')!r}, version {version!r}")
  mask_bytes = (len(header["columns"]) + 7) // 8
  checked = version >= 2
  dtype = np.dtype([("mark", "u1"), ("mask", "u1", (mask_bytes,))]
                   + [(f"c{i}", _NUMPY_TYPES[t]) for i, t in enumerate(header["types"])]
                   + ([("crc", "<u4")] if checked else []))
  crc = zlib.crc32(data[position:end + 1]) if checked else None
  return _Segment(dtype, header["columns"], crc), end + 1


def _check(path: str, data: bytes, position: int, block: np.ndarray, crc: int) -> None:
  """Raises ValueError at the first record of ``block`` whose running CRC-32 differs."""
  size, view = block.dtype.itemsize, memoryview(data)
  for k, stored in enumerate(block["crc"].tolist()):
    start = position + k * size
    crc = zlib.crc32(view[start:start + size - _CRC.size], crc)
    if crc != stored:
      raise _not_written(path, start, "their CRC-32 does not match: a changed byte, or bytes "
                         "that something else appended?")


def _segment_records(path: str, data: bytes, position: int, segment: _Segment) -> np.ndarray:
  """The records of ``segment`` from ``position`` to the next header or the end (CRC-checked)."""
  size = segment.dtype.itemsize
  count = (len(data) - position) // size
  if count == 0:
    raise _not_written(path, position, f"a record cut short, {len(data) - position} of its "
                       f"{size} bytes: a crash while writing, or a partial copy?")
  block = np.frombuffer(data, segment.dtype, count=count, offset=position)
  other = np.flatnonzero(block["mark"] != _RECORD_MARK)  # the next header, or garbage
  block = block[:int(other[0])] if len(other) else block
  if segment.crc is not None:
    _check(path, data, position, block, segment.crc)
  return block


def _unpack(block: np.ndarray, columns: list[str]) -> list[dict]:
  """One segment's consecutive records as dicts of Python values."""
  present = np.unpackbits(block["mask"], axis=1, count=len(columns), bitorder="little")
  values = [block[f"c{i}"].tolist() for i in range(len(columns))]
  patterns, which = np.unique(present.astype(bool), axis=0, return_inverse=True)
  picks = [np.flatnonzero(p).tolist() for p in patterns]
  keys = [[columns[j] for j in pick] for pick in picks]
  return [dict(zip(keys[p], [row[j] for j in picks[p]]))
          for row, p in zip(zip(*values), which.reshape(-1).tolist())]


def read_step_log(path: str) -> list[dict]:
  """The records of a ``steps.bin`` file, as they were written.

  Raises ValueError naming ``path`` and the offset of the first bytes no writer wrote (cut
  short, changed, appended) or of a newer version's segment."""
  with open(path, "rb") as f:
    data = f.read()
  records, position, segment = [], 0, None
  while position < len(data):
    if data[position] == ord("{"):  # a segment's header line
      segment, position = _read_header(path, data, position)
    elif segment is None or data[position] != _RECORD_MARK:
      raise _not_written(path, position, "neither a record (byte 0x1E) nor a segment header "
                         "line: a log cut by a crash, a partial copy, or bytes appended?")
    else:
      block = _segment_records(path, data, position, segment)
      records.extend(_unpack(block, segment.columns))
      position += len(block) * segment.dtype.itemsize
  return records


class MetricWriter:
  """Appends a run's records: epoch JSON lines, step records, TensorBoard events.

  Args:
    workdir: the run's directory (created if missing).
    per_step: whether step records are written (steps.bin, or an older steps.jsonl).
    offsets: (metrics bytes, steps bytes) to keep on resume.
    tensorboard: the run's flattened config for TensorBoard's HParams; None: no events.
    tensorboard_steps: whether step records go to TensorBoard too.
  """

  def __init__(self, workdir: str, per_step: bool, offsets: tuple[int, int] = (0, 0),
               tensorboard: dict | None = None, tensorboard_steps: bool = False):
    os.makedirs(workdir, exist_ok=True)  # your own loop's writer needs no set-up
    metrics_path = os.path.join(workdir, METRICS_FILE)
    self._epochs = _open_at(metrics_path, offsets[0])
    self._steps = None
    if per_step:
      path = steps_path(workdir)
      writer = _JsonLinesWriter if path.endswith(STEPS_JSONL_FILE) else StepLogWriter
      self._steps = writer(path, offsets[1])
    self._events, self._tensorboard_steps = None, tensorboard_steps
    if tensorboard is not None:
      kept = read_jsonl(metrics_path) if offsets[0] else []  # cut back above
      self._events = tensorboard_log.open_event_log(workdir, tensorboard,
                                                    kept[-1] if kept else None)

  def offsets(self) -> tuple[int, int]:
    """Byte lengths of both files now (what a checkpoint records)."""
    return self._epochs.tell(), (self._steps.tell() if self._steps else 0)

  def write_steps(self, records: list[dict], invariance_every: int = 0) -> None:
    """Appends step records; invariance residuals only on multiples of ``invariance_every``."""
    if self._steps is None:
      return
    kept = [r if invariance_every and not r["step"] % invariance_every else
            {k: v for k, v in r.items() if not k.startswith("invariance/")} for r in records]
    self._steps.write(kept)
    self._steps.flush()
    if self._events is not None and self._tensorboard_steps:
      self._events.write_steps(kept)

  def write_epoch(self, record: dict) -> None:
    """Appends one epoch record (flushed)."""
    self._epochs.write(json.dumps(record) + "\n")
    self._epochs.flush()
    if self._events is not None:
      self._events.write_epoch(record)

  def close(self) -> None:
    """Closes every file."""
    self._epochs.close()
    if self._steps is not None:
      self._steps.close()
    if self._events is not None:
      self._events.close()


def replace_doc_block(path: str, tag: str, text: str) -> None:
  """Replaces the text between ``<!-- TAG:start -->`` and ``<!-- TAG:end -->`` in ``path``.

  Raises ValueError when ``path`` lacks either marker."""
  start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
  with open(path) as f:
    doc = f.read()
  if start not in doc or end not in doc.split(start, 1)[1]:
    raise ValueError(f"{path} has no {start} ... {end} block to replace")
  head, rest = doc.split(start, 1)
  with open(path, "w") as f:
    f.write(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSON-lines file; ValueError naming the line that is not a JSON object."""
  records = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        raise ValueError(f"{path}, line {number}: not a JSON record (a log cut by a crash "
                         "or a partial copy?)") from None
      if not isinstance(record, dict):
        raise ValueError(f"{path}, line {number}: a JSON {type(record).__name__}, not a "
                         "record (an object of named values)")
      records.append(record)
  return records


def read_run(workdir: str, steps: bool = False, nonempty: bool = False) -> list[dict]:
  """The epoch records (or, with ``steps``, the step records) of a run directory.

  Raises:
    FileNotFoundError: no such log in ``workdir``.
    ValueError: a damaged log, or no record although ``nonempty``.
  """
  path = steps_path(workdir) if steps else os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} an si_jax run directory"
                            f"{' with per-step logs' if steps else ''}?")
  records = read_step_log(path) if path.endswith(STEPS_FILE) else read_jsonl(path)
  if nonempty and not records:
    raise ValueError(f"{path} holds no record yet (the run has not finished an epoch)")
  return records
