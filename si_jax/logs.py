"""Metrics as JSON lines in the workdir.

* ``metrics.jsonl``: one record per epoch: the epoch means of the in-step metrics
  (``loss``, ``accuracy``, ``weight_norm``, ``effective_lr``, ... see
  ``si_jax.metrics``) and, after each evaluation, ``train_loss``/``train_accuracy``
  (a pass over the train set with train-mode BN, appendix B "Logging") and
  ``test_loss``/``test_error`` (eval-mode BN).
* ``steps.jsonl`` (``train.log_every='step'``): one record per step with the in-step
  metrics of that step, computed on its batch (as for Figs. 4, 11 and 13).
"""

from __future__ import annotations

import json
import os

METRICS_FILE = "metrics.jsonl"
STEPS_FILE = "steps.jsonl"


def _open_at(path: str, offset: int):
  """Opens ``path`` for appending after cutting it to ``offset`` bytes (resume)."""
  if os.path.exists(path):
    os.truncate(path, min(offset, os.path.getsize(path)))
  return open(path, "a")


class MetricWriter:
  """Appends JSON lines; ``offsets`` = (metrics bytes, steps bytes) to keep on resume."""

  def __init__(self, workdir: str, per_step: bool, offsets: tuple[int, int] = (0, 0)):
    self._epochs = _open_at(os.path.join(workdir, METRICS_FILE), offsets[0])
    self._steps = _open_at(os.path.join(workdir, STEPS_FILE), offsets[1]) if per_step else None

  def offsets(self) -> tuple[int, int]:
    """Byte lengths of both files now (what a checkpoint records)."""
    return self._epochs.tell(), (self._steps.tell() if self._steps else 0)

  def write_steps(self, records: list[dict], invariance_every: int = 0) -> None:
    if self._steps is None:
      return
    for r in records:
      if not invariance_every or r["step"] % invariance_every:
        r = {k: v for k, v in r.items() if not k.startswith("invariance/")}
      self._steps.write(json.dumps(r) + "\n")
    self._steps.flush()

  def write_epoch(self, record: dict) -> None:
    self._epochs.write(json.dumps(record) + "\n")
    self._epochs.flush()

  def close(self) -> None:
    self._epochs.close()
    if self._steps is not None:
      self._steps.close()


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSON-lines file; ValueError naming the line that is not JSON."""
  records = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        raise ValueError(f"{path}, line {number}: not a JSON record (a log cut by a crash "
                         "or a partial copy?)") from None
  return records


def read_run(workdir: str, steps: bool = False, nonempty: bool = False) -> list[dict]:
  """The per-epoch (or per-step) records of a run directory (``nonempty``: at least one,
  else ValueError)."""
  path = os.path.join(workdir, STEPS_FILE if steps else METRICS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} an si_jax run directory?")
  records = read_jsonl(path)
  if nonempty and not records:
    raise ValueError(f"{path} holds no record yet (the run has not finished an epoch)")
  return records
