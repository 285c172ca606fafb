"""Two processes on 127.0.0.1 train as one run (``--distributed``, one CPU device each,
gloo collectives): the same records as one process with two devices; a SIGTERM to one
of them stops both at the same epoch with a checkpoint, and the same command resumes
them to the end of the uninterrupted run.

Also the settings of ``si_jax.engine.distributed.initialize``: arguments, environment, and
the one-line errors for values that cannot work; and a process whose peers do not join
within ``--distributed_timeout`` ends with one error line naming them, status 1.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from si_jax.engine import checkpoint, distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = ("--config=configs/quickstart.py", "--config.data.train_size=256", "--noplot")
SHORT, LONG = 4, 10  # epochs of the plain run and of the interrupted one
TIMEOUT = 240  # seconds for any one launch (mostly compilation on a loaded machine)


def child_env() -> dict:
  """The environment of the children: one CPU device each (no forced device count)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if "xla_force_host_platform_device_count" not in f]
  env["XLA_FLAGS"] = " ".join(flags)
  return env


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def single_command(workdir, epochs, *extra) -> list[str]:
  return [sys.executable, "-m", "si_jax.main", *QUICKSTART, f"--config.train.epochs={epochs}",
          *extra, "--cpu_devices=2", f"--workdir={workdir}"]


def cluster_commands(workdir, epochs, *extra) -> list[list[str]]:
  """The README's launch: the same command for both processes, --process_id aside."""
  address = f"127.0.0.1:{free_port()}"
  return [[sys.executable, "-m", "si_jax.main", *QUICKSTART, f"--config.train.epochs={epochs}",
           *extra, "--distributed", f"--coordinator_address={address}", "--num_processes=2",
           f"--process_id={i}", f"--workdir={workdir}"] for i in range(2)]


class Cluster:
  """Both processes of one launch; their stderr goes to files (no pipe to fill)."""

  def __init__(self, commands, logdir):
    os.makedirs(logdir, exist_ok=True)
    self.paths = [os.path.join(logdir, f"stderr_{i}") for i in range(len(commands))]
    self.procs = []
    for command, path in zip(commands, self.paths):
      with open(path, "w") as err:
        self.procs.append(subprocess.Popen(command, cwd=ROOT, env=child_env(), stderr=err,
                                           stdout=subprocess.DEVNULL))

  def stderr(self) -> list[str]:
    out = []
    for path in self.paths:
      with open(path) as f:
        out.append(f.read())
    return out

  def wait(self, deadline: float) -> list[str]:
    """Both exit codes must be 0 by ``deadline``; their stderr."""
    try:
      for p in self.procs:
        p.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail("a process did not finish in time:\n" + "\n".join(
          e[-1500:] for e in self.stderr()))
    errs = self.stderr()
    for i, p in enumerate(self.procs):
      assert p.returncode == 0, f"process {i} exited {p.returncode}:\n{errs[i][-3000:]}"
    return errs

  def kill(self):
    for p in self.procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def run_cluster(commands, logdir) -> list[str]:
  cluster = Cluster(commands, logdir)
  try:
    return cluster.wait(time.time() + TIMEOUT)
  finally:
    cluster.kill()


def read_records(path) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f]


def assert_same_records(got, want):
  """Same epochs and keys; every number within rel 1e-5 (wall_time aside)."""
  assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
  for a, b in zip(got, want):
    assert set(a) == set(b), a["epoch"]
    for key, value in b.items():
      if key != "wall_time" and isinstance(value, (int, float)):
        assert a[key] == pytest.approx(value, rel=1e-5, abs=1e-12), (a["epoch"], key)


def assert_process_1_copies(work):
  """Process 1 computed the same run and logged it with process 0's wall clock: its
  log is the same bytes (so the log lengths a checkpoint records hold for it too)."""
  copy = (work / "process_1" / "metrics.jsonl").read_bytes()
  assert copy == (work / "metrics.jsonl").read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """One process, two CPU devices, LONG epochs uninterrupted: its metrics records."""
  workdir = tmp_path_factory.mktemp("one_process")
  out = subprocess.run(single_command(workdir, LONG), cwd=ROOT, env=child_env(),
                       capture_output=True, text=True, timeout=TIMEOUT)
  assert out.returncode == 0, out.stderr[-3000:]
  return read_records(os.path.join(workdir, "metrics.jsonl"))


def test_two_processes_equal_one_process_with_two_devices(reference, tmp_path):
  work = tmp_path / "run"
  run_cluster(cluster_commands(work, SHORT), tmp_path)
  host0 = read_records(work / "metrics.jsonl")
  # a 4-epoch run is the first 4 epochs of a longer one (constant lr, data order by epoch)
  assert_same_records(host0, reference[:SHORT])
  assert_process_1_copies(work)


def checkpoint_epochs(workdir) -> list[int]:
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def test_sigterm_to_one_process_stops_both_and_resume_matches(reference, tmp_path):
  work = tmp_path / "run"
  commands = cluster_commands(work, LONG, "--config.checkpoint.every_epochs=1")
  cluster = Cluster(commands, tmp_path / "first")
  try:
    deadline = time.time() + TIMEOUT
    while not checkpoint_epochs(work) and time.time() < deadline:
      assert all(p.poll() is None for p in cluster.procs), cluster.stderr()
      time.sleep(0.05)
    assert checkpoint_epochs(work), "no checkpoint in time"
    cluster.procs[1].send_signal(signal.SIGTERM)  # the process that does not write the logs
    errs = cluster.wait(deadline)
  finally:
    cluster.kill()
  assert "signal SIGTERM" in errs[1] and "signal SIGTERM" not in errs[0]
  stopped = []
  for err in errs:
    line = next((x for x in err.splitlines() if x.startswith("preempted after epoch")), None)
    assert line is not None, err[-2000:]
    assert "checkpoint saved to" in line
    stopped.append(int(line.split()[3]))
  assert stopped[0] == stopped[1] and 1 < stopped[0] < LONG
  assert checkpoint_epochs(work)[-1] == stopped[0]
  # the list of files is written once (process 0), whole, and holds the checkpoint
  step = work / "checkpoints" / str(stopped[0])
  assert sorted(p.name for p in step.iterdir() if p.name.startswith("si_jax")) == [
      checkpoint.FILES]
  listed = json.loads((step / checkpoint.FILES).read_text())
  assert any(k.startswith("state/") for k in listed) and any(k.startswith("meta/") for k in listed)
  checkpoint._check_files(str(step))
  assert_same_records(read_records(work / "metrics.jsonl"), reference[:stopped[0]])
  assert_process_1_copies(work)

  # the same commands (another port) resume both from that checkpoint to the end
  errs = run_cluster(cluster_commands(work, LONG, "--config.checkpoint.every_epochs=1"),
                     tmp_path / "resumed")
  for err in errs:
    assert f"resuming {work} from the checkpoint of epoch {stopped[0]}" in err, err[-2000:]
  assert_same_records(read_records(work / "metrics.jsonl"), reference)
  assert_process_1_copies(work)
  assert checkpoint_epochs(work)[-1] == LONG


# --- the settings of distributed.initialize (no processes started) ---


def test_settings_from_arguments_win_over_the_environment():
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:99", "JAX_NUM_PROCESSES": "4",
         "JAX_PROCESS_ID": "3"}
  assert distributed.resolve(environ=env) == {
      "coordinator_address": "10.0.0.1:99", "num_processes": 4, "process_id": 3}
  assert distributed.resolve("h:1", 2, 0, environ=env) == {
      "coordinator_address": "h:1", "num_processes": 2, "process_id": 0}
  assert distributed.resolve(environ={}) == {
      "coordinator_address": None, "num_processes": None, "process_id": None}


@pytest.mark.parametrize("args, env, message", [
    ((None, None, None), {"JAX_NUM_PROCESSES": "two"},
     r"^JAX_NUM_PROCESSES='two' is not an integer"),
    ((None, None, "1.5"), {}, r"^--process_id='1.5' is not an integer"),
    ((None, 2, None), {"JAX_PROCESS_ID": "2"},
     r"^JAX_PROCESS_ID=2 with --num_processes=2: process ids run from 0 to 1$"),
    ((None, 0, None), {}, r"^--num_processes=0: the number of processes must be >= 1$"),
    ((None, None, -1), {}, r"^--process_id=-1: a process id must be >= 0$"),
    (("localhost", None, None), {}, r"^--coordinator_address='localhost' is not HOST:PORT"),
    (("http://127.0.0.1:1234", None, None), {},
     r"^--coordinator_address='http://127.0.0.1:1234' is not HOST:PORT or \[IPv6\]:PORT "
     r"\(no scheme such as http://"),
    ((None, None, None), {"JAX_COORDINATOR_ADDRESS": "::1:1234"},
     r"^JAX_COORDINATOR_ADDRESS='::1:1234' is not HOST:PORT or \[IPv6\]:PORT \(an IPv6 "
     r"address needs brackets"),
    ((":1234", None, None), {}, r"^--coordinator_address=':1234' is not .*\(no HOST before"),
    (("host:http", None, None), {}, r"\(the port 'http' is not a number from 1 to 65535"),
    (("host:0", None, None), {}, r"\(the port '0' is not a number from 1 to 65535"),
    (("[::1:1234", None, None), {}, r"\('\[::1' is not a bracketed IPv6 address"),
    (("my host:1234", None, None), {}, r"\('my host' is not a host name or an IPv4"),
])
def test_unusable_settings_are_named_in_one_line(args, env, message):
  with pytest.raises(ValueError, match=message) as info:
    distributed.resolve(*args, environ=env)
  assert "\n" not in str(info.value)


@pytest.mark.parametrize("address", ["10.0.0.1:1234", "node-7.cluster.local:80",
                                     "[::1]:1234", "[fd00::1]:65535", "localhost:1"])
def test_usable_addresses_are_kept(address):
  assert distributed.resolve(address, environ={})["coordinator_address"] == address


def test_timeout_from_argument_else_environment_else_60():
  env = {distributed.TIMEOUT_ENV: "7"}
  assert distributed.resolve_timeout(3, environ=env) == 3
  assert distributed.resolve_timeout(environ=env) == 7
  assert distributed.resolve_timeout(environ={}) == 60
  with pytest.raises(ValueError, match=r"^--distributed_timeout=0: .* must be >= 1 second$"):
    distributed.resolve_timeout(0, environ={})
  with pytest.raises(ValueError, match=r"^SI_JAX_DISTRIBUTED_TIMEOUT='1m' is not an integer"):
    distributed.resolve_timeout(environ={distributed.TIMEOUT_ENV: "1m"})


def test_not_joined_message_names_whom_it_can():
  def message(count, index, listening):
    return distributed.not_joined_message("h:9", count, index, 60, listening)
  assert message(2, 0, True).startswith(
      "--distributed: process 1 of 2 did not join the coordinator at h:9 within 60 s "
      "(this is process 0): ")
  assert "some of processes 1-3, 5 of 6 did not join" in message(6, 4, True)
  assert message(3, 2, False).startswith(
      "--distributed: no coordinator listens at h:9 after 60 s: process 0 of 3 did not "
      "start there, or gave up (this is process 2)")
  assert "something listens there, but not process 0" in message(2, 1, True)


def test_port_held_by_another_program_is_named():
  with socket.socket() as held:
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    with pytest.raises(OSError, match=f"^--distributed: port {port} of the coordinator "
                       f"address 127.0.0.1:{port} is in use on this host"):
      distributed.initialize(f"127.0.0.1:{port}", 2, 0)


def test_missing_settings_are_named(tmp_path):
  """No cluster here to fill them in: the CLI says which flags (or variables) to give."""
  env = {k: v for k, v in child_env().items()
         if k not in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID")}
  env["JAX_COORDINATOR_ADDRESS"] = f"127.0.0.1:{free_port()}"
  out = subprocess.run([sys.executable, "-m", "si_jax.main", *QUICKSTART, "--distributed",
                        f"--workdir={tmp_path}"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1].startswith(
      "error: --distributed: --num_processes (or JAX_NUM_PROCESSES), --process_id (or "
      "JAX_PROCESS_ID) not given")


def test_one_process_needs_no_collective():
  assert distributed.agree(True) is True and distributed.agree(False) is False
  assert distributed.process_0_value(12.345678) == 12.345678


JOIN_TIMEOUT = 5  # seconds


def test_a_process_whose_peers_do_not_come_ends_with_one_error_line(tmp_path):
  """Process 0 of 2 alone, and process 1 of 2 alone (no coordinator), both at once:
  each exits 1 soon after --distributed_timeout with one error line (JAX alone waits
  300 s, then aborts with a C++ stack)."""
  commands = [[sys.executable, "-m", "si_jax.main", *QUICKSTART, "--distributed",
               f"--coordinator_address=127.0.0.1:{free_port()}", "--num_processes=2",
               f"--process_id={i}", f"--distributed_timeout={JOIN_TIMEOUT}",
               f"--workdir={tmp_path / str(i)}"] for i in range(2)]
  cluster = Cluster(commands, tmp_path / "logs")
  start = time.time()
  try:
    for p in cluster.procs:
      p.wait(timeout=JOIN_TIMEOUT + 40)  # + starting Python and JAX on a loaded machine
  finally:
    cluster.kill()
  wanted = ["process 1 of 2 did not join the coordinator", "no coordinator listens at"]
  for p, err, text in zip(cluster.procs, cluster.stderr(), wanted):
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert p.returncode == 1 and len(errors) == 1, err[-2000:]
    assert text in errors[0] and f"{JOIN_TIMEOUT} s" in errors[0], errors[0]
    assert "Traceback" not in err and "Check failure" not in err, err[-2000:]
  print(f"both processes ended {time.time() - start:.1f} s after their start")
