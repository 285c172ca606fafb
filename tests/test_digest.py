"""The training engine's output is pinned: the quickstart's logs, byte for byte.

The digests were taken from the code before the engine refactor (commit ed023d4: one
loop in train.py, a second in sweep.py). Any change to the step, the data order, the
evaluation, the metric names or the JSON formatting changes them; a refactor must not.
``wall_time`` is the one field that differs between runs and is left out. The steps are
rendered from ``logs.read_run`` as the JSON lines steps.jsonl held (steps.bin stores
them in binary since; its float32 values read back exactly). XLA:CPU is
deterministic for a given machine and jaxlib, which is what CI runs on; a jax upgrade
that changes the float results is a reason to re-pin (say why in the commit).
"""

import hashlib
import json
import os

from si_jax import logs
from si_jax.config import base_config
from si_jax.engine import train

# sha256 of the logs with each record's "wall_time" removed (json.dumps per line), as
# (metrics.jsonl, steps) pairs. XLA:CPU's float results depend on the host CPU, so each
# pair is what the code before the engine refactor gives on one kind of machine:
PINNED = {
    # commit ed023d4, the machine of the sessions up to 2026-11-30
    ("f508bde090db86276cf5e2265dd60cf3d40702c8a612bdedf66a5edeebe630d1",
     "f1e1b5389071e5036a14533dad189409e7294c29336543a264f5b4c935fdbe5e"),
    # commit 4cf2430 (identical logs to ed023d4's on its machine, above), run on an AMD
    # EPYC without AVX-512, jaxlib 0.10.2, numpy 2.4.6, scikit-learn 1.9.1 (2026-12-03)
    ("16f35b8ff13fc215605f8a0749ed868c959153eb155cb894d4985bf7e7622c09",
     "3d1e814a4d5e9e2a118e67432403ee1b78965c27a5e9cc79b2dba19435fed096"),
}


def quickstart_config():
  """configs/quickstart.py, 40 epochs, per-step logs (the first destabilization is near
  45), without the gradient pass that was added after the pin (its keys are extra)."""
  config = base_config()
  config.model.width = 8
  config.data.name, config.data.source = "digits", "embedded"
  config.optim.lr, config.optim.wd = 0.1, 0.03
  config.train.epochs, config.train.log_every = 40, "step"
  config.train.grad_pass_every = 0  # the pinned logs predate appendix B's gradient pass
  config.train.live_phases = False  # ... and the live detector's fields
  return config


def records_digest(records: list[dict]) -> tuple[str, int]:
  records = [{k: v for k, v in r.items() if k != "wall_time"} for r in records]
  text = "".join(json.dumps(r) + "\n" for r in records)
  return hashlib.sha256(text.encode()).hexdigest(), len(records)


def log_digest(path: str) -> tuple[str, int]:
  with open(path) as f:
    return records_digest([json.loads(line) for line in f])


def test_quickstart_logs_are_byte_identical_to_the_pinned_run(tmp_path):
  train.train_and_evaluate(quickstart_config(), str(tmp_path), progress=False)
  metrics, epochs = log_digest(os.path.join(tmp_path, "metrics.jsonl"))
  steps, count = records_digest(logs.read_run(str(tmp_path), steps=True))
  assert (epochs, count) == (40, 480)
  assert (metrics, steps) in PINNED, (metrics, steps)
