"""The compact per-step log (steps.bin): records read back exactly as written (keys, key
order, ints as ints, float32 and float64 values, NaN and inf), the byte layout is the one
the module docstring states (decoded here by hand), ~150 bytes a step for the
quickstart ConvNet's fields, resume cuts it back, a cut file is named by its byte, and
old runs' steps.jsonl are still read and continued."""

import json
import math
import os
import struct

import numpy as np
import pytest

from si_jax import logs

INVARIANCE = ("invariance/grad_scaling", "invariance/orthogonality", "invariance/value")
# The quickstart ConvNet's per-step fields (4 SI groups, width 8): 32 metrics and step,
# epoch (invariance residuals off, as in tests/test_digest.py).
GROUP_METRICS = ("adjacent_cosine", "cosine_distance", "effective_grad_norm", "effective_lr",
                 "grad_norm", "weight_norm")
QUICKSTART_KEYS = (["accuracy", "adjacent_cosine"]
                   + [f"conv_{i}/{m}" for i in range(4) for m in GROUP_METRICS]
                   + ["cosine_distance", "effective_grad_norm", "effective_lr", "grad_norm",
                      "loss", "weight_norm"])


def device_records(keys, steps, seed=0, first_step=0, epoch=0):
  """Records as ``records.step_records`` makes them: float32 values as Python floats,
  then step and epoch as ints."""
  values = np.random.default_rng(seed).lognormal(size=(steps, len(keys))).astype(np.float32)
  return [{**{k: float(v) for k, v in zip(keys, row)}, "step": first_step + i, "epoch": epoch}
          for i, row in enumerate(values)]


def write_and_read(path, records):
  writer = logs.StepLogWriter(path)
  writer.write(records)
  writer.close()
  return logs.read_step_log(path)


def test_records_read_back_exactly_with_their_keys_order_and_types(tmp_path):
  full = device_records(["loss", *INVARIANCE, "weight_norm"], 4)
  records = [
      full[0],
      {k: v for k, v in full[1].items() if not k.startswith("invariance/")},  # unchecked
      {**full[2], "learning_rate": 0.1},  # a new key; 0.1 is not a float32 value: float64
      {"step": 3, "epoch": 0, "loss": full[3]["loss"]},  # another order
      {"loss": math.nan, "weight_norm": math.inf, "grad_norm": -0.0, "step": 4, "epoch": 0},
      {"loss": float(np.float32(1e-45)), "flag": True, "count": 2**40, "step": 5, "epoch": 1},
      full[0],  # the first segment's layout again
  ]
  got = write_and_read(str(tmp_path / "steps.bin"), records)
  # json.dumps shows key order, int vs float, every float digit, NaN and -0.0
  assert [json.dumps(r) for r in got] == [json.dumps(r) for r in records]
  assert type(got[5]["flag"]) is bool and type(got[5]["count"]) is int
  assert got[2]["learning_rate"] == 0.1 and type(got[0]["step"]) is int


def test_the_layout_is_the_documented_one(tmp_path):
  """Header line, then per record: 0x1E, the presence mask (bit i for column i), the
  columns little-endian (an absent one as zero) -- decoded by hand."""
  path = str(tmp_path / "steps.bin")
  write_and_read(path, [{"loss": 0.5, "step": 7, "epoch": 0}, {"step": 8, "epoch": 0},
                        {"loss": 0.1, "step": 9, "epoch": 0}])
  with open(path, "rb") as f:
    data = f.read()
  header = {"format": "si_jax.steps", "version": 1, "columns": ["loss", "step", "epoch"]}
  first = json.dumps({**header, "types": ["f4", "i8", "i8"]}).encode() + b"\n"
  second = json.dumps({**header, "types": ["f8", "i8", "i8"]}).encode() + b"\n"
  want = (first + b"\x1e\x07" + struct.pack("<fqq", 0.5, 7, 0)
          + b"\x1e\x06" + struct.pack("<fqq", 0.0, 8, 0)
          + second + b"\x1e\x07" + struct.pack("<dqq", 0.1, 9, 0))
  assert data == want


def test_a_quickstart_step_takes_150_bytes_against_1400_as_json(tmp_path):
  path = str(tmp_path / "steps.bin")
  records = device_records(QUICKSTART_KEYS, 480)  # 40 epochs of 12 steps
  assert write_and_read(path, records) == records
  with open(path, "rb") as f:
    header = f.readline()
  size = os.path.getsize(path)
  # 1 mark byte + 5 mask bytes (34 columns) + 32 float32 + 2 int64 = 150
  assert (size - len(header)) / len(records) == 1 + 5 + 32 * 4 + 2 * 8
  assert size / len(records) < 160
  json_size = sum(len(json.dumps(r)) + 1 for r in records)
  assert json_size / len(records) > 1000


def test_metric_writer_keeps_invariance_residuals_on_checked_steps_only(tmp_path):
  writer = logs.MetricWriter(str(tmp_path), per_step=True)
  records = device_records(["loss", *INVARIANCE], 5)
  writer.write_steps([dict(r) for r in records], invariance_every=2)
  writer.close()
  got = logs.read_run(str(tmp_path), steps=True)
  assert [any(k in r for k in INVARIANCE) for r in got] == [True, False, True, False, True]
  assert got[3] == {"loss": records[3]["loss"], "step": 3, "epoch": 0}


def test_resume_cuts_the_step_log_back_to_the_checkpointed_length(tmp_path):
  workdir = str(tmp_path)
  kept, lost = device_records(["loss"], 3, seed=1), device_records(["loss"], 3, seed=2)
  writer = logs.MetricWriter(workdir, per_step=True)
  writer.write_steps(kept)
  writer.write_epoch({"epoch": 1, "step": 3, "loss": 1.0})
  offsets = writer.offsets()
  writer.write_steps(device_records(["loss"], 3, seed=2, first_step=3, epoch=1))
  writer.close()
  with open(os.path.join(workdir, logs.STEPS_FILE), "ab") as f:
    f.write(b"\x1e\x01\x02")  # half a record: a crash while writing
  with pytest.raises(ValueError, match=r"steps.bin, byte \d+: not a step record"):
    logs.read_run(workdir, steps=True)
  redone = device_records(["loss"], 3, seed=3, first_step=3, epoch=1)
  writer = logs.MetricWriter(workdir, per_step=True, offsets=offsets)
  writer.write_steps(redone)
  writer.close()
  assert logs.read_run(workdir, steps=True) == kept + redone
  assert lost != redone


def test_a_cut_or_foreign_file_is_named_with_the_byte(tmp_path):
  path = str(tmp_path / "steps.bin")
  write_and_read(path, device_records(["loss"], 2))
  with open(path, "rb") as f:
    header = len(f.readline())
  os.truncate(path, header + 22 + 19)  # records of 1 + 1 + 4 + 8 + 8 bytes: the 2nd cut
  with pytest.raises(ValueError, match=f"steps.bin, byte {header + 22}: not a step record"):
    logs.read_step_log(path)
  with open(path, "wb") as f:
    f.write(b'{"format": "other"}\n')
  with pytest.raises(ValueError, match="byte 0: not an si_jax step log header"):
    logs.read_step_log(path)


def test_an_old_runs_steps_jsonl_is_read_and_continued(tmp_path):
  workdir = str(tmp_path)
  old = device_records(["loss"], 2)
  with open(os.path.join(workdir, logs.STEPS_JSONL_FILE), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in old)
  assert logs.read_run(workdir, steps=True) == old
  size = os.path.getsize(os.path.join(workdir, logs.STEPS_JSONL_FILE))
  writer = logs.MetricWriter(workdir, per_step=True, offsets=(0, size))
  more = device_records(["loss"], 1, first_step=2)
  writer.write_steps(more)
  assert writer.offsets()[1] == size + len(json.dumps(more[0])) + 1
  writer.close()
  assert not os.path.exists(os.path.join(workdir, logs.STEPS_FILE))
  assert logs.steps_path(workdir) == os.path.join(workdir, logs.STEPS_JSONL_FILE)
  assert logs.read_run(workdir, steps=True) == old + more
