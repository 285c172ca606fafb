"""Multi-process training: joining the processes, and agreeing on one decision.

Every process runs the same command (``--distributed``); ``initialize`` joins them
into one JAX runtime, so ``jax.devices()`` lists every process's devices and the
``data`` mesh (``si_jax.sharding``) spans them. Where the three settings come from:

* the arguments (``--coordinator_address``, ``--num_processes``, ``--process_id``),
* else the environment: ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID``,
* else JAX's own cluster detection (Cloud TPU, SLURM, Open MPI, Kubernetes), which
  also fills in whatever the first two left unset.

On CPU the processes' devices exchange data through gloo (TCP) collectives, the
implementation the CPU client takes when it is created; ``initialize`` sets it
before any backend exists.

``agree`` turns a per-process flag (a signal received by one process) into one
decision all processes take at the same point of the loop, and ``process_0_value``
gives every process process 0's reading of a host-side number (the wall clock), so
that every process writes the same log bytes; with one process both return their
argument and cost nothing.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils

# (argument, command-line flag, environment variable) of each setting.
SETTINGS = (("coordinator_address", "--coordinator_address", "JAX_COORDINATOR_ADDRESS"),
            ("num_processes", "--num_processes", "JAX_NUM_PROCESSES"),
            ("process_id", "--process_id", "JAX_PROCESS_ID"))


def _integer(value, name: str, source: str) -> int:
  """``value`` (an int, or the text of one) as an int; ValueError naming its source."""
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    return int(value)
  if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
    return int(value)
  raise ValueError(f"{source}={value!r} is not an integer: {name} must be a whole number")


def _check_address(address: str, source: str) -> str:
  host, sep, port = address.rpartition(":")
  if not (host and sep and port.isdigit() and 0 < int(port) < 65536):
    raise ValueError(f"{source}={address!r} is not HOST:PORT (e.g. 10.0.0.1:1234, the "
                     "address of process 0, the same on every process)")
  return address


def resolve(coordinator_address: str | None = None, num_processes: int | str | None = None,
            process_id: int | str | None = None, environ=None) -> dict:
  """The settings from the arguments, else from ``environ`` (default: os.environ);
  None where neither gives one. ValueError (one line, naming the flag or variable)
  for a value that cannot work."""
  environ = os.environ if environ is None else environ
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id}
  settings, sources = {}, {}
  for name, flag, variable in SETTINGS:
    value, source = given[name], flag
    if value is None and environ.get(variable, "") != "":
      value, source = environ[variable], variable
    if value is not None:
      value = (_check_address(str(value), source) if name == "coordinator_address"
               else _integer(value, name, source))
    settings[name], sources[name] = value, source
  count, index = settings["num_processes"], settings["process_id"]
  if count is not None and count < 1:
    raise ValueError(f"{sources['num_processes']}={count}: the number of processes must be >= 1")
  if index is not None and index < 0:
    raise ValueError(f"{sources['process_id']}={index}: a process id must be >= 0")
  if count is not None and index is not None and index >= count:
    raise ValueError(f"{sources['process_id']}={index} with {sources['num_processes']}={count}: "
                     f"process ids run from 0 to {count - 1}")
  return settings


def _enable_cpu_collectives() -> None:
  """Cross-process collectives for the CPU backend (gloo over TCP), unless the user chose
  an implementation (e.g. mpi). Read only when the CPU client is created, i.e. before
  the first computation: the reason ``initialize`` must come first."""
  if jax.config.jax_cpu_collectives_implementation is None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins this process to the others (``jax.distributed.initialize``), with the
  settings from the arguments, the environment, or the cluster (module docstring).

  Call it on every process after the JAX config (``jax_num_cpu_devices``, the
  compilation cache) and before any computation: it starts the backend. It returns once
  all processes have joined and made one collective together: gloo connects the
  processes at their first collective and waits only 30 s there for a late one; made
  now, while they are in step, it cannot fail later because one process compiled for
  minutes what the other found in its compilation cache (only process 0 writes it).
  """
  settings = resolve(coordinator_address, num_processes, process_id)
  _enable_cpu_collectives()
  try:
    jax.distributed.initialize(**{k: v for k, v in settings.items() if v is not None})
  except ValueError as e:  # a setting neither given nor found by cluster detection
    missing = [f"{flag} (or {variable})" for name, flag, variable in SETTINGS
               if settings[name] is None]
    if not missing:
      raise
    raise ValueError(f"--distributed: {', '.join(missing)} not given, and no cluster "
                     f"(Cloud TPU, SLURM, ...) was detected to supply it ({e})") from None
  agree(False)


def agree(flag: bool) -> bool:
  """True on every process if ``flag`` is True on any of them (a one-int all-gather;
  every process must call it at the same point). One process: ``flag``, no collective."""
  if jax.process_count() == 1:
    return bool(flag)
  flags = multihost_utils.process_allgather(np.int32(bool(flag)))
  return bool(np.any(flags))


def process_0_value(seconds: float) -> float:
  """Process 0's ``seconds`` (e.g. its wall time), to the microsecond, on every process
  (a broadcast of two int32s; every process must call it at the same point). One
  process: ``seconds``, no collective."""
  if jax.process_count() == 1:
    return seconds
  whole = int(seconds)
  parts = np.array([whole, round((seconds - whole) * 1e6)], np.int32)
  whole, micro = np.asarray(multihost_utils.broadcast_one_to_all(parts)).tolist()
  return whole + micro / 1e6
