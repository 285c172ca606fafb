"""The experiment programs' shared command line: flags, JAX settings, one-line errors.

A program calls the ``*_flag`` functions for the flags it reads (nothing is defined on
import) and ``cli.run(main)``. A user's error (a bad flag or config, missing data,
another run's workdir, a damaged checkpoint or log, a diverged run) ends the program
with exit status 1 and one ``error: ...`` line on stderr, never a traceback;
``--verbose`` or ``SI_JAX_VERBOSE=1`` adds it. Details: docs/design_notes.md.
"""

from __future__ import annotations

import argparse
import difflib
import logging as std_logging
import os
import re
import sys
import traceback
from typing import Any, Callable, NoReturn

from absl import app, flags, logging
from ml_collections import config_dict, config_flags

from si_jax import logs

# Flags defined by the functions below belong to the program that calls them.
flags.disclaim_key_flags()

VERBOSE_ENV = "SI_JAX_VERBOSE"


def config_flag(help_text: str = "experiment config (configs/*.py[:variant])",
                lock: bool = True) -> flags.FlagHolder:
  """Defines the required --config=FILE.py[:variant] (overrides: --config.optim.lr=0.2)."""
  holder = config_flags.DEFINE_config_file("config", None, help_text, lock_config=lock)
  flags.mark_flag_as_required("config")
  return holder


def workdir_flag(help_text: str = "output directory") -> flags.FlagHolder:
  """Defines the required --workdir: where the logs, checkpoints and figures go."""
  return flags.DEFINE_string("workdir", None, help_text, required=True)


def cpu_devices_flag() -> flags.FlagHolder:
  """Defines --cpu_devices=N: split the CPU into N XLA devices (applied by ``run``)."""
  return flags.DEFINE_integer(
      "cpu_devices", None, "split the CPU into N XLA devices: a run's batch, or a vmapped "
      "family's members and batches, are sharded over them (results do not depend on N)",
      lower_bound=1)


def compilation_cache_flag() -> flags.FlagHolder:
  """Defines --compilation_cache_dir, the persistent XLA cache (applied by ``run``)."""
  return flags.DEFINE_string(
      "compilation_cache_dir", None, "persistent XLA compilation cache: repeated launches "
      "of the same config skip compiling")


def vmap_flag() -> flags.FlagHolder:
  """Defines --vmap=auto|yes|no: a family as one vmapped program (``run_family``)."""
  return flags.DEFINE_enum(
      "vmap", "auto", ["auto", "yes", "no"], "one vmapped program for members that differ "
      "only in lr, wd, seed, init scale or last-layer norm (auto: on accelerators, or on "
      "CPU with --cpu_devices > 1 and --config.model.conv_impl=patches)")


def progress_flag() -> flags.FlagHolder:
  """Defines --[no]progress: one progress line per epoch on stderr."""
  return flags.DEFINE_bool("progress", True, "report each epoch's progress on stderr")


def verbose_flag() -> flags.FlagHolder:
  """Defines --verbose: tracebacks and the libraries' warnings (``run`` does, always)."""
  return flags.DEFINE_bool(
      "verbose", False, f"on an error, print the traceback too, and let the libraries' "
      f"warnings through (or set {VERBOSE_ENV}=1)")


def distributed_flags() -> None:
  """Defines --distributed and its cluster flags (applied by ``join_cluster``)."""
  from si_jax.engine import distributed  # only for the programs that train
  flags.DEFINE_bool(
      "distributed", False, "multi-process: join the other processes first (run the same "
      "command on every process, --process_id aside); the batch is then sharded over every "
      "process's devices")
  flags.DEFINE_string(
      "coordinator_address", None, "with --distributed: HOST:PORT of process 0, the same on "
      "every process (default: $JAX_COORDINATOR_ADDRESS, else the cluster's)")
  flags.DEFINE_integer("num_processes", None, "with --distributed: how many processes "
                       "(default: $JAX_NUM_PROCESSES, else the cluster's)")
  flags.DEFINE_integer("process_id", None, "with --distributed: this process's id, "
                       "0 .. num_processes-1 (default: $JAX_PROCESS_ID, else the cluster's)")
  flags.DEFINE_integer("distributed_timeout", None, "with --distributed: seconds for every "
                       f"process to join (default: ${distributed.TIMEOUT_ENV}, else "
                       f"{distributed.DEFAULT_TIMEOUT})")


def join_cluster() -> None:
  """Joins the other processes where --distributed asks (after ``configure_jax``).

  Raises:
    app.UsageError: a cluster flag without --distributed.
    ValueError: a missing or unusable setting (``distributed.initialize``).
  """
  values = flags.FLAGS
  cluster = (values.coordinator_address, values.num_processes, values.process_id)
  if not values.distributed:
    if (*cluster, values.distributed_timeout) != (None,) * 4:
      raise app.UsageError("--coordinator_address, --num_processes, --process_id and "
                           "--distributed_timeout need --distributed")
    return
  from si_jax.engine import distributed  # only for the programs that train
  distributed.initialize(*cluster, timeout=values.distributed_timeout)


def configure_jax() -> None:
  """Applies --cpu_devices and --compilation_cache_dir, before JAX starts its backend."""
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
  """The error classes that mean a bad config, data, workdir or run rather than a bug.

  Imports nothing: an error class whose module was never imported cannot have been raised.
  """
  kinds: list[type[BaseException]] = [ValueError, OSError]
  for module, name in (("si_jax.engine.records", "TrainingDiverged"),
                       ("si_jax.engine.checkpoint", "CheckpointError"),
                       ("si_jax.engine.experiment", "FamilyStopped")):
    if module in sys.modules:
      kinds.append(getattr(sys.modules[module], name))
  return tuple(kinds)


def verbose_requested(argv: list[str] | None = None) -> bool:
  """Whether the last --[no]verbose in ``argv`` (unparsed), or SI_JAX_VERBOSE=1, asks for it."""
  verbose = os.environ.get(VERBOSE_ENV, "").lower() not in ("", "0", "false", "no")
  for arg in argv or ():
    name, _, value = arg.lstrip("-").partition("=")
    if name == "verbose":
      verbose = value.lower() not in ("0", "false", "no")
    elif name == "noverbose" and not value:
      verbose = False
  return verbose


class ArgumentParser(argparse.ArgumentParser):
  """argparse for the argparse programs: one-line usage errors (``fail``) and ``--verbose``."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.add_argument("--verbose", action="store_true",
                      help=f"on an error, print the traceback too (or set {VERBOSE_ENV}=1)")

  def error(self, message: str):
    """Ends the program with one ``error: ...`` line (argparse's usage errors)."""
    fail(message, "(--help describes the arguments)", verbose_requested(sys.argv))


def fail(message: BaseException | str, hint: str = "", verbose: bool = False,
         status: int = 1) -> NoReturn:
  """Ends the program: ``error: MESSAGE`` (and ``hint``) on stderr, exit ``status``.

  With ``verbose``, the traceback of the error being handled comes first.
  """
  if verbose and sys.exc_info()[0] is not None:
    traceback.print_exc()
  print(f"error: {logs.one_line(message)}", file=sys.stderr)
  if hint:
    print(hint, file=sys.stderr)
  sys.stderr.flush()
  sys.exit(status)


class _QuietLibraryLog(std_logging.Filter):
  """Drops absl's and asyncio's warnings, records their errors, shows critical records."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if std_logging.ERROR <= record.levelno < std_logging.CRITICAL:
      _background_failures.append(f"{record.name}.{record.module}: "
                                  f"{logs.one_line(record.getMessage())[:300]}")
    return record.levelno >= std_logging.CRITICAL


_background_failures: list[str] = []


def quiet_libraries() -> None:
  """Keeps absl's and asyncio's log records off stderr (their errors reported at the end).

  asyncio logs a failed orbax read it abandoned ("exception was never retrieved") with a
  traceback; the filter keeps its one line for ``guarded``'s closing warning.
  """
  for name in ("absl", "asyncio"):
    logger = std_logging.getLogger(name)
    if not any(isinstance(f, _QuietLibraryLog) for f in logger.filters):
      logger.addFilter(_QuietLibraryLog())


def _report_background_failures() -> None:
  """One warning line for the errors libraries logged in their own threads."""
  if _background_failures:
    print(f"warning: {len(_background_failures)} error(s) in background threads, the first: "
          f"{_background_failures[0]} ({VERBOSE_ENV}=1 shows them)", file=sys.stderr)


def _flag_argument(argv: list[str], name: str) -> str | None:
  """The (last) value given to --name in ``argv``, as --name=VALUE or --name VALUE."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    match = re.fullmatch(rf"--?{re.escape(name)}(=(.*))?", arg, re.DOTALL)
    if match:
      value = match.group(2) if match.group(1) else (argv[i + 1] if i + 1 < len(argv) else "")
  return value


def _root_cause(error: BaseException) -> BaseException:
  """The first error of a chain (a config file's own, under ml_collections' wrappers)."""
  while True:
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if cause is None:
      return error
    error = cause


def _describe(error: BaseException) -> str:
  text = logs.one_line(error)
  return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"


def _unknown_override(config, name: str, argv: list[str]) -> str | None:
  """Names the first --name.FIELD=... override whose field the config lacks."""
  for arg in argv[1:]:
    match = re.match(rf"--?(?:no)?{re.escape(name)}\.([^=]+)", arg)
    if not match:
      continue
    path, node, done = match.group(1), config, []
    for part in path.split("."):
      where = ".".join(done)
      if not isinstance(node, (config_dict.ConfigDict, dict)):
        return f"--{name}.{path}: {where} is a value, not a section of fields"
      if part not in node:
        close = difflib.get_close_matches(part, [str(k) for k in node.keys()], 1)
        hint = f" (did you mean --{'.'.join([name, *done, close[0]])}?)" if close else ""
        return (f"--{name}.{path}: the config has no field {part!r}"
                f"{' in ' + where if where else ''}{hint}")
      node = node[part]
      done.append(part)
  return None


def _config_flag_problem(name: str, argv: list[str]) -> str | None:
  """What is wrong with --name=FILE.py[:variant] and its overrides, or None."""
  spec = _flag_argument(argv, name)
  if spec is None:
    return None
  path = spec.split(":", 1)[0]
  if not path:
    return f"--{name} needs a config file (FILE.py or FILE.py:variant)"
  if not os.path.exists(path):
    return f"--{name}={spec}: no such config file {path!r}"
  if os.path.isdir(path):
    return f"--{name}={spec}: {path!r} is a directory, not a config file"
  try:
    config = flags.FLAGS[name].parser.parse(spec)
    getattr(config, "lock", None)  # a file that could not be read raises here
  except Exception as e:  # the config file's own error: a bad variant, a syntax error
    return f"--{name}={spec}: {_describe(_root_cause(e))}"
  return _unknown_override(config, name, argv)


def _config_flag_names() -> list[str]:
  """The flags defined by ``config_flags.DEFINE_config_file``."""
  return [name for name in flags.FLAGS
          if flags.FLAGS[name].parser.flag_type() == "config object"]


def parse_flags(argv: list[str]) -> list[str]:
  """Parses the flags and loads the configs; an error ends the program in one line."""
  verbose = verbose_requested(argv)
  if not verbose:
    quiet_libraries()
  try:
    rest = flags.FLAGS(argv)
    for name in _config_flag_names():
      getattr(flags.FLAGS[name].value, "lock", None)  # a file that failed to load raises
  except Exception as e:  # noqa: BLE001 -- every parsing error is the user's input
    problems = (_config_flag_problem(name, argv) for name in _config_flag_names())
    message = next((p for p in problems if p), None)
    hint = "(--helpfull lists every flag)" if isinstance(e, flags.UnrecognizedFlagError) else ""
    fail(message or logs.one_line(e), "" if message else hint, verbose)
  return rest


def report_family(config, workdir: str, summary: dict[str, Any], note: str = "") -> None:
  """Writes WORKDIR/summary.md and the family's figures; prints the table and paths."""
  from si_jax.engine import experiment, lifecycle  # only for the programs that train
  from si_jax.plots import family
  text = experiment.table(summary)
  lifecycle.write_atomically(os.path.join(workdir, "summary.md"),
                             (note + "\n\n" if note else "") + text + "\n")
  print(text)
  for path in family.draw_family(config, workdir):
    print(f"figure: {path}")


def _adopt_program_flags(main: Callable) -> None:
  """Makes a console script's --help describe ``main``'s module and its flags."""
  program = sys.modules[main.__module__]
  for flag in flags.FLAGS.get_key_flags_for_module(program.__name__):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  stub = sys.modules["__main__"]
  if stub is not program and not stub.__doc__:
    stub.__doc__ = program.__doc__


def guarded(main: Callable[[list[str]], Any], argv: list[str]) -> None:
  """Calls ``main(argv)``; a user error, usage error or interrupt ends it in one line."""
  verbose = verbose_requested() or ("verbose" in flags.FLAGS and flags.FLAGS.verbose)
  try:
    main(argv)
    _report_background_failures()
  except app.UsageError as e:
    fail(e, "(--help describes the program and its flags)", verbose)
  except KeyboardInterrupt:  # a second SIGINT/SIGTERM: stopped at once
    fail("interrupted", verbose=verbose, status=130)
  except user_errors() as e:
    fail(e, verbose=verbose)


def run(main: Callable[[list[str]], None], positional: int = 0, jax_flags: bool = True) -> None:
  """``absl.app.run(main)`` with the shared set-up and one-line errors.

  Args:
    main: the program, main(argv).
    positional: how many arguments besides the flags it takes.
    jax_flags: whether to apply --cpu_devices and the cache first (else ``main`` does).
  """
  if "verbose" not in flags.FLAGS:
    verbose_flag()
  _adopt_program_flags(main)

  def wrapped(argv: list[str]) -> None:
    if len(argv) - 1 != positional:
      raise app.UsageError(f"expected {positional} argument(s) besides the flags, got "
                           f"{argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    if jax_flags:
      configure_jax()
    main(argv)

  app.run(lambda argv: guarded(wrapped, argv), flags_parser=parse_flags)
