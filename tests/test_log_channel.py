"""si_jax's warnings: one logging channel, one stderr line each, under absl too."""

import logging
import math
import subprocess
import sys

from si_jax import logs
from si_jax.engine import records

NAN_LOSS = {"loss": math.nan, "grad_norm": 1.0, "weight_norm": 2.0}


def test_a_library_warning_is_one_stderr_line_and_reaches_no_root_handler(capsys):
  seen = []
  root_handler = logging.Handler()
  root_handler.emit = seen.append  # what absl's handler on the root logger would get
  logging.getLogger().addHandler(root_handler)
  try:
    records.check_finite([NAN_LOSS], 5, "record")
  finally:
    logging.getLogger().removeHandler(root_handler)
  assert capsys.readouterr().err == (
      "warning: non-finite ['loss'] at step 5 (recorded, training goes on)\n")
  assert seen == []


def test_status_lines_keep_their_text_and_debug_stays_silent(capsys):
  log = logging.getLogger("si_jax.engine.train")
  log.info("resuming %s from the checkpoint of epoch %d", "w", 2)
  log.debug("not shown")
  log.error("boom")
  assert capsys.readouterr().err == "resuming w from the checkpoint of epoch 2\nerror: boom\n"


def test_a_second_install_adds_no_second_line(capsys):
  logs.warnings_to_stderr()  # import si_jax made the first
  logging.getLogger("si_jax.engine.lifecycle").warning("once")
  assert capsys.readouterr().err == "warning: once\n"
  assert not logging.getLogger("si_jax").propagate


def test_a_plain_python_caller_sees_the_warning_once():
  code = ("import math; from si_jax.engine import records; "
          "records.check_finite([{'loss': math.nan, 'grad_norm': 1.0, 'weight_norm': 2.0}], "
          "3, 'record')")
  err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stderr
  assert err.splitlines()[-1:] == [
      "warning: non-finite ['loss'] at step 3 (recorded, training goes on)"]
  assert err.count("non-finite") == 1
