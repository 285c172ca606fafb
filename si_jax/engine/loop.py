"""The one host loop: R >= 1 runs trained together, each with its whole lifecycle.

One run uses the jitted step; R runs stack their states and ``jax.vmap`` it. Why a Python loop
over steps, and how a family treats a diverged member: docs/design_notes.md."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from si_jax.engine import batching, distributed, records, sharding, step
from si_jax.engine.lifecycle import Preemption, Progress, Run
from si_jax.engine.records import TrainingDiverged
from si_jax.engine.state import StepContext

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Programs:
  """The jitted (and, for a family, vmapped) step functions of one loop."""

  sgd_step: Callable
  micro_grads: Callable
  gd_step: Callable
  eval_sums: Callable
  train_pass: Callable
  pass_metrics: Callable
  subset_correct: Callable
  group_changes: Callable
  group_names: tuple[str, ...]


def compile_programs(ctx: StepContext, config, pad_value, mesh, stacked: bool) -> Programs:
  """The loop's step functions; with ``stacked`` they map over a leading runs axis."""
  tc = config.train
  sgd = functools.partial(
      step.train_step, ctx, augment=config.data.augment, pad_value=jnp.asarray(pad_value),
      invariance_every=tc.invariance_every, invariance_scale=tc.invariance_scale, mesh=mesh)
  micro = functools.partial(step.micro_batch_grads, ctx)
  gd = functools.partial(step.gd_apply, ctx)
  evals = functools.partial(step.eval_sums, ctx)
  train_pass = functools.partial(step.train_pass_sums, ctx)
  pass_metrics = functools.partial(step.full_pass_metrics, ctx)
  subsets = functools.partial(step.subset_correct, ctx)
  groups = functools.partial(step.group_changes, ctx)
  if stacked:
    sgd = jax.vmap(sgd, in_axes=(0, None, None, None))
    micro = jax.vmap(micro, in_axes=(0, 0, 0, None, None, None))
    gd = jax.vmap(gd, in_axes=(0, 0, 0, 0, 0, None))
    evals = jax.vmap(evals, in_axes=(0, 0, None, None, None, None))
    train_pass = jax.vmap(train_pass, in_axes=(0, 0, None, None, None))
    pass_metrics = jax.vmap(pass_metrics, in_axes=(0, 0, None))
    subsets = jax.vmap(subsets, in_axes=(0, 0, None, None, None, None))
    groups = jax.vmap(groups, in_axes=(0, 0, None))
  return Programs(sgd_step=jax.jit(sgd, donate_argnums=0),
                  micro_grads=jax.jit(micro, donate_argnums=2),
                  gd_step=jax.jit(gd, donate_argnums=0, static_argnums=5),
                  eval_sums=jax.jit(evals, static_argnums=5),
                  train_pass=jax.jit(train_pass),
                  pass_metrics=jax.jit(pass_metrics),
                  subset_correct=jax.jit(subsets),
                  group_changes=jax.jit(groups),
                  group_names=tuple(ctx.groups.si_groups))


def sgd_epoch(programs: Programs, state, data, config, epoch: int):
  """One epoch of mini-batch SGD; the per-step metrics stay on the device."""
  train_x, train_y = data[:2]
  pending = []
  for idx in batching.epoch_batches(config, epoch, len(train_y)):
    state, m = programs.sgd_step(state, train_x, train_y, idx)
    pending.append(m)
  return state, pending


def gd_epoch(programs: Programs, state, data, config, epoch: int):
  """One full-batch GD step: gradients summed over micro-batches, then divided by N."""
  del epoch  # full batch: the same set every step
  train_x, train_y = data[:2]
  grad_sum = jax.tree.map(jnp.zeros_like, state.params)
  loss_sum, correct_sum, stats = 0.0, 0.0, state.batch_stats
  for idx in batching.full_batch_chunks(config, len(train_y)):
    grad_sum, stats, l, c = programs.micro_grads(state.params, stats, grad_sum, train_x,
                                                 train_y, idx)
    loss_sum, correct_sum = loss_sum + l, correct_sum + c
  state, m = programs.gd_step(state, grad_sum, stats, loss_sum, correct_sum, len(train_y))
  return state, [m]


def evaluate_in_batches(eval_fn, params, batch_stats, x, y, batch_size: int, train_mode: bool):
  """Mean loss and accuracy over (x, y) by ``eval_fn`` (jitted ``eval_sums``), batch by batch."""
  loss, correct = 0.0, 0.0
  for idx in batching.batches(np.arange(len(y), dtype=np.int32), batch_size, drop_last=False):
    l, c = eval_fn(params, batch_stats, x, y, idx, train_mode)
    loss, correct = loss + l, correct + c
  loss, correct = jax.device_get((loss, correct))
  return loss / len(y), correct / len(y)


def grad_pass_due(epochs_done: int, every: int, last: int) -> bool:
  """Whether appendix B's gradient pass runs after ``epochs_done`` epochs.

  ``every`` > 0: every that many epochs, 0 never, -1 the released code's thinning (every epoch up to
  20, every 5th up to 100, every 10th up to 200, every 50th up to 1000, every 100th after); always
  at the last epoch unless off."""
  if every == 0:
    return False
  if epochs_done == last:
    return True
  if every > 0:
    return epochs_done % every == 0
  for limit, stride in ((20, 1), (100, 5), (200, 10), (1000, 50)):
    if epochs_done <= limit:
      return epochs_done % stride == 0
  return epochs_done % 100 == 0


def _train_pass_with_grads(programs: Programs, state, x, y, batch_size: int):
  """The train-mode pass over (x, y) with the gradient of the mean loss (appendix B)."""
  loss, correct, grad_sum = 0.0, 0.0, None
  for idx in batching.batches(np.arange(len(y), dtype=np.int32), batch_size, drop_last=False):
    l, c, g = programs.train_pass(state.params, state.batch_stats, x, y, idx)
    loss, correct = loss + l, correct + c
    grad_sum = g if grad_sum is None else jax.tree.map(jnp.add, grad_sum, g)
  pass_metrics = programs.pass_metrics(state, grad_sum, len(y))
  loss, correct, pass_metrics = jax.device_get((loss, correct, pass_metrics))
  return loss / len(y), correct / len(y), pass_metrics


def noisy_label_accuracies(programs: Programs, state, x, y, noisy, batch_size: int
                           ) -> dict[str, Any]:
  """Train-mode accuracy on the kept labels and on the corrupted ones (``noisy``: 0/1).

  The latter is the memorization of the noisy labels (Kodryan et al. 2022); the batches are the
  train evaluation's, so the two average, weighted by the subsets' sizes, to its accuracy."""
  hits_noisy, hits_clean = 0.0, 0.0
  for idx in batching.batches(np.arange(len(y), dtype=np.int32), batch_size, drop_last=False):
    h_noisy, h_clean = programs.subset_correct(state.params, state.batch_stats, x, y, idx, noisy)
    hits_noisy, hits_clean = hits_noisy + h_noisy, hits_clean + h_clean
  num_noisy = float(np.sum(jax.device_get(noisy)))
  hits_noisy, hits_clean = jax.device_get((hits_noisy, hits_clean))
  return {"train_accuracy_clean": hits_clean / (len(y) - num_noisy),
          "train_accuracy_noisy": hits_noisy / num_noisy}


def evaluate(programs: Programs, state, data, tc, with_grads: bool = False) -> dict[str, Any]:
  """Appendix B's evaluation: test set (eval mode), train set (train-mode BN), optional gradients.

  ``with_grads``: the gradient of the mean train loss over the whole set (``train_*`` norms).
  ``data``: train and test arrays, then with label noise the 0/1 mask of corrupted labels."""
  train_x, train_y, test_x, test_y = data[:4]
  test_loss, test_acc = evaluate_in_batches(programs.eval_sums, state.params, state.batch_stats,
                                            test_x, test_y, tc.eval_batch_size, False)
  full_pass = {}
  if with_grads:
    train_loss, train_acc, full_pass = _train_pass_with_grads(programs, state, train_x, train_y,
                                                              tc.batch_size)
  else:
    train_loss, train_acc = evaluate_in_batches(programs.eval_sums, state.params,
                                                state.batch_stats, train_x, train_y,
                                                tc.batch_size, True)
  out = {"test_loss": test_loss, "test_accuracy": test_acc, "train_loss": train_loss,
         "train_accuracy": train_acc, "full_pass": full_pass}
  if len(data) > 4:
    out.update(noisy_label_accuracies(programs, state, train_x, train_y, data[4], tc.batch_size))
  return out


def _log_steps(run: Run, stacked: dict, member: int | None, first_step: int, epoch: int,
               single: bool) -> list[dict] | None:
  """Writes a run's per-step records; None once it diverged (a single run raises)."""
  tc = run.config.train
  step_records = records.step_records(stacked, first_step, epoch, member)
  try:
    records.check_finite(step_records, first_step, tc.on_nonfinite)
  except TrainingDiverged as e:
    run.writer.write_steps(step_records, tc.invariance_every)  # the steps up to it are kept
    last = run.ckpt.epochs()[-1] if run.ckpt and run.ckpt.epochs() else None
    kept = (f"the last good checkpoint (epoch {last}) is in {run.ckpt.directory}"
            if last is not None else "no checkpoint was written")
    if single:
      raise TrainingDiverged(f"{e} Training stopped; {kept}.") from None
    run.mark_diverged(f"{e} {kept}")
    return None
  run.writer.write_steps(step_records, tc.invariance_every)
  return step_records


def _log_epoch(run: Run, step_records: list[dict], member: int | None, evals, epoch: int,
               step_count: int, group_changes: np.ndarray | None = None) -> None:
  record = {"epoch": epoch + 1, "step": step_count,
            **records.epoch_summary(step_records, run.config.train.invariance_every)}
  if group_changes is not None:  # train.check_groups_every: the worst SI group's (1a) change
    record["si_group_change"] = float(np.max(group_changes))
  if evals:
    value = lambda k: float(evals[k] if member is None else evals[k][member])
    record.update(test_loss=value("test_loss"), test_error=1.0 - value("test_accuracy"),
                  train_loss=value("train_loss"), train_accuracy=value("train_accuracy"))
    for k in ("train_accuracy_clean", "train_accuracy_noisy"):  # with data.label_noise
      if k in evals:
        record[k] = value(k)
    for k, v in evals["full_pass"].items():
      record[k] = float(v if member is None else v[member])
  # process 0's clock on every process: their logs stay byte for byte the same, so the
  # log lengths a checkpoint records (process 0's) hold for every process's logs
  if run.live is not None:
    record.update(run.live.update(record))
  record["wall_time"] = distributed.process_0_value(time.time() - run.started)
  run.writer.write_epoch(record)
  run.record = record


def _train_epoch(programs, state, data, config, runs, epoch, stacked: bool):
  """One epoch of every run: steps, per-step logs, evaluation, epoch records."""
  tc = config.train
  first_steps = np.atleast_1d(jax.device_get(state.step))
  epoch_fn = sgd_epoch if tc.mode == "sgd" else gd_epoch
  state, pending = epoch_fn(programs, state, data, config, epoch)
  # One stacked transfer per metric at the end of the epoch; the host never waited on
  # the device between the steps above.
  stacked_metrics = records.stack_metrics(pending, axis=1 if stacked else 0)
  members = [(i if stacked else None, run) for i, run in enumerate(runs) if run.active]
  logged = [(i, run, _log_steps(run, stacked_metrics, i, int(first_steps[i or 0]), epoch,
                                single=not stacked)) for i, run in members]
  evals = None
  with_grads = grad_pass_due(epoch + 1, tc.get("grad_pass_every", 0), tc.epochs)
  if (epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs or with_grads:
    evals = evaluate(programs, state, data, tc, with_grads)
  step_counts = np.atleast_1d(jax.device_get(state.step))
  every = tc.get("check_groups_every", 0)
  changes = None
  if every and (epoch + 1) % every == 0:
    changes = jax.device_get(programs.group_changes(state.params, state.batch_stats,
                                                    data[0][:tc.batch_size]))
  for i, run, step_records in logged:
    if step_records is not None:
      own = None if changes is None else changes if i is None else changes[i]
      _log_epoch(run, step_records, i, evals, epoch, int(step_counts[i or 0]), own)
      if own is not None:
        _warn_broken_groups(run, programs.group_names, own, epoch + 1)
  return state


def _warn_broken_groups(run: Run, names, changes: np.ndarray, epoch: int) -> None:
  """Warns once per run and group whose (1a) change exceeds ``train.check_groups_rtol``."""
  rtol = run.config.train.get("check_groups_rtol", 1e-3)
  for name, change in zip(names, changes):
    if change > rtol and name not in run.broken_groups:
      run.broken_groups.add(name)
      log.warning("SI group %r no longer holds at epoch %d: rescaling it by 2 changes the "
                  "outputs by %.2e > train.check_groups_rtol=%g", name, epoch, change, rtol)


def _save(runs: list[Run], state, done: int, stacked: bool, preempted: bool) -> str | None:
  path = None
  for i, run in enumerate(runs):
    if run.checkpoint_due(done, preempted):
      path = run.save(done, jax.tree.map(lambda a, i=i: a[i], state) if stacked else state)
  return path


def _report_preemption(runs: list[Run], state, done: int, path: str | None, stacked: bool):
  step_count = int(np.max(jax.device_get(state.step)))
  if path is None:
    log.info("preempted after epoch %d (step %d) without a checkpoint "
             "(checkpoint.every_epochs=0): this run cannot resume; rerunning the same command "
             "restarts it at epoch 0.", done, step_count)
    return
  again = "the same command" if stacked else f"the same command (same --workdir={runs[0].workdir})"
  log.info("preempted after epoch %d (step %d): checkpoint saved to %s. Resume with %s.",
           done, step_count, path, again)


def run_loop(ctx: StepContext, state, runs: list[Run], dataset, config: ml_collections.ConfigDict,
             *, stacked: bool, mesh=None, progress: bool = True) -> tuple[Any, bool]:
  """Trains ``runs`` from ``state`` (placed on ``mesh``) to ``train.epochs``; (state, preempted)."""
  tc = config.train
  arrays = (dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels)
  if dataset.clean_train_labels is not None:  # data.label_noise: which labels were corrupted
    arrays += ((dataset.train_labels != dataset.clean_train_labels).astype(np.float32),)
  data = sharding.place_arrays(arrays, mesh, stacked)
  programs = compile_programs(ctx, config, dataset.pad_value, mesh, stacked)
  for run in runs:
    run.open_logs()
  bar = Progress(tc.epochs, enabled=progress,
                 prefix=f"{len(runs)} runs " if stacked else "")
  try:
    with Preemption() as preemption:
      for epoch in range(runs[0].start_epoch, tc.epochs):
        state = _train_epoch(programs, state, data, config, runs, epoch, stacked)
        live = [r for r in runs if r.active]
        if live:
          bar.update(epoch + 1, live[0].record)
        done = epoch + 1
        # one decision per epoch boundary, the same on every process: a signal to any
        # of them stops all at this epoch, each with its checkpoint
        stop = distributed.agree(preemption.requested)
        path = _save(runs, state, done, stacked, stop)
        if not live:
          break
        if stop and done < tc.epochs:
          _report_preemption(runs, state, done, path, stacked)
          return state, True
  finally:
    for run in runs:
      run.close()
  return state, False
