"""The experiment programs' shared command line: the common absl flags, the JAX settings
they imply, and ``run(main)``, which reports a user's error in one line.

  from si_jax import cli

  _CONFIG = cli.config_flag("configs/lr_sweep.py[:variant]")
  _WORKDIR = cli.workdir_flag()

  def main(argv):
    ...

  if __name__ == "__main__":
    cli.run(main)

absl flags are process-global and a name may be defined once, so nothing is defined on
import: a program calls the ``*_flag`` functions for the flags it reads. They are
attributed to that program (its ``--help`` lists them), not to this module.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from absl import app, flags, logging
from ml_collections import config_flags

# Flags defined by the functions below belong to the program that calls them.
flags.disclaim_key_flags()


def config_flag(help_text: str = "experiment config (configs/*.py[:variant])",
                lock: bool = True) -> flags.FlagHolder:
  """--config=FILE.py[:variant]: an ml_collections config file (``get_config(variant)``),
  with dotted overrides such as ``--config.optim.lr=0.2``; required."""
  holder = config_flags.DEFINE_config_file("config", None, help_text, lock_config=lock)
  flags.mark_flag_as_required("config")
  return holder


def workdir_flag(help_text: str = "output directory") -> flags.FlagHolder:
  """--workdir: where the run (or family) writes its logs, checkpoints and figures."""
  return flags.DEFINE_string("workdir", None, help_text, required=True)


def cpu_devices_flag() -> flags.FlagHolder:
  """--cpu_devices=N: split the CPU into N XLA devices (applied by ``run``)."""
  return flags.DEFINE_integer(
      "cpu_devices", None, "split the CPU into N XLA devices: a run's batch, or a vmapped "
      "family's members and batches, are sharded over them (results do not depend on N)",
      lower_bound=1)


def compilation_cache_flag() -> flags.FlagHolder:
  """--compilation_cache_dir: the persistent XLA compilation cache (applied by ``run``)."""
  return flags.DEFINE_string(
      "compilation_cache_dir", None, "persistent XLA compilation cache: repeated launches "
      "of the same config skip compiling")


def vmap_flag() -> flags.FlagHolder:
  """--vmap=auto|yes|no: whether a family trains as one vmapped program
  (``si_jax.experiment.run_family``)."""
  return flags.DEFINE_enum(
      "vmap", "auto", ["auto", "yes", "no"], "one vmapped program for members that differ "
      "only in lr, wd, seed, init scale or last-layer norm (auto: on accelerators, or on "
      "CPU with --cpu_devices > 1 and --config.model.conv_impl=patches)")


def progress_flag() -> flags.FlagHolder:
  """--[no]progress: one progress line per epoch on stderr."""
  return flags.DEFINE_bool("progress", True, "report each epoch's progress on stderr")


def configure_jax() -> None:
  """Applies --cpu_devices and --compilation_cache_dir where the program defines them
  (before JAX starts its backend, i.e. before the first computation)."""
  values = flags.FLAGS
  cpu_devices = values["cpu_devices"].value if "cpu_devices" in values else None
  cache = values["compilation_cache_dir"].value if "compilation_cache_dir" in values else None
  if not (cpu_devices or cache):
    return
  import jax  # not every program needs it
  if cpu_devices:
    jax.config.update("jax_num_cpu_devices", cpu_devices)
  if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def user_errors() -> tuple[type[BaseException], ...]:
  """The errors that mean a bad config, data, workdir or run rather than a bug: a bad
  value or missing file, a diverged run, an unusable checkpoint.

  An error class whose module was never imported cannot have been raised, so this
  imports nothing (a plotting script does not load orbax to report a bad argument).
  """
  kinds: list[type[BaseException]] = [ValueError, FileNotFoundError]
  for module, name in (("si_jax.records", "TrainingDiverged"),
                       ("si_jax.checkpoint", "CheckpointError")):
    if module in sys.modules:
      kinds.append(getattr(sys.modules[module], name))
  return tuple(kinds)


def report_family(config, workdir: str, summary: dict[str, Any], note: str = "") -> None:
  """A family program's output: WORKDIR/summary.md (``note``, then the members' table,
  ``experiment.table``), the table on stdout, and the family's figures
  (``experiment.draw``), one ``figure: PATH`` line each."""
  from si_jax import experiment  # the training stack only for the programs that train
  text = experiment.table(summary)
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write((note + "\n\n" if note else "") + text + "\n")
  print(text)
  for path in experiment.draw(config, workdir):
    print(f"figure: {path}")


def _adopt_program_flags(main: Callable) -> None:
  """``--help`` of a console script (whose ``__main__`` is a generated stub) describes
  the program: its module's docstring and the flags it defined."""
  program = sys.modules[main.__module__]
  for flag in flags.FLAGS.get_key_flags_for_module(program.__name__):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  stub = sys.modules["__main__"]
  if stub is not program and not stub.__doc__:
    stub.__doc__ = program.__doc__


def run(main: Callable[[list[str]], None], positional: int = 0) -> None:
  """``absl.app.run(main)`` with the shared set-up: exactly ``positional`` arguments
  besides the flags, warnings-only logging (orbax and JAX are chatty at INFO), the JAX
  flags applied, and a user error (``user_errors``) reported as one ``error: ...``
  line on stderr with exit status 1 instead of a traceback."""
  _adopt_program_flags(main)

  def wrapped(argv: list[str]) -> None:
    if len(argv) - 1 != positional:
      raise app.UsageError(f"expected {positional} argument(s) besides the flags, got "
                           f"{argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    configure_jax()
    try:
      main(argv)
    except user_errors() as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(1)

  app.run(wrapped)
