"""The compact per-step log (steps.bin): records read back exactly as written (keys, key
order, ints as ints, float32 and float64 values, NaN and inf), the byte layout is the one
docs/design_notes.md states (decoded here by hand, CRCs included), ~154 bytes a step for
the quickstart ConvNet's fields, resume cuts it back at a record end and appends a valid
segment, the reader rejects -- naming the offset -- what no writer wrote (bytes appended
after the last record, a changed byte, a record cut short, a newer version's segment),
version 1 files (before the CRC) are still read and continued, and old runs'
steps.jsonl are still read and continued."""

import json
import math
import os
import struct
import zlib

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


def crc(data: bytes) -> bytes:
  return struct.pack("<I", zlib.crc32(data))


def loss_records(n, seed=0):
  """``n`` records of loss, step, epoch: 26 bytes each in steps.bin (1 + 1 + 4 + 8 + 8 + 4)."""
  return device_records(["loss"], n, seed=seed)


LOSS_RECORD = 26


def header_length(path):
  with open(path, "rb") as f:
    return len(f.readline())


def test_the_layout_is_the_documented_one(tmp_path):
  """Header line, then per record: 0x1E, the presence mask (bit i for column i), the
  columns little-endian (an absent one as zero), the CRC-32 of the segment's header line
  and record bytes so far without CRCs -- decoded by hand."""
  path = str(tmp_path / "steps.bin")
  write_and_read(path, [{"loss": 0.5, "step": 7, "epoch": 0}, {"step": 8, "epoch": 0},
                        {"loss": 0.1, "step": 9, "epoch": 0}])
  with open(path, "rb") as f:
    data = f.read()
  header = {"format": "si_jax.steps", "version": 2, "columns": ["loss", "step", "epoch"]}
  first = json.dumps({**header, "types": ["f4", "i8", "i8"]}).encode() + b"\n"
  second = json.dumps({**header, "types": ["f8", "i8", "i8"]}).encode() + b"\n"
  a = b"\x1e\x07" + struct.pack("<fqq", 0.5, 7, 0)
  b = b"\x1e\x06" + struct.pack("<fqq", 0.0, 8, 0)
  c = b"\x1e\x07" + struct.pack("<dqq", 0.1, 9, 0)
  want = (first + a + crc(first + a) + b + crc(first + a + b)
          + second + c + crc(second + c))
  assert data == want


def test_a_quickstart_step_takes_154_bytes_against_1400_as_json(tmp_path):
  path = str(tmp_path / "steps.bin")
  records = device_records(QUICKSTART_KEYS, 480)  # 40 epochs of 12 steps
  assert write_and_read(path, records) == records
  size = os.path.getsize(path)
  # 1 mark byte + 5 mask bytes (34 columns) + 32 float32 + 2 int64 + 4 CRC bytes = 154
  assert (size - header_length(path)) / len(records) == 1 + 5 + 32 * 4 + 2 * 8 + 4
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


def not_written(offset):
  """The start of the reader's ValueError for bytes at ``offset`` that no writer wrote."""
  return f"steps.bin: bytes from offset {offset} are not a record this program wrote"


def test_resume_cuts_the_step_log_back_to_the_checkpointed_length(tmp_path):
  workdir = str(tmp_path)
  path = os.path.join(workdir, logs.STEPS_FILE)
  kept, lost = device_records(["loss"], 3, seed=1), device_records(["loss"], 3, seed=2)
  writer = logs.MetricWriter(workdir, per_step=True)
  writer.write_steps(kept)
  writer.write_epoch({"epoch": 1, "step": 3, "loss": 1.0})
  offsets = writer.offsets()
  header = header_length(path)
  assert offsets[1] == header + 3 * LOSS_RECORD
  writer.write_steps(device_records(["loss"], 3, seed=2, first_step=3, epoch=1))
  writer.close()
  with open(path, "ab") as f:
    f.write(b"\x1e\x01\x02")  # half a record: a crash while writing
  with pytest.raises(ValueError, match=not_written(header + 6 * LOSS_RECORD)
                     + r" \(a record cut short, 3 of its 26 bytes"):
    logs.read_run(workdir, steps=True)
  redone = device_records(["loss"], 3, seed=3, first_step=3, epoch=1)
  writer = logs.MetricWriter(workdir, per_step=True, offsets=offsets)
  writer.write_steps(redone)
  assert writer.offsets()[1] == offsets[1] + header + 3 * LOSS_RECORD  # a new segment
  writer.close()
  assert logs.read_run(workdir, steps=True) == kept + redone
  assert lost != redone


@pytest.mark.parametrize("garbage", [150, 2 * 154])
def test_appended_bytes_that_begin_with_the_record_mark_are_not_read(tmp_path, garbage):
  """150 bytes (a version 1 quickstart record's size: version 1 read them as a 7th step),
  then two whole records' worth: the reader names where they begin."""
  path = str(tmp_path / "steps.bin")
  records = device_records(QUICKSTART_KEYS, 6)
  write_and_read(path, records)
  end = os.path.getsize(path)
  assert end == header_length(path) + 6 * 154
  junk = np.random.default_rng(7).integers(0, 256, garbage, dtype=np.uint8).tobytes()
  with open(path, "ab") as f:
    f.write(b"\x1e" + junk[1:])
  why = ("a record cut short, 150 of its 154 bytes" if garbage == 150 else
         "their CRC-32 does not match")
  with pytest.raises(ValueError, match=not_written(end) + rf" \({why}"):
    logs.read_step_log(path)
  os.truncate(path, end)
  assert logs.read_step_log(path) == records


@pytest.mark.parametrize("where", [0, 3, 77, 151])  # the mark, the mask, a value, the CRC
def test_a_changed_byte_in_a_record_is_named_with_its_offset(tmp_path, where):
  path = str(tmp_path / "steps.bin")
  records = device_records(QUICKSTART_KEYS, 6)
  write_and_read(path, records)
  third = header_length(path) + 2 * 154
  with open(path, "r+b") as f:
    f.seek(third + where)
    byte = f.read(1)
    f.seek(third + where)
    f.write(bytes([byte[0] ^ 0x10]))
  with pytest.raises(ValueError, match=not_written(third)):
    logs.read_step_log(path)


def test_a_changed_header_fails_its_segments_first_record(tmp_path):
  """A header line that still parses but names another column: the CRC covers it."""
  path = str(tmp_path / "steps.bin")
  write_and_read(path, loss_records(2))
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data.replace(b'"loss"', b'"lost"', 1))
  with pytest.raises(ValueError, match=not_written(header_length(path))
                     + r" \(their CRC-32 does not match"):
    logs.read_step_log(path)


def test_every_record_end_is_a_valid_end_and_any_other_cut_is_named(tmp_path):
  path = str(tmp_path / "steps.bin")
  records = loss_records(4)
  write_and_read(path, records)
  with open(path, "rb") as f:
    data = f.read()
  header = header_length(path)
  assert len(data) == header + 4 * LOSS_RECORD
  for length in range(1, len(data) + 1):
    with open(path, "wb") as f:
      f.write(data[:length])
    whole, left = divmod(length - header, LOSS_RECORD)
    if length < header:
      with pytest.raises(ValueError, match=not_written(0) + r" \(a '\{' that begins no JSON"):
        logs.read_step_log(path)
    elif left == 0:
      assert logs.read_step_log(path) == records[:whole]
    else:
      with pytest.raises(ValueError, match=not_written(header + whole * LOSS_RECORD)
                         + rf" \(a record cut short, {left} of its 26 bytes"):
        logs.read_step_log(path)


def test_a_foreign_file_is_named_with_the_byte(tmp_path):
  path = str(tmp_path / "steps.bin")
  with open(path, "wb") as f:
    f.write(b'{"format": "other"}\n')
  with pytest.raises(ValueError, match=not_written(0) + r" \(not an si_jax step log header"):
    logs.read_step_log(path)
  with open(path, "wb") as f:
    f.write(b"\x1e" * 30)
  with pytest.raises(ValueError, match=not_written(0) + r" \(neither a record"):
    logs.read_step_log(path)


def version_1_file(path):
  """Three records as the version 1 writer wrote them (its layout test pinned these bytes,
  commit 4cf2430): no CRC, a new segment where loss needs float64."""
  header = {"format": "si_jax.steps", "version": 1, "columns": ["loss", "step", "epoch"]}
  with open(path, "wb") as f:
    f.write(json.dumps({**header, "types": ["f4", "i8", "i8"]}).encode() + b"\n"
            + b"\x1e\x07" + struct.pack("<fqq", 0.5, 7, 0)
            + b"\x1e\x06" + struct.pack("<fqq", 0.0, 8, 0)
            + json.dumps({**header, "types": ["f8", "i8", "i8"]}).encode() + b"\n"
            + b"\x1e\x07" + struct.pack("<dqq", 0.1, 9, 0))
  return [{"loss": 0.5, "step": 7, "epoch": 0}, {"step": 8, "epoch": 0},
          {"loss": 0.1, "step": 9, "epoch": 0}]


def test_a_version_1_file_is_read_and_a_resume_continues_it_in_version_2(tmp_path):
  workdir = str(tmp_path)
  path = os.path.join(workdir, logs.STEPS_FILE)
  old = version_1_file(path)
  size = os.path.getsize(path)
  assert logs.read_step_log(path) == old
  writer = logs.MetricWriter(workdir, per_step=True, offsets=(0, size))
  more = loss_records(2, seed=4)
  writer.write_steps(more)
  writer.close()
  with open(path, "rb") as f:
    f.seek(size)
    second = f.readline()
  assert json.loads(second)["version"] == 2
  assert os.path.getsize(path) == size + len(second) + 2 * LOSS_RECORD
  assert logs.read_run(workdir, steps=True) == old + more


def test_a_newer_versions_segment_is_refused_by_name(tmp_path):
  path = str(tmp_path / "steps.bin")
  write_and_read(path, loss_records(1))
  size = os.path.getsize(path)
  with open(path, "ab") as f:
    f.write(json.dumps({"format": "si_jax.steps", "version": 3, "columns": ["loss"],
                        "types": ["f4"]}).encode() + b"\n")
  with pytest.raises(ValueError, match=rf"steps.bin: the step log segment at offset {size} is "
                     "version 3, written by a newer si_jax"):
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


def test_writers_create_their_directories_for_your_own_loop(tmp_path):
  """A loop of one's own writes epoch and step records and TensorBoard events into a folder
  that does not exist yet; read_run reads them back."""
  workdir = str(tmp_path / "new" / "run")
  writer = logs.MetricWriter(workdir, per_step=True, tensorboard={"optim.lr": 0.1})
  writer.write_steps([{"step": 1, "epoch": 0, "loss": 2.0}])
  writer.write_epoch({"epoch": 1, "step": 1, "loss": 2.0})
  writer.close()
  assert logs.read_run(workdir) == [{"epoch": 1, "step": 1, "loss": 2.0}]
  assert logs.read_run(workdir, steps=True)[0]["loss"] == 2.0
  assert any(name.startswith("events") for name in os.listdir(workdir))


def test_doc_blocks_are_replaced_between_their_markers_only(tmp_path):
  path = tmp_path / "doc.md"
  path.write_text("a\n<!-- x:start -->\nold\n<!-- x:end -->\nb\n<!-- x:end -->\n")
  logs.replace_doc_block(str(path), "x", "new\nlines")
  assert path.read_text() == "a\n<!-- x:start -->\nnew\nlines\n<!-- x:end -->\nb\n<!-- x:end -->\n"
  with pytest.raises(ValueError, match="no <!-- y:start --> ... <!-- y:end --> block"):
    logs.replace_doc_block(str(path), "y", "z")
