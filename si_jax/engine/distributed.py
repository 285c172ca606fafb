"""Multi-process training: joining the processes, and agreeing on one decision.

Settings, the start-up watchdog and why: docs/design_notes.md."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import socket
import sys
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

TIMEOUT_ENV = "SI_JAX_DISTRIBUTED_TIMEOUT"
DEFAULT_TIMEOUT = 60  # seconds for every process to join
_JAX_GRACE = 10  # JAX's deadline, which aborts the process, comes this much later
_PROBE_TIMEOUT = 2.0  # seconds for the coordinator's port to answer a connection

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


_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")


def _address_problem(address: str) -> str | None:
  """What keeps ``address`` from being HOST:PORT or [IPv6]:PORT; None if nothing."""
  if "://" in address:
    return f"no scheme such as {address.split('://')[0]}://"
  host, sep, port = address.rpartition(":")
  if not sep:
    return "no :PORT"
  if not host:
    return "no HOST before :PORT"
  if not (port.isdigit() and 0 < int(port) < 65536):
    return f"the port {port!r} is not a number from 1 to 65535"
  if host.startswith("["):
    try:
      ipaddress.IPv6Address(host[1:-1] if host.endswith("]") else "")
    except ValueError:
      return f"{host!r} is not a bracketed IPv6 address"
    return None
  if ":" in host:
    return "an IPv6 address needs brackets"
  if not _HOST_NAME.match(host):
    return f"{host!r} is not a host name or an IPv4 address"
  return None


def _check_address(address: str, source: str) -> str:
  """``address`` if HOST:PORT or [IPv6]:PORT; else ValueError naming ``source``."""
  problem = _address_problem(address)
  if problem:
    raise ValueError(f"{source}={address!r} is not HOST:PORT or [IPv6]:PORT ({problem}; "
                     "e.g. 10.0.0.1:1234 or [fd00::1]:1234, the address of process 0, "
                     "the same on every process)")
  return address


def resolve(coordinator_address: str | None = None, num_processes: int | str | None = None,
            process_id: int | str | None = None, environ=None) -> dict:
  """{setting: value} from the arguments, else ``environ`` (None: neither); ValueError if bad."""
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


def resolve_timeout(timeout: int | str | None = None, environ=None) -> int:
  """``timeout``, else ``$SI_JAX_DISTRIBUTED_TIMEOUT``, else 60 s; ValueError unless an int >= 1."""
  environ = os.environ if environ is None else environ
  value, source = timeout, "--distributed_timeout"
  if value is None and environ.get(TIMEOUT_ENV, "") != "":
    value, source = environ[TIMEOUT_ENV], TIMEOUT_ENV
  if value is None:
    return DEFAULT_TIMEOUT
  seconds = _integer(value, "the start-up timeout (seconds)", source)
  if seconds < 1:
    raise ValueError(f"{source}={seconds}: the start-up timeout must be >= 1 second")
  return seconds


def _host_port(address: str) -> tuple[str, int]:
  host, _, port = address.rpartition(":")
  return host.strip("[]"), int(port)


def _listening(address: str) -> bool:
  """Whether something accepts TCP connections at ``address`` (within 2 s)."""
  try:
    with socket.create_connection(_host_port(address), timeout=_PROBE_TIMEOUT):
      return True
  except OSError:
    return False


def _check_port_free(address: str) -> None:
  """Raises OSError if another program holds the coordinator's port on this host."""
  port = _host_port(address)[1]
  for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
    try:
      probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError:  # no IPv6 on this host
      continue
    with probe:
      probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
      try:
        probe.bind((host, port))
      except OSError as e:
        if e.errno == errno.EADDRINUSE:
          raise OSError(f"--distributed: port {port} of the coordinator address {address} "
                        "is in use on this host (process 0 serves the coordinator there): "
                        "choose a free port") from None
        continue
    return


def _ranges(ids: list[int]) -> str:
  """1, 3-5, 7 for [1, 3, 4, 5, 7]."""
  parts, start = [], 0
  for i in range(1, len(ids) + 1):
    if i == len(ids) or ids[i] != ids[i - 1] + 1:
      parts.append(f"{ids[start]}" if i - 1 == start else f"{ids[start]}-{ids[i - 1]}")
      start = i
  return ", ".join(parts)


def not_joined_message(address: str, count: int, index: int, timeout: int,
                       listening: bool) -> str:
  """The error line when process ``index`` of ``count`` waited ``timeout`` s in vain.

  ``listening``: whether the coordinator's port answers."""
  advice = ("start every process with the same command and its --process_id, or allow "
            "more time with --distributed_timeout")
  if index != 0 and not listening:
    return (f"--distributed: no coordinator listens at {address} after {timeout} s: process "
            f"0 of {count} did not start there, or gave up (this is process {index}): {advice}")
  missing = [i for i in range(1, count) if i != index]
  if not missing:  # process 0 is up and there are no others: a foreign program?
    return (f"--distributed: process {index} of {count} could not join the coordinator at "
            f"{address} within {timeout} s: something listens there, but not process 0 of "
            f"this run's {count} (another program, or a run with other settings)")
  who = (f"process {missing[0]} of {count}" if len(missing) == 1
         else f"some of processes {_ranges(missing)} of {count}")
  return (f"--distributed: {who} did not join the coordinator at {address} within "
          f"{timeout} s (this is process {index}): {advice}")


def _timeout_message(settings: dict, timeout: int) -> str:
  """``not_joined_message`` for ``settings`` completed by JAX's cluster detection."""
  from jax._src import distributed as jax_distributed  # pylint: disable=import-outside-toplevel
  state = jax_distributed.global_state
  if settings["coordinator_address"] is None and state.coordinator_address is None:
    return f"--distributed: the cluster's settings were not found within {timeout} s"
  used = {name: value if value is not None else getattr(state, name)
          for name, value in settings.items()}
  address = used["coordinator_address"]
  return not_joined_message(address, used["num_processes"], used["process_id"], timeout,
                            _listening(address))


def _join(settings: dict, timeout: int) -> None:
  """``jax.distributed.initialize``; after ``timeout`` s, one error line and exit 1."""
  finished, lock = [False], threading.Lock()

  def expire():
    with lock:  # the main thread cannot return and go on meanwhile
      if finished[0]:
        return
      try:
        message = _timeout_message(settings, timeout)
      except Exception:  # pylint: disable=broad-except  # the line must come out
        message = f"--distributed: not every process joined within {timeout} s"
      sys.stdout.flush()
      log.error("%s", message)
      os._exit(1)  # pylint: disable=protected-access

  watchdog = threading.Timer(timeout, expire)
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(**{k: v for k, v in settings.items() if v is not None},
                               initialization_timeout=timeout + _JAX_GRACE)
  finally:
    with lock:
      finished[0] = True
    watchdog.cancel()


def _enable_cpu_collectives() -> None:
  """Gloo collectives for the CPU backend, unless the user chose another implementation."""
  if jax.config.jax_cpu_collectives_implementation is None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout: int | None = None) -> None:
  """Joins this process to the others and makes one collective with them.

  Call it on every process before any computation. Not all joined within ``timeout`` s: one
  ``error:`` line naming the missing ones, exit status 1.

  Raises:
    ValueError: a setting that cannot work, or none given and no cluster detected.
    OSError: on process 0, another program holds the coordinator's port."""
  settings = resolve(coordinator_address, num_processes, process_id)
  seconds = resolve_timeout(timeout)
  if (settings["process_id"] == 0 and settings["coordinator_address"]
      and not os.environ.get("JAX_COORDINATOR_BIND_ADDRESS")):
    _check_port_free(settings["coordinator_address"])
  _enable_cpu_collectives()
  try:
    _join(settings, seconds)
  except ValueError as e:  # a setting neither given nor found by cluster detection
    missing = [f"{flag} (or {variable})" for name, flag, variable in SETTINGS
               if settings[name] is None]
    if not missing:
      raise
    raise ValueError(f"--distributed: {', '.join(missing)} not given, and no cluster "
                     f"(Cloud TPU, SLURM, ...) was detected to supply it ({e})") from None
  agree(False)


def agree(flag: bool) -> bool:
  """True on every process if ``flag`` is on any; all must call it at the same point."""
  if jax.process_count() == 1:
    return bool(flag)
  flags = multihost_utils.process_allgather(np.int32(bool(flag)))
  return bool(np.any(flags))


def process_0_value(seconds: float) -> float:
  """Process 0's ``seconds`` to the microsecond; all must call it at the same point."""
  if jax.process_count() == 1:
    return seconds
  whole = int(seconds)
  parts = np.array([whole, round((seconds - whole) * 1e6)], np.int32)
  whole, micro = np.asarray(multihost_utils.broadcast_one_to_all(parts)).tolist()
  return whole + micro / 1e6
