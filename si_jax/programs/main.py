"""Command-line entry point: train one run from an ml_collections config.

  python -m si_jax.main --config=configs/quickstart.py --workdir=/tmp/run \
      [--config.optim.lr=0.05 ...]

Writes WORKDIR/config.json, metrics.jsonl (steps.bin), TensorBoard events, figure.png,
and prints where the figure is and how many destabilizations the run showed.
"""

from __future__ import annotations

import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from si_jax.analysis import phases
from si_jax.engine import distributed, train
from si_jax.plots import plotting
from si_jax.programs import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for logs and figures.")
_PLOT = flags.DEFINE_bool("plot", True, "Draw the four-panel figure at the end.")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir even though its config differs.")
_CACHE = flags.DEFINE_string(
    "compilation_cache_dir", None,
    "Persistent XLA compilation cache: repeated launches of the same config skip compiling.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None,
    "Split the CPU into N XLA devices and shard each batch over them (data parallelism). "
    "Results do not depend on N.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Multi-process: join the other processes first (si_jax.engine.distributed.initialize; run the "
    "same command on every process, --process_id aside). The batch is then sharded over "
    "every process's devices.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "With --distributed: HOST:PORT of process 0, the same on every process (default: "
    "$JAX_COORDINATOR_ADDRESS, else the cluster's: Cloud TPU, SLURM, ...).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "With --distributed: how many processes (default: $JAX_NUM_PROCESSES, "
    "else the cluster's).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "With --distributed: this process's id, 0 .. num_processes-1 (default: "
    "$JAX_PROCESS_ID, else the cluster's).")
_DISTRIBUTED_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", None, "With --distributed: seconds for every process to join; "
    "then one error line names the missing ones and the process exits with status 1 "
    f"(default: ${distributed.TIMEOUT_ENV}, else {distributed.DEFAULT_TIMEOUT}).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  """Trains one run from --config in --workdir, then reports its destabilizations."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax and jax are chatty at INFO
  cluster = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if not _DISTRIBUTED.value and (*cluster, _DISTRIBUTED_TIMEOUT.value) != (None,) * 4:
    raise app.UsageError("--coordinator_address, --num_processes, --process_id and "
                         "--distributed_timeout need --distributed")
  if _CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  if _CACHE.value:
    jax.config.update("jax_compilation_cache_dir", _CACHE.value)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  if _DISTRIBUTED.value:
    # after the JAX config above: joining starts the backend (a missing or unusable
    # setting is a ValueError: one error line, cli.run)
    distributed.initialize(*cluster, timeout=_DISTRIBUTED_TIMEOUT.value)
  # a bad config or data, another run's workdir, a divergence, an unusable checkpoint:
  # one error line (cli.run)
  summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                     allow_config_change=_ALLOW_CHANGE.value)
  if summary["preempted"]:
    return
  final = summary["final"]
  print(f"done in {summary['wall_time']:.0f}s: epoch {final['epoch']}, "
        f"train loss {final.get('train_loss', float('nan')):.4g}, "
        f"test error {final.get('test_error', float('nan')):.4f}")
  analysis = phases.analyze_run(_WORKDIR.value)
  spikes = [int(e) for e in analysis.destabilizations]
  print(f"destabilizations (train-loss spikes) at epochs: {spikes or 'none'} ({len(spikes)})")
  print(analysis.describe().splitlines()[0])
  print(f"metrics: {os.path.join(_WORKDIR.value, 'metrics.jsonl')}")
  if _PLOT.value:
    path = plotting.plot_runs([_WORKDIR.value], os.path.join(_WORKDIR.value, "figure.png"))
    print(f"figure: {path}")


def run() -> None:
  """The ``si-jax-train`` console script."""
  cli.run(main, jax_flags=False)  # main applies --cpu_devices and the cache itself


if __name__ == "__main__":
  run()
