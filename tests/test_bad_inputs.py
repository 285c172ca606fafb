"""Bad inputs and faults at the command line: every one ends in a clear error line.

Each case runs a real program (``python -m si_jax.main``, ``python -m si_jax.plot``,
``python experiments/run_family.py``, other ``experiments/*.py``) in a process of its
own and checks what a user sees: the exit status, exactly one ``error: ...`` line on
stderr naming the field or file (a regex), at most one line after it (a hint), no
traceback, and that no file that existed in the case's directory changed (the tree
hashed before and after; new empty directories are fine).

Speed: on 2 loaded cores a fresh interpreter spends ~5 s importing JAX, flax, orbax and
matplotlib (and ~2 s tearing them down at exit), which would dominate ~100 cases. So
each case's process is forked from a server (``python -m tests.test_bad_inputs
--serve``) that imported those libraries once (and started no thread, no JAX backend);
the child runs the program as ``python -m`` / ``python FILE`` would, as ``__main__``
with its own argv, environment, cwd and stdio, and exits as the interpreter would
(exit status, default traceback printer, thread joins, atexit functions, flushed
stdio) without tearing the modules down. ``SI_JAX_TEST_PLAIN=1`` runs every case as a
plain subprocess instead (slower; the same outcomes), and
``test_forked_and_plain_agree`` checks two cases both ways.

The cases that need a trained run share one (module scope: quickstart, 128 images,
3 epochs, a checkpoint per epoch), copied per case.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import io
import json
import os
import pickle
import re
import resource
import runpy
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = {  # name -> ('module' | 'path', target)
    "main": ("module", "si_jax.main"),
    "plot": ("module", "si_jax.plot"),
    "family": ("path", "experiments/run_family.py"),
    "family_main": ("module", "si_jax.programs.family_main"),
    "one_period": ("path", "experiments/one_period.py"),
    "fig13": ("path", "experiments/fig13_delta_bounds.py"),
}
PRELOAD = ("jax", "flax.linen", "optax", "orbax.checkpoint", "sklearn.datasets",
           "matplotlib.pyplot", "si_jax.engine.train", "si_jax.engine.experiment",
           "si_jax.analysis.phases",
           "si_jax.plots.plotting", "si_jax.engine.checkpoint", "si_jax.validate")


# ---------------------------------------------------------------------------------------
# The fork server (runs as `python -m tests.test_bad_inputs --serve`, without pytest).

def _serve() -> dict[str, Any]:
  """Imports the heavy libraries, then forks one child per JSON request on stdin and
  answers {"pid"} at once and {"status"} when the child ends. Returns the request in
  the child (which then runs the program); never returns in the server."""
  import matplotlib
  matplotlib.use("Agg")
  import importlib
  for name in PRELOAD:
    importlib.import_module(name)
  print(json.dumps({"ready": True}), flush=True)
  for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
      return request
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)
  sys.exit(0)


def _limit_file_size(limit: int | None) -> None:
  """A disk that fills up after ``limit`` bytes per file: writes beyond fail (EFBIG)."""
  if limit is not None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _become_program(request: dict[str, Any]) -> None:
  """In the forked child: the request's stdio, cwd, environment and argv, then the
  program as ``__main__`` (as ``python -m MODULE`` / ``python FILE`` would run it)."""
  for fd, (path, mode) in enumerate(((os.devnull, os.O_RDONLY),
                                     (request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                     (request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC))):
    os.dup2(os.open(path, mode, 0o644), fd)  # sys.stdout etc. stay (handlers hold them)
  os.chdir(request["cwd"])
  os.environ.clear()
  os.environ.update(request["env"])
  _limit_file_size(request.get("fsize"))
  kind, target = PROGRAMS[request["program"]]
  sys.argv = [target, *request["args"]]
  if kind == "module":  # the server ran as `python -m`: the root is sys.path[0] already
    runpy.run_module(target, run_name="__main__", alter_sys=True)
  else:
    runpy.run_path(target, run_name="__main__")


def _exit_as_the_interpreter(program: Callable[[], None]) -> None:
  """Runs ``program`` and ends the process as the interpreter would after it: the
  status of a SystemExit (its message on stderr), or the traceback of an uncaught error
  and status 1 (a KeyboardInterrupt: death by SIGINT); then the non-daemon threads
  joined, the atexit functions run, stdio flushed. Tearing down the ~2,400 modules the
  server imported (~0.7 s of CPU, what a real exit also spends) is skipped."""
  status, interrupted = 0, False
  try:
    program()
  except SystemExit as e:
    if e.code is None or isinstance(e.code, int):
      status = e.code or 0
    else:
      print(e.code, file=sys.stderr)
      status = 1
  except BaseException:  # noqa: BLE001 -- what the interpreter does with it
    sys.excepthook(*sys.exc_info())
    status, interrupted = 1, isinstance(sys.exc_info()[1], KeyboardInterrupt)
  threading._shutdown()  # what the interpreter calls first on exit
  atexit._run_exitfuncs()
  for stream in (sys.stdout, sys.stderr):
    stream.flush()
  if interrupted:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
  os._exit(status)


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
  request = _serve()
  _exit_as_the_interpreter(lambda: _become_program(request))


# ---------------------------------------------------------------------------------------
# Running programs.

import pytest  # noqa: E402  (not needed by the server)


@dataclasses.dataclass
class Result:
  status: int
  stdout: str
  stderr: str

  @property
  def lines(self) -> list[str]:
    return [line for line in self.stderr.splitlines() if line.strip()]


class Launcher:
  """Starts programs (forked from the server, or plain subprocesses) one at a time."""

  def __init__(self, plain: bool):
    self.plain, self.server, self.process = plain, None, None
    if not plain:
      self.server = subprocess.Popen(
          [sys.executable, "-m", "tests.test_bad_inputs", "--serve"], cwd=REPO,
          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
      assert self._reply(timeout=300) == {"ready": True}

  def _reply(self, timeout: float) -> dict[str, Any]:
    ready, _, _ = select.select([self.server.stdout], [], [], timeout)
    if not ready:
      raise TimeoutError(f"no answer from the fork server in {timeout:.0f}s")
    line = self.server.stdout.readline()
    if not line:
      raise RuntimeError(f"the fork server ended (status {self.server.wait()}; its "
                         "traceback is in the captured stderr)")
    return json.loads(line)

  def start(self, program: str, args: list[str], out_dir: Path, env: dict[str, str],
            fsize: int | None = None) -> int:
    """Starts ``program``; returns its pid. stdout/stderr go to files in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    self.out = (out_dir / "stdout.txt", out_dir / "stderr.txt")
    if self.plain:
      kind, target = PROGRAMS[program]
      command = [sys.executable, *(["-m", target] if kind == "module" else [target]), *args]
      with open(self.out[0], "w") as out, open(self.out[1], "w") as err:
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err,
                                        stdin=subprocess.DEVNULL,
                                        preexec_fn=lambda: _limit_file_size(fsize))
      return self.process.pid
    request = {"program": program, "args": args, "cwd": str(REPO), "env": env,
               "stdout": str(self.out[0]), "stderr": str(self.out[1]), "fsize": fsize}
    self.server.stdin.write(json.dumps(request) + "\n")
    self.server.stdin.flush()
    self.pid = self._reply(timeout=60)["pid"]
    return self.pid

  def wait(self, timeout: float = 240) -> Result:
    try:
      if self.plain:
        status = self.process.wait(timeout)
      else:
        status = self._reply(timeout)["status"]
    except (TimeoutError, subprocess.TimeoutExpired):
      os.kill(self.process.pid if self.plain else self.pid, signal.SIGKILL)
      if not self.plain:
        self._reply(timeout=30)
      raise
    return Result(status, self.out[0].read_text(), self.out[1].read_text())

  def run(self, program: str, args: list[str], out_dir: Path, env: dict[str, str],
          fsize: int | None = None, timeout: float = 240) -> Result:
    self.start(program, args, out_dir, env, fsize)
    return self.wait(timeout)

  def close(self) -> None:
    if self.server:
      self.server.stdin.close()
      self.server.wait(timeout=30)


@pytest.fixture(scope="module")
def launcher():
  launcher = Launcher(plain=os.environ.get("SI_JAX_TEST_PLAIN") == "1")
  yield launcher
  launcher.close()


def program_env(**extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SI_JAX_", "PYTEST_"))}
  env.update(extra)
  return env


# ---------------------------------------------------------------------------------------
# The checks every case shares.

def tree_digest(root: Path) -> dict[str, str]:
  """{relative path: sha256} of every file under ``root`` (directories do not count)."""
  out = {}
  for path in sorted(root.rglob("*")):
    if path.is_file() and not path.is_symlink():
      out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
  return out


MAX_LINES = 8  # on stderr in all, when a run fails (a few warnings, a progress line)
MAX_CHARS = 700  # of the error line, its paths aside


def check_one_error_line(result: Result, pattern: str, status: int = 1, root: Path = REPO) -> str:
  """Exit status, one 'error:' line matching ``pattern`` with at most one line after
  it, short (paths under ``root`` aside), no traceback, and a short stderr; returns the
  error line."""
  errors = [i for i, line in enumerate(result.lines) if line.startswith("error:")]
  assert result.status == status, (result.status, result.stderr[-3000:])
  assert len(errors) == 1, result.stderr[-3000:]
  assert len(result.lines) - errors[0] <= 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  line = result.lines[errors[0]]
  assert re.search(pattern, line), (pattern, line)
  assert len(line.replace(str(root), "")) <= MAX_CHARS, line[:3000]
  assert len(result.lines) <= MAX_LINES, result.stderr[-3000:]
  return line


# ---------------------------------------------------------------------------------------
# The cases. Placeholders in args: {case} (the case's directory), {work} ({case}/work,
# the --workdir), {data} ({case}/data).

TINY = ("--config.train.epochs=1", "--config.data.train_size=128",
        "--config.data.test_size=64")


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  error: str  # regex the one error line must match ('' for a run that succeeds)
  args: tuple[str, ...] = ()
  config: str | None = "configs/quickstart.py"  # None: no --config
  program: str = "main"
  setup: Callable[[Path], None] | None = None  # prepares the case directory
  status: int = 1
  xfail: str = ""  # the change needed (strict xfail)
  workdir: str = "{work}"
  base: tuple[str, ...] = TINY  # the run's size (main only)

  def argv(self, case_dir: Path) -> list[str]:
    args = [f"--config={self.config}"] if self.config else []
    if self.program == "main":
      args += [*self.base, *self.args, f"--workdir={self.workdir}", "--noplot"]
    elif self.program in ("family", "family_main", "one_period"):
      args += [*self.args, f"--workdir={self.workdir}", "--noprogress"]
    else:
      args += list(self.args)
    return [a.format(case=case_dir, work=case_dir / "work", data=case_dir / "data")
            for a in args]


def _notes(case: Path) -> None:
  """A workdir that already holds a file (which no failed run may touch)."""
  (case / "work").mkdir(parents=True, exist_ok=True)
  (case / "work" / "notes.txt").write_text("the user's notes\n")


def _cifar_batch(data_shape=(4, 3072), labels_key: bytes = b"labels") -> bytes:
  """A CIFAR python batch (the official archive's pickled dict), possibly malformed."""
  return pickle.dumps({b"data": np.zeros(data_shape, np.uint8),
                       labels_key: [0] * data_shape[0]})


def _tarball(case: Path, files: dict[str, bytes], cut: bool = False) -> None:
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
    for name, payload in files.items():
      info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  raw = buffer.getvalue()
  (case / "data").mkdir(parents=True)
  (case / "data" / "cifar-10-python.tar.gz").write_bytes(raw[:len(raw) // 2] if cut else raw)


CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def truncated_tarball(case: Path) -> None:
  _tarball(case, {name: _cifar_batch() for name in CIFAR_FILES}, cut=True)


def tarball_of_text(case: Path) -> None:
  _tarball(case, {name: b"these are not pickled CIFAR batches\n" for name in CIFAR_FILES})


def _folder(case: Path, files: dict[str, bytes]) -> None:
  folder = case / "data" / "cifar-10-batches-py"
  folder.mkdir(parents=True)
  for name, payload in files.items():
    (folder / name).write_bytes(payload)


def folder_missing_a_batch(case: Path) -> None:
  _folder(case, {name: _cifar_batch() for name in CIFAR_FILES if name != "data_batch_3"})


def folder_of_wrong_shapes(case: Path) -> None:
  _folder(case, {name: _cifar_batch(data_shape=(4, 100)) for name in CIFAR_FILES})


def folder_of_cifar100_batches(case: Path) -> None:
  _folder(case, {name: _cifar_batch(labels_key=b"fine_labels") for name in CIFAR_FILES})


def workdir_is_a_file(case: Path) -> None:
  case.mkdir(parents=True)
  (case / "work").write_text("not a directory\n")


def workdir_under_a_file(case: Path) -> None:
  case.mkdir(parents=True)
  (case / "parent").write_text("not a directory\n")


def empty_init_checkpoint(case: Path) -> None:
  _notes(case)
  (case / "warm").mkdir()


CONFIG_CASES = [
    Case("unknown_field", r"--config\.optim\.lrr: the config has no field 'lrr' in optim \(did "
         r"you mean --config\.optim\.lr\?\)",
         ("--config.optim.lrr=0.1",)),
    Case("unknown_section", r"--config\.optimizer\.lr: the config has no field 'optimizer'",
         ("--config.optimizer.lr=0.1",)),
    Case("field_under_a_value", r"--config\.optim\.lr\.x.*optim\.lr is a value",
         ("--config.optim.lr.x=1",)),
    Case("float_not_a_number", r"--config\.optim\.lr=abc", ("--config.optim.lr=abc",)),
    Case("int_not_an_int", r"--config\.train\.epochs=1\.5", ("--config.train.epochs=1.5",)),
    Case("bool_not_a_bool", r"--config\.data\.augment=maybe", ("--config.data.augment=maybe",)),
    Case("missing_config_file", r"--config=configs/nope\.py.*no such config file",
         config="configs/nope.py"),
    Case("config_is_a_directory", r"--config=configs.*is a directory", config="configs"),
    Case("config_not_python", r"--config=README\.md.*SyntaxError", config="README.md"),
    Case("quickstart_variant", r"configs/quickstart\.py:anything.*unknown config variant "
         "'anything'", config="configs/quickstart.py:anything"),
    Case("lr_sweep_variant", r"lr_sweep\.py:bogus.*unknown config variant 'bogus'",
         config="configs/lr_sweep.py:bogus"),
    Case("convnet_variant", r"convnet_cifar10\.py:gpu.*unknown config variant 'gpu'",
         config="configs/convnet_cifar10.py:gpu"),
    Case("lr_inf", r"optim\.lr must be a finite number", ("--config.optim.lr=inf",)),
    Case("lr_nan", r"optim\.lr must be a finite number", ("--config.optim.lr=nan",)),
    Case("wd_inf", r"optim\.wd must be a finite number", ("--config.optim.wd=inf",)),
    Case("wd_nan", r"optim\.wd must be a finite number", ("--config.optim.wd=nan",)),
    Case("init_scale_inf", r"model\.init_scale must be a finite number",
         ("--config.model.init_scale=inf",)),
    Case("init_scale_nan", r"model\.init_scale must be a finite number",
         ("--config.model.init_scale=nan",)),
    Case("wd_negative", r"optim\.wd must be non-negative", ("--config.optim.wd=-0.1",)),
    Case("lr_zero", r"optim\.lr must be positive", ("--config.optim.lr=0",)),
    Case("momentum_one", r"optim\.momentum must be in \[0, 1\)", ("--config.optim.momentum=1.0",)),
    Case("unknown_model", r"model\.name must be one of", ("--config.model.name=vgg",)),
    Case("unknown_norm", r"model\.norm must be one of", ("--config.model.norm=group",)),
    Case("unknown_optimizer", r"optim\.name must be one of", ("--config.optim.name=lamb",)),
    Case("unknown_schedule", r"optim\.schedule must be one of",
         ("--config.optim.schedule=warmup",)),
    Case("width_zero", r"model\.width must be a positive integer", ("--config.model.width=0",)),
    Case("batch_size_zero", r"train\.batch_size must be a positive integer",
         ("--config.train.batch_size=0",)),
    Case("keep_zero", r"checkpoint\.keep must be a positive integer",
         ("--config.checkpoint.keep=0",)),
    Case("snapshot_not_an_epoch", r"checkpoint\.snapshot_epochs must hold positive integers",
         ("--config.checkpoint.snapshot_epochs=(1,a)",)),
    Case("micro_batch_without_gd", r"train\.micro_batch_size is for train\.mode='gd'",
         ("--config.train.micro_batch_size=32",)),
    Case("augment_with_gd", r"data\.augment is not supported with train\.mode='gd'",
         ("--config.train.mode=gd", "--config.data.augment=True")),
    Case("unknown_train_mode", r"train\.mode must be one of", ("--config.train.mode=adamw",)),
    Case("source_does_not_serve_name", r"data\.source='embedded' does not serve "
         r"data\.name='cifar10'", ("--config.data.name=cifar10",)),
    Case("seed_too_large", r"seed must be an integer from 0 to 2\*\*32-1, got "
         "1180591620717411303424", ("--config.seed=1180591620717411303424",)),
    Case("seed_negative", r"seed must be an integer from 0 to 2\*\*32-1, got -1",
         ("--config.seed=-1",)),
    Case("init_checkpoint_nowhere", r"model\.init_checkpoint='/nonexistent/run' is not a "
         "directory", ("--config.model.init_checkpoint=/nonexistent/run",)),
    Case("init_checkpoint_without_checkpoints", r"warm/checkpoints does not exist",
         ("--config.model.init_checkpoint={case}/warm",), setup=empty_init_checkpoint),
]

def cifar_case(name, error, setup=None, data_dir="{data}"):
  """A case of convnet_cifar10.py:cpu reading the archive in ``data_dir`` ('' for none)."""
  args = (f"--config.data.data_dir={data_dir}",) if data_dir else ()
  return Case(name, error, args, config="configs/convnet_cifar10.py:cpu", setup=setup)


DATA_CASES = [
    cifar_case("archive_without_data_dir", r"data\.data_dir='' does not exist", data_dir=""),
    cifar_case("data_dir_missing", r"data\.data_dir='/nonexistent/cifar' does not exist",
               data_dir="/nonexistent/cifar"),
    cifar_case("data_dir_without_cifar", r"no cifar10 found in .*/case: expected the folder",
               _notes, data_dir="{case}"),
    cifar_case("tarball_truncated",
               r"cifar-10-python\.tar\.gz: not a readable \.tar\.gz archive", truncated_tarball),
    cifar_case("tarball_of_text", r"data_batch_1: not a readable CIFAR python batch",
               tarball_of_text),
    cifar_case("folder_missing_a_batch", r"missing file .*cifar-10-batches-py/data_batch_3",
               folder_missing_a_batch),
    cifar_case("folder_of_wrong_shapes",
               r"data_batch_1: expected uint8 data of shape \(N, 3072\)", folder_of_wrong_shapes),
    cifar_case("cifar100_batches_as_cifar10",
               r"data_batch_1: expected a dict with keys b'data' and b'labels'",
               folder_of_cifar100_batches),
    Case("train_size_too_large", r"data\.train_size must be an integer in \[1, 1438\]",
         ("--config.data.train_size=5000",)),
    Case("test_size_zero", r"data\.test_size must be a positive integer",
         ("--config.data.test_size=0",)),
]


def synthetic_run(run: Path, epochs: int = 6) -> None:
  """A run directory with a config.json and per-epoch records (what plotting reads)."""
  run.mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({"optim": {"lr": 0.1, "wd": 0.03}}))
  records = [{"epoch": e, "step": 10 * e, "loss": 2.0 / e, "train_loss": 2.0 / e,
              "test_error": 0.5 / e, "weight_norm": 5.0 + e, "effective_lr": 0.01 * e,
              "effective_grad_norm": 1.0 / e} for e in range(1, epochs + 1)]
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def run_with_text_line(case: Path) -> None:
  synthetic_run(case / "run")
  with open(case / "run" / "metrics.jsonl", "a") as f:
    f.write('{"epoch": 7, "loss": 0.\n')


def run_with_empty_log(case: Path) -> None:
  (case / "run").mkdir(parents=True)
  (case / "run" / "metrics.jsonl").write_text("")


def empty_run_dir(case: Path) -> None:
  (case / "run").mkdir(parents=True)


def good_run(case: Path) -> None:
  synthetic_run(case / "run")


BAD_FAMILY = '''\
from si_jax.engine.experiment import add_member, experiment_config, scaled_base


def get_config(arg=None):
  config = experiment_config(scaled_base("cpu")[0], "typos")
  add_member(config, "good", "good", {"optim.lr": 0.1})
  add_member(config, "typo", "typo", {"optim.lrr": 0.1})
  return config
'''


def family_with_a_typo(case: Path) -> None:
  _notes(case)
  (case / "typos.py").write_text(BAD_FAMILY)


WORKDIR_CASES = [
    Case("workdir_is_a_file", r"--workdir=.*/work is a file, not a directory",
         setup=workdir_is_a_file),
    Case("workdir_under_a_file", r"cannot create --workdir=.*parent/work",
         workdir="{case}/parent/work", setup=workdir_under_a_file),
    Case("positional_argument", r"expected 0 argument\(s\) besides the flags, got \['extra'\]",
         ("extra",), setup=_notes),
    Case("unknown_flag", r"Unknown command line flag 'epochs'", ("--epochs=3",), setup=_notes),
    Case("process_id_without_distributed", r"--process_id .*need --distributed",
         ("--process_id=1",), setup=_notes),
]

PLOT_CASES = [
    Case("plot_empty_dir", r"run/metrics\.jsonl not found", ("{case}/run", "--out={case}/f.png"),
         config=None, program="plot", setup=empty_run_dir),
    Case("plot_missing_dir", r"nope/metrics\.jsonl not found",
         ("{case}/nope", "--out={case}/f.png"), config=None, program="plot", setup=_notes),
    Case("plot_empty_log", r"run: metrics\.jsonl holds no record yet",
         ("{case}/run", "--out={case}/f.png"), config=None, program="plot",
         setup=run_with_empty_log),
    Case("plot_text_line", r"run/metrics\.jsonl, line 7: not a JSON record",
         ("{case}/run", "--out={case}/f.png"), config=None, program="plot",
         setup=run_with_text_line),
    Case("plot_labels_count", r"--labels needs 1 values, got 2",
         ("{case}/run", "--out={case}/f.png", "--labels", "a", "b"), config=None,
         program="plot", setup=good_run),
    Case("plot_without_out", r"--out", ("{case}/run",), config=None, program="plot",
         setup=good_run),
    Case("plot_unknown_format", r"xyz", ("{case}/run", "--out={case}/f.xyz"), config=None,
         program="plot", setup=good_run),
    Case("plot_out_under_a_file", r"--out=.*/run/metrics\.jsonl/f\.png: .*/run/metrics\.jsonl "
         "is a file, not a directory",
         ("{case}/run", "--out={case}/run/metrics.jsonl/f.png"), config=None, program="plot",
         setup=good_run),
]

FAMILY_CASES = [
    Case("family_unknown_member_field", r"optim\.lrr", config="{case}/typos.py",
         program="family", setup=family_with_a_typo),
    Case("family_unknown_variant", r"lr_sweep\.py:bogus.*unknown config variant 'bogus'",
         config="configs/lr_sweep.py:bogus", program="family", setup=_notes),
    Case("family_vmap_maybe", r"--vmap=maybe", ("--vmap=maybe",),
         config="configs/lr_sweep.py:cpu", program="family", setup=_notes),
    Case("family_vmap_yes_unsweepable", r"--vmap=yes needs members that differ only in",
         ("--vmap=yes",), config="configs/practical.py:cpu", program="family", setup=_notes),
    Case("family_unknown_member", r"--config\.experiment\.members\.nope\.label.*no field "
         "'nope'", ("--config.experiment.members.nope.label=x",),
         config="configs/lr_sweep.py:cpu", program="family", setup=_notes),
    Case("family_member_invalid", r"member 'lr_3'.*optim\.wd must be non-negative",
         ("--config.optim.wd=-1.0",), config="configs/lr_sweep.py:cpu", program="family",
         setup=_notes),
    Case("family_figures_only_nothing_trained", r"lr_3/metrics\.jsonl not found",
         ("--figures_only",), config="configs/lr_sweep.py:cpu", program="family",
         setup=_notes),
    Case("family_main_unknown_field", r"--config\.train\.epoch\b.*did you mean",
         ("--config.train.epoch=3",), config="configs/wd_sweep.py:cpu",
         program="family_main", setup=_notes),
    Case("one_period_negative_period", r"--period=-1", ("--period=-1",),
         config="configs/one_period.py:cpu", program="one_period", setup=_notes),
    Case("one_period_variant", r"one_period\.py:bogus.*unknown config variant 'bogus'",
         config="configs/one_period.py:bogus", program="one_period", setup=_notes),
    Case("fig13_missing_run", r"/nope/config\.json: No such file or directory",
         ("{case}/nope", "--out={case}/f.png"), config=None, program="fig13", setup=_notes),
    Case("fig13_without_run", r"expected 1 argument", ("--out={case}/f.png",), config=None,
         program="fig13", setup=_notes),
]

# Every config file refuses a variant it does not have (rather than ignoring it).
VARIANT_CASES = [
    Case(f"variant_of_{path.stem}", rf"{path.stem}\.py:bogus: unknown config variant 'bogus'",
         config=f"configs/{path.name}:bogus", setup=_notes)
    for path in sorted((REPO / "configs").glob("*.py"))]

CHEAP_CASES = (CONFIG_CASES + DATA_CASES + WORKDIR_CASES + PLOT_CASES + FAMILY_CASES
               + VARIANT_CASES)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory; "
                    "workdir_is_a_file and workdir_under_a_file cover unusable workdirs")
def test_read_only_workdir(launcher, tmp_path):
  case = Case("read_only_workdir", r"--workdir=.*/work is not writable")
  _notes(tmp_path / "case")
  (tmp_path / "case" / "work").chmod(0o555)
  try:
    check_case(launcher, case, tmp_path / "case")
  finally:
    (tmp_path / "case" / "work").chmod(0o755)


def _params(cases: list[Case]) -> list:
  return [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)]
                       if c.xfail else []) for c in cases]


def check_case(launcher: Launcher, case: Case, case_dir: Path, env=None) -> Result:
  """Runs ``case`` in ``case_dir`` (already set up) and makes the shared checks."""
  before = tree_digest(case_dir)
  result = launcher.run(case.program, case.argv(case_dir), case_dir.parent / f"{case.name}.out",
                        env or program_env())
  if case.error:
    check_one_error_line(result, case.error, case.status, case_dir)
    assert tree_digest(case_dir) == before, "a failed run changed files"
  else:
    assert result.status == case.status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
  return result


@pytest.mark.parametrize("case", _params(CHEAP_CASES))
def test_fails_before_any_compute(launcher, tmp_path, case):
  """Bad flags, configs, data, workdirs, logs to plot, families: one error line, nothing
  written."""
  case_dir = tmp_path / "case"
  if case.setup:
    case.setup(case_dir)
  else:
    _notes(case_dir)
  check_case(launcher, case, case_dir)


# ---------------------------------------------------------------------------------------
# Faults of a trained run: one run (3 epochs, a checkpoint after each), copied per case.

RUN = ("--config.train.epochs=3", "--config.data.train_size=128", "--config.data.test_size=64",
       "--config.checkpoint.every_epochs=1", "--config.checkpoint.keep=3")


@pytest.fixture(scope="module")
def trained_run(launcher, tmp_path_factory):
  root = tmp_path_factory.mktemp("trained")
  result = launcher.run("main", ["--config=configs/quickstart.py", *RUN,
                                 f"--workdir={root / 'run'}", "--noplot"],
                        root / "out", program_env())
  assert result.status == 0, result.stderr[-3000:]
  assert sorted(os.listdir(root / "run" / "checkpoints")) == ["1", "2", "3"]
  return root / "run"


def records(run: Path) -> list[dict]:
  """The epoch records without their wall times (a resumed run redoes the rest exactly)."""
  lines = (run / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(line).items() if k != "wall_time"} for line in lines]


def cut_log(fraction: float) -> Callable[[Path], None]:
  def cut(work: Path) -> None:
    path = work / "metrics.jsonl"
    os.truncate(path, int(path.stat().st_size * fraction))
  return cut


def half_line(work: Path) -> None:
  with open(work / "metrics.jsonl", "a") as f:
    f.write('{"epoch": 4, "step": 4, "loss": 0.')


def remove(*names: str) -> Callable[[Path], None]:
  def remove_them(work: Path) -> None:
    for name in names:
      shutil.rmtree(work / name) if (work / name).is_dir() else (work / name).unlink()
  return remove_them


def corrupt_checkpoints(*epochs: int) -> Callable[[Path], None]:
  """Overwrites the array data of the checkpoints of ``epochs`` with zeros (a disk error
  or a partial copy; their metadata stay readable)."""
  def corrupt(work: Path) -> None:
    for epoch in epochs:
      data = [p for p in (work / "checkpoints" / str(epoch) / "state").rglob("*")
              if p.is_file() and p.stat().st_size > 0 and "ocdbt" in str(p.parent)]
      assert data, f"no array data found in checkpoint {epoch}"
      for path in data:
        path.write_bytes(bytes(path.stat().st_size))
  return corrupt


def replace_with_folder(name: str) -> Callable[[Path], None]:
  def replace(work: Path) -> None:
    remove(name)(work)
    (work / name).mkdir()
    (work / name / "notes.txt").write_text("kept\n")
  return replace


def replace_with_file(name: str) -> Callable[[Path], None]:
  def replace(work: Path) -> None:
    remove(name)(work)
    (work / name).write_text("not a folder\n")
  return replace


def self_symlink(name: str) -> Callable[[Path], None]:
  def link(work: Path) -> None:
    remove(name)(work)
    (work / name).symlink_to(name)
  return link


def family_marker(work: Path) -> None:
  (work / "family.json").write_text('{"experiment": "lr_sweep"}\n')


def bad_config_json(work: Path) -> None:
  (work / "config.json").write_text('{"seed": 0, "optim": {"lr": 0.1')


TRAINED_CASES = [
    Case("resume_other_lr", r"holds a run with a different config \(optim\.lr: 0\.1 -> 0\.2\)",
         ("--config.optim.lr=0.2",), base=RUN),
    Case("resume_other_lr_config_json_deleted", r"holds checkpoints of a run with a different "
         r"config \(optim\.lr: 0\.1 -> 0\.2\)", ("--config.optim.lr=0.2",), base=RUN,
         setup=remove("config.json")),
    Case("resume_other_width", r"model\.width: 8 -> 16", ("--config.model.width=16",), base=RUN),
    Case("resume_other_width_allowed", r"other shapes than this config's model \(.*\[.*8.*\] "
         r"in the checkpoint, \[.*16.*\] now\)",
         ("--config.model.width=16", "--allow_config_change"), base=RUN),
    Case("log_cut_before_every_checkpoint", r"metrics\.jsonl is shorter than every checkpoint",
         base=RUN, setup=cut_log(0.1)),
    Case("log_deleted", r"metrics\.jsonl is shorter than every checkpoint", base=RUN,
         setup=remove("metrics.jsonl")),
    Case("log_with_half_line_finished", r"metrics\.jsonl, line 4: not a JSON record", base=RUN,
         setup=half_line),
    Case("logs_without_checkpoint_or_config", r"holds logs but neither a checkpoint nor "
         r"config\.json", base=RUN, setup=remove("checkpoints", "config.json")),
    Case("all_checkpoints_corrupted", r"no readable checkpoint in .*/checkpoints: .*Delete that "
         "directory", base=RUN, setup=corrupt_checkpoints(1, 2, 3)),
    Case("config_json_corrupted", r"config\.json", base=RUN, setup=bad_config_json),
    Case("init_epoch_not_checkpointed", r"no checkpoint of epoch 7 in .*/work/checkpoints; it "
         r"has \[1, 2, 3\]", ("--config.model.init_checkpoint={work}",
                               "--config.model.init_epoch=7"), workdir="{case}/new"),
    # nothing discarded, cut or rewritten before a failure (checkpoints 2 and 3 kept)
    Case("log_is_a_folder", r"work/metrics\.jsonl is not a file \(the per-epoch log\)",
         ("--config.train.epochs=4",), base=RUN, setup=replace_with_folder("metrics.jsonl")),
    Case("checkpoints_is_a_file", r"work/checkpoints is not a directory \(the checkpoint "
         r"folder\)", ("--config.train.epochs=4",), base=RUN,
         setup=replace_with_file("checkpoints")),
    Case("checkpoints_self_symlink", r"work/checkpoints cannot be used as the checkpoint "
         "folder", base=RUN, setup=self_symlink("checkpoints")),
    Case("config_json_is_a_folder", r"work/config\.json is not a file", base=RUN,
         setup=replace_with_folder("config.json")),
    Case("run_on_a_family_folder", r"work holds a family \(family\.json\), not a run",
         base=RUN, setup=family_marker),
    Case("finished_rerun_without_checkpoints", "", ("--config.checkpoint.every_epochs=0",),
         base=RUN, status=0, setup=remove("checkpoints")),
]


@pytest.mark.parametrize("case", _params(TRAINED_CASES))
def test_faults_of_a_trained_run(launcher, trained_run, tmp_path, case):
  """Refused resumes (another config, cut logs, damaged checkpoints): one error line,
  the run's files untouched; a finished run rerun without checkpoints is a no-op."""
  case_dir = tmp_path / "case"
  shutil.copytree(trained_run, case_dir / "work")
  if case.setup:
    case.setup(case_dir / "work")
  before = tree_digest(case_dir)
  result = check_case(launcher, case, case_dir)
  if not case.error:  # the no-op
    assert "is already complete (3 epochs)" in result.stderr, result.stderr
    assert tree_digest(case_dir) == before


def test_log_cut_in_half_resumes_from_an_intact_checkpoint(launcher, trained_run, tmp_path):
  """metrics.jsonl cut after the checkpoint of epoch 1 recorded it: the run resumes from
  that checkpoint with a warning and redoes epochs 2 and 3 exactly."""
  work = tmp_path / "work"
  shutil.copytree(trained_run, work)
  cut_log(0.5)(work)
  result = launcher.run("main", ["--config=configs/quickstart.py", *RUN, f"--workdir={work}",
                                 "--noplot"], tmp_path / "out", program_env())
  assert result.status == 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert re.search(r"warning: .*logs are shorter than its checkpoint of epoch 3 recorded; "
                   r"resuming from the checkpoint of epoch 1", result.stderr), result.stderr
  assert records(work) == records(trained_run)


def test_damaged_newest_checkpoint_falls_back(launcher, trained_run, tmp_path):
  """The newest checkpoint unreadable: a warning naming it, the run resumes from the one
  before (epoch 2), sets the damaged one aside and redoes epoch 3 exactly."""
  work = tmp_path / "work"
  shutil.copytree(trained_run, work)
  corrupt_checkpoints(3)(work)
  result = launcher.run("main", ["--config=configs/quickstart.py", *RUN, f"--workdir={work}",
                                 "--noplot"], tmp_path / "out", program_env())
  assert result.status == 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert re.search(r"checkpoints/3 is unreadable", result.stderr), result.stderr[-3000:]
  assert re.search(r"resuming from the checkpoint of epoch 2", result.stderr)
  assert records(work) == records(trained_run)
  assert any(name.startswith("3.unreadable") for name in os.listdir(work / "checkpoints"))


ABANDONED_READ = """
import asyncio, gc
from si_jax.programs import cli
cli.quiet_libraries()
loop = asyncio.new_event_loop()
future = loop.create_future()
future.set_exception(ValueError("DATA_LOSS: abandoned read"))
del future
gc.collect()
loop.close()
print(cli._background_failures)
"""


def test_abandoned_reads_of_a_damaged_checkpoint_stay_quiet():
  """A failed orbax restore leaves concurrent reads behind whose futures asyncio reports
  as "exception was never retrieved" with a traceback whenever they are collected (CI
  saw one in all_checkpoints_corrupted): the programs record it as a background failure
  and print nothing of it."""
  result = subprocess.run([sys.executable, "-c", ABANDONED_READ], cwd=REPO, env=program_env(),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "never retrieved" not in result.stderr and "Traceback" not in result.stderr, result.stderr
  assert "DATA_LOSS: abandoned read" in result.stdout


def test_full_disk_is_one_error_line(launcher, tmp_path):
  """Writes fail past 64 KiB per file (a full disk, as the kernel reports it: EFBIG),
  less than the state's 200 KB: the save is refused before orbax's writer threads start
  (they would fail after the error line): one error line saying what to do."""
  result = launcher.run("main", ["--config=configs/quickstart.py", *TINY,
                                 "--config.checkpoint.every_epochs=1",
                                 f"--workdir={tmp_path / 'work'}", "--noplot"],
                        tmp_path / "out", program_env(), fsize=64 * 1024)
  check_one_error_line(result, r"saving the checkpoint of epoch 1 .* failed \(OSError: "
                       r"\[Errno 27\] the state needs \d+ bytes.*rerun the same command",
                       root=tmp_path)


def test_sigterm_without_checkpoints_promises_no_resume(launcher, tmp_path):
  """SIGTERM to a run without checkpoints: it stops after the epoch and says that it
  cannot resume (rather than promising a resume)."""
  work = tmp_path / "work"
  pid = launcher.start("main", ["--config=configs/quickstart.py", "--config.train.epochs=500",
                                "--config.data.train_size=128", "--config.data.test_size=64",
                                "--config.checkpoint.every_epochs=0", f"--workdir={work}",
                                "--noplot"], tmp_path / "out", program_env())
  deadline = time.time() + 180
  while not ((work / "metrics.jsonl").exists() and (work / "metrics.jsonl").read_text()):
    assert time.time() < deadline, "no epoch finished in 180 s"
    time.sleep(0.1)
  os.kill(pid, signal.SIGTERM)
  result = launcher.wait()
  assert result.status == 0, result.stderr[-3000:]  # stopped as asked
  assert "Traceback" not in result.stderr
  assert re.search(r"preempted after epoch \d+ .*without a checkpoint .*cannot resume",
                   result.stderr), result.stderr[-3000:]
  assert not re.search(r"Resume with|resumes from|checkpoint saved", result.stderr)
  assert not (work / "checkpoints").exists()


VERBOSE_CASES = [
    (Case("variant_verbose_flag", r"unknown config variant 'bogus'", ("--verbose",),
          config="configs/quickstart.py:bogus"), {}),
    (Case("variant_verbose_env", r"unknown config variant 'bogus'",
          config="configs/quickstart.py:bogus"), {"SI_JAX_VERBOSE": "1"}),
    (Case("lr_inf_verbose_env", r"optim\.lr must be a finite number", ("--config.optim.lr=inf",)),
     {"SI_JAX_VERBOSE": "1"}),
    (Case("plot_verbose_flag", r"nope/metrics\.jsonl not found",
          ("{case}/nope", "--out={case}/f.png", "--verbose"), config=None, program="plot"), {}),
    (Case("family_verbose_env", r"--vmap=yes needs", ("--vmap=yes",),
          config="configs/practical.py:cpu", program="family"), {"SI_JAX_VERBOSE": "1"}),
]


@pytest.mark.parametrize("case,env", [pytest.param(c, e, id=c.name) for c, e in VERBOSE_CASES])
def test_verbose_adds_the_traceback(launcher, tmp_path, case, env):
  """--verbose or SI_JAX_VERBOSE=1: the traceback, then the same error line, last."""
  _notes(tmp_path / "case")
  result = launcher.run(case.program, case.argv(tmp_path / "case"), tmp_path / "out",
                        program_env(**env))
  assert result.status == 1, result.stderr[-3000:]
  assert "Traceback (most recent call last)" in result.stderr
  assert re.search(case.error, result.lines[-1]) and result.lines[-1].startswith("error:")


def test_forked_and_plain_agree(launcher, tmp_path):
  """The fork server runs a program as a plain `python -m` does: same status and stderr
  for an error while parsing the flags and one while loading the data."""
  plain = Launcher(plain=True)
  for case in (CONFIG_CASES[0], DATA_CASES[-2]):
    outcomes = []
    for which, runner in (("forked", launcher), ("plain", plain)):
      case_dir = tmp_path / which / case.name
      _notes(case_dir)
      result = runner.run(case.program, case.argv(case_dir), case_dir.parent / "out",
                          program_env())
      outcomes.append((result.status, result.stdout,
                       result.stderr.replace(str(case_dir), "CASE")))
    assert outcomes[0] == outcomes[1]


def test_a_second_writer_is_refused_and_the_first_finishes_as_alone(launcher, tmp_path):
  """Two identical runs on one workdir: the second is refused within seconds, naming the
  first's pid, and writes nothing; the first ends with the logs of a run alone."""
  args = ["--config=configs/quickstart.py", *RUN, "--config.train.epochs=12", "--noplot"]
  work, alone = tmp_path / "work", tmp_path / "alone"
  first_launcher = Launcher(plain=True)
  first = first_launcher.start("main", [*args, f"--workdir={work}"], tmp_path / "first",
                               program_env())
  deadline = time.time() + 120
  while not (work / ".lock").exists():
    assert time.time() < deadline, "the first run never took the lock"
    time.sleep(0.05)
  started = time.time()
  result = launcher.run("main", [*args, f"--workdir={work}"], tmp_path / "second",
                        program_env(), timeout=120)
  assert time.time() - started < 30
  check_one_error_line(result, rf"work is in use by pid {first} on host .*one writer per "
                       "workdir", root=tmp_path)
  done = first_launcher.wait()
  assert done.status == 0, done.stderr[-3000:]
  assert "in use" not in done.stderr
  solo = launcher.run("main", [*args, f"--workdir={alone}"], tmp_path / "solo", program_env())
  assert solo.status == 0, solo.stderr[-3000:]
  assert len(records(work)) == 12 and records(work) == records(alone)
  assert sorted(os.listdir(work / "checkpoints")) == ["10", "11", "12"]
  assert not (work / ".lock").exists()


def test_sigterm_stops_the_whole_family(launcher, tmp_path):
  """SIGTERM during a sequential family's first member: it checkpoints and stops, no
  further member starts, no summary or figure is written, and the program ends with one
  error line giving the resume command."""
  work = tmp_path / "work"
  pid = launcher.start("family", ["--config=configs/lr_sweep.py:cpu", *TINY[1:],
                                  "--config.train.epochs=400", "--vmap=no", f"--workdir={work}",
                                  "--noprogress"], tmp_path / "out", program_env())
  log = work / "lr_3" / "metrics.jsonl"
  deadline = time.time() + 180
  while not (log.exists() and log.read_text()):
    assert time.time() < deadline, "no epoch finished in 180 s"
    time.sleep(0.1)
  os.kill(pid, signal.SIGTERM)
  result = launcher.wait()
  check_one_error_line(result, r"stopped by a signal: members lr_3, .* are unfinished and no "
                       r"summary or figure was written; resume with: ", root=tmp_path)
  assert not (work / "summary.json").exists() and (work / "family.json").exists()
  assert (work / "lr_3" / "checkpoints").is_dir()
  assert all(not any(d.iterdir()) for d in work.iterdir() if d.is_dir() and d.name != "lr_3")
