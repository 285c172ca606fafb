"""The jitted train step and the training loop.

State is one pytree (``TrainState``): parameters, BN running statistics, optimizer
state (which holds the hyperparameters), step and RNG key. The data order of epoch e
is a function of (seed, e) alone, so a run is reproducible from its step count.

The host loop dispatches jitted steps asynchronously and only pulls metrics to the
host once per epoch (a Python loop over jitted steps, not a rolled ``lax.scan``: on
XLA:CPU a conv weight-gradient inside a rolled loop ran ~100x slower).
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from si_jax import data as data_lib
from si_jax import invariance, metrics, models, optim
from si_jax import logs, validate
from si_jax import checkpoint as checkpoint_lib
from si_jax import config as config_lib
from si_jax.checkpoint import Checkpointer
from si_jax.logs import MetricWriter


class TrainingDiverged(FloatingPointError):
  """Raised when a loss, gradient or weight norm becomes non-finite."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


@flax.struct.dataclass
class Task:
  """What the pure step functions close over (static, not part of the state)."""

  model: nn.Module = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  groups: models.ParamGroups = flax.struct.field(pytree_node=False)
  fixed_effective_lr: bool = flax.struct.field(pytree_node=False, default=False)


def loss_and_aux(model, params, batch_stats, x, y, train: bool = True):
  """Mean cross-entropy; train mode uses batch statistics and returns the new running ones."""
  variables = {"params": params, "batch_stats": batch_stats}
  if train:
    logits, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
    new_stats = updated["batch_stats"]
  else:
    logits, new_stats = model.apply(variables, x, train=False), batch_stats
  loss = jnp.mean(metrics.cross_entropy(logits, y))
  return loss, (logits, new_stats)


def apply_gradients(task: Task, state: TrainState, grads, new_batch_stats, loss, accuracy):
  """One optimizer step from given loss gradients, with the dynamics metrics."""
  updates, opt_state = task.tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  lr = optim.hyperparams(opt_state)["learning_rate"]
  if task.fixed_effective_lr:  # the SI step used eta_t = eta~ rho_t^2
    lr = lr * optim.sq_norm(optim._select(task.groups.si_mask(state.params), state.params))
  step_metrics = metrics.dynamics_metrics(
      state.params, grads, new_params, lr, task.groups.si_groups)
  step_metrics.update(loss=loss, accuracy=accuracy)
  new_state = state.replace(
      step=state.step + 1, params=new_params, batch_stats=new_batch_stats, opt_state=opt_state)
  return new_state, step_metrics


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh named 'data' over all devices, of every host after
  ``jax.distributed.initialize()`` (Auto axis: the classic behaviour)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def shard_batch(x, mesh: jax.sharding.Mesh | None):
  """Constrains a batch to be split along 'data' (params stay replicated).

  Inside jit, XLA's partitioner then computes every mean over the batch (the loss, BN's
  batch statistics) over the global batch, so results do not depend on the device
  count. A batch that does not divide evenly stays replicated.
  """
  if mesh is None or mesh.shape["data"] == 1 or x.shape[0] % mesh.shape["data"]:
    return x
  spec = jax.sharding.PartitionSpec("data", *([None] * (x.ndim - 1)))
  return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))


def train_step(task: Task, state: TrainState, images, labels, idx, *, augment: bool = False,
               pad_value=None, invariance_every: int = 0, invariance_scale: float = 2.0,
               mesh: jax.sharding.Mesh | None = None):
  """One SGD step on the mini-batch ``images[idx]``: (state, batch) -> (state, metrics).

  With a ``mesh`` the batch is split across its devices (data parallelism).
  """
  x, y = shard_batch(images[idx], mesh), shard_batch(labels[idx], mesh)
  if augment:
    x = data_lib.augment_batch(jax.random.fold_in(state.rng, state.step), x, pad_value)
  grad_fn = jax.value_and_grad(
      lambda p: loss_and_aux(task.model, p, state.batch_stats, x, y), has_aux=True)
  (loss, (logits, new_stats)), grads = grad_fn(state.params)
  accuracy = jnp.mean(metrics.correct(logits, y))
  new_state, step_metrics = apply_gradients(task, state, grads, new_stats, loss, accuracy)
  if invariance_every:
    loss_fn = lambda p: loss_and_aux(task.model, p, state.batch_stats, x, y)[0]
    check = lambda: invariance.invariance_residuals(
        loss_fn, state.params, task.groups.si_groups, invariance_scale)
    skip = lambda: jax.tree.map(jnp.zeros_like, jax.eval_shape(check))
    step_metrics.update(jax.lax.cond(state.step % invariance_every == 0, check, skip))
  return new_state, step_metrics


def micro_batch_grads(task: Task, params, batch_stats, grad_sum, images, labels, idx):
  """Adds sum_i grad loss_i over the micro-batch to ``grad_sum`` (full-batch GD).

  BN statistics are those of the micro-batch ("ghost" statistics, as the original
  full-batch code did); one micro-batch of the whole subset gives exact statistics.
  """
  x, y = images[idx], labels[idx]
  n = idx.shape[0]
  grad_fn = jax.value_and_grad(
      lambda p: loss_and_aux(task.model, p, batch_stats, x, y), has_aux=True)
  (loss, (logits, new_stats)), grads = grad_fn(params)
  grad_sum = jax.tree.map(lambda s, g: s + n * g, grad_sum, grads)
  return grad_sum, new_stats, loss * n, jnp.sum(metrics.correct(logits, y))


def gd_apply(task: Task, state: TrainState, grad_sum, new_batch_stats, loss_sum, correct_sum, n):
  grads = jax.tree.map(lambda g: g / n, grad_sum)
  return apply_gradients(task, state, grads, new_batch_stats, loss_sum / n, correct_sum / n)


def eval_sums(task: Task, params, batch_stats, images, labels, idx, train: bool):
  """(sum of losses, number correct) on ``images[idx]``; BN statistics are not updated."""
  x, y = images[idx], labels[idx]
  logits = loss_and_aux(task.model, params, batch_stats, x, y, train=train)[1][0]
  return jnp.sum(metrics.cross_entropy(logits, y)), jnp.sum(metrics.correct(logits, y))


def evaluate_in_batches(eval_fn, params, batch_stats, x, y, batch_size: int, train_mode: bool):
  """Mean loss and accuracy over (x, y), from ``eval_fn`` = a jitted ``eval_sums`` (or
  its vmap over runs) applied batch by batch; one transfer to the host at the end."""
  loss, correct = 0.0, 0.0
  for idx in batches(np.arange(len(y), dtype=np.int32), batch_size, drop_last=False):
    l, c = eval_fn(params, batch_stats, x, y, idx, train_mode)
    loss, correct = loss + l, correct + c
  loss, correct = jax.device_get((loss, correct))
  return loss / len(y), correct / len(y)


def stack_metrics(pending: list[dict], axis: int = 0) -> dict[str, np.ndarray]:
  """The per-step metric dicts of an epoch as host arrays (one batched transfer, stacked
  on the host: an eager device-side stack of arrays sharded over several CPU devices
  can deadlock XLA:CPU's collectives while steps are still queued)."""
  host = jax.device_get(pending)
  return {k: np.stack([m[k] for m in host], axis=axis) for k in host[0]}


def create_task_and_state(config: ml_collections.ConfigDict, dataset: data_lib.Dataset):
  """Model, optimizer and initial state from a validated config."""
  mc, oc = config.model, config.optim
  model = models.create_model(
      mc.name, num_classes=dataset.num_classes, width=mc.width, norm=mc.norm,
      train_non_si=mc.train_non_si, norm_epsilon=mc.norm_epsilon,
      conv_impl=mc.get("conv_impl", "xla"))
  init_key, aug_key = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 0))
  variables = models.init_variables(model, init_key, dataset.image_shape, mc.last_layer_norm)
  groups = models.param_groups(model)
  params = variables["params"]
  if mc.get("init_checkpoint"):
    loaded, stats, _ = checkpoint_lib.load_weights(mc.init_checkpoint, mc.get("init_epoch"))
    shapes = lambda t: jax.tree.map(jnp.shape, t)
    if shapes(loaded) != shapes(params) or shapes(stats) != shapes(variables["batch_stats"]):
      raise ValueError(f"model.init_checkpoint={mc.init_checkpoint!r} holds another model's "
                       "weights (shapes differ from this config's model)")
    params = jax.tree.map(jnp.asarray, loaded)
    variables = {"params": params, "batch_stats": jax.tree.map(jnp.asarray, stats)}
  if mc.get("init_scale", 1.0) != 1.0:
    params = invariance.scale_paths(params, groups.si_paths, mc.init_scale)
  tx = optim.make_optimizer(params, groups, **oc.to_dict())
  state = TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables["batch_stats"],
      opt_state=tx.init(params),
      rng=aug_key,
  )
  return Task(model, tx, groups, oc.fixed_effective_lr), state


def load_dataset(config) -> data_lib.Dataset:
  """The dataset a config asks for (its data section, less the training-time options)."""
  return data_lib.load_dataset(**{k: v for k, v in config.data.to_dict().items()
                                  if k not in ("augment", "order_seed")})


def order_seed(config) -> int:
  """The seed of the data order: data.order_seed, or the run's seed."""
  return config.seed if config.data.get("order_seed") is None else config.data.order_seed


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """The example order of an epoch: a function of (seed, epoch) only."""
  return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)


def batches(order: np.ndarray, batch_size: int, drop_last: bool) -> list[np.ndarray]:
  cut = len(order) if not drop_last else len(order) - len(order) % batch_size
  return [order[i:i + batch_size] for i in range(0, cut, batch_size)]


class Progress:
  """One line per epoch with loss and effective LR; rewritten in place on a terminal."""

  def __init__(self, total: int, stream=sys.stderr, enabled: bool = True):
    self.total, self.stream, self.enabled = total, stream, enabled
    self.tty = hasattr(stream, "isatty") and stream.isatty()
    self.start = time.time()

  def update(self, epoch: int, record: dict) -> None:
    if not self.enabled:
      return
    elapsed = time.time() - self.start
    eta = elapsed / epoch * (self.total - epoch) if epoch else 0.0
    width = 20
    done = int(width * epoch / self.total)
    line = (f"[{'#' * done}{'.' * (width - done)}] epoch {epoch}/{self.total} "
            f"loss {record.get('loss', float('nan')):.4g} "
            f"eff_lr {record.get('effective_lr', float('nan')):.3g} "
            f"rho {record.get('weight_norm', float('nan')):.3g} "
            f"{elapsed:.0f}s<{eta:.0f}s")
    if self.tty:
      self.stream.write("\r" + line + ("\n" if epoch == self.total else ""))
    elif epoch == self.total or epoch % max(1, self.total // 20) == 0 or epoch == 1:
      self.stream.write(line + "\n")
    self.stream.flush()


def _tiny_norm_hint(rho: float, epsilon: float = 1e-5) -> str:
  """Explains a blow-up at a tiny SI weight norm (the end of phase B pushed too far)."""
  if not rho < 1e-2:
    return ""
  if rho == 0.0:
    what = "the SI weight norm underflowed to 0 in float32"
  else:
    what = f"the SI weight norm was rho = {rho:.3g}"
  return (f" {what}: pre-norm activation variances scale with rho^2, so BN's epsilon "
          f"({epsilon:g}) weighs 1/rho^2 = {1 / max(rho, 1e-30) ** 2:.3g} times more against "
          "them than at rho = 1; the normalization no longer cancels the scale and the "
          "gradients (~1/rho) overflow. Use a smaller lr x wd or fix the SI norm.")


def _check_finite(records: list[dict], first_step: int, policy: str = "stop") -> None:
  """Raises TrainingDiverged at the first non-finite loss, gradient or weight norm.

  With ``policy='record'`` a non-finite loss or gradient is only reported (on stderr)
  and training goes on while the weights stay finite.
  """
  watched = ("loss", "grad_norm", "weight_norm")
  for i, rec in enumerate(records):
    bad = [k for k in watched if not math.isfinite(rec[k])]
    if bad and policy == "record" and math.isfinite(rec["weight_norm"]):
      print(f"warning: non-finite {bad} at step {first_step + i} (recorded, training goes on)",
            file=sys.stderr)
      continue
    if bad:
      values = ", ".join(f"{k}={rec[k]:.6g}" for k in watched)
      prev = records[i - 1] if i else None
      before = (", ".join(f"{k}={prev[k]:.6g}" for k in watched) if prev else "n/a")
      norms = [r["weight_norm"] for r in (rec, prev) if r and not math.isnan(r["weight_norm"])]
      hint = _tiny_norm_hint(min(norms, default=math.inf))
      raise TrainingDiverged(
          f"non-finite {bad} at step {first_step + i}: {values}; previous step: {before}.{hint}")


def _epoch_summary(records: list[dict], invariance_every: int) -> dict[str, float]:
  """Epoch means of the in-step metrics; the worst invariance residual of the epoch."""
  out = {k: float(np.mean([r[k] for r in records]))
         for k in records[0] if not k.startswith("invariance/") and k not in ("step", "epoch")}
  checked = [r for r in records if invariance_every and r["step"] % invariance_every == 0]
  for k in (checked[0] if checked else {}):
    if k.startswith("invariance/"):
      out[k] = max(r[k] for r in checked)
  return out


class ConfigMismatch(ValueError):
  """The workdir holds a run with another config."""


# Fields that may change when a run is resumed: extend it, change its checkpointing.
RESUMABLE_CHANGES = ("train.epochs", "checkpoint.")


def config_differences(saved: dict, current: dict) -> list[str]:
  """'field: saved -> current' for every field that differs (resumable ones excepted)."""
  a, b = config_lib.flatten(saved), config_lib.flatten(current)
  diffs = []
  for key in sorted(set(a) | set(b)):
    if key.startswith(RESUMABLE_CHANGES) or key in RESUMABLE_CHANGES:
      continue
    if a.get(key, "<absent>") != b.get(key, "<absent>"):
      diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
  return diffs


def _check_workdir_config(config, workdir: str, allow_config_change: bool) -> None:
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return
  with open(path) as f:
    saved = json.load(f)
  diffs = config_differences(saved, json.loads(config.to_json_best_effort()))
  if diffs and not allow_config_change:
    raise ConfigMismatch(
        f"{workdir} holds a run with a different config ({'; '.join(diffs)}). Use another "
        "--workdir, or pass --allow_config_change to resume it with the new values.")


class Preemption:
  """Turns SIGTERM/SIGINT into a request to checkpoint and stop at the end of the epoch.

  A second signal interrupts at once. Only installed from the main thread.
  """

  def __init__(self):
    self.requested = False
    self._previous = {}

  def _handle(self, signum, frame):
    if self.requested:
      raise KeyboardInterrupt
    self.requested = True
    print(f"\nsignal {signal.Signals(signum).name}: finishing this epoch, then saving a "
          "checkpoint (send it again to stop at once)", file=sys.stderr, flush=True)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       progress: bool = True, allow_config_change: bool = False) -> dict[str, Any]:
  """Trains as the config says; writes config.json, metrics.jsonl (and steps.jsonl).

  If ``workdir`` holds a checkpoint of the same config, the run resumes from it and
  continues bit for bit. Returns a summary dict (final record, wall time, paths,
  whether it was preempted).
  """
  validate.validate_config(config)
  dataset = load_dataset(config)
  tc, cc = config.train, config.checkpoint
  os.makedirs(workdir, exist_ok=True)
  _check_workdir_config(config, workdir, allow_config_change)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  task, state = create_task_and_state(config, dataset)
  ckpt = Checkpointer(workdir, cc.keep, cc.snapshot_epochs) if cc.every_epochs else None
  start_epoch, offsets, wall_before = 0, (0, 0), 0.0
  restored = ckpt.restore_latest(state) if ckpt else None
  if restored and restored[1]["epoch"] >= tc.epochs:
    final = logs.read_run(workdir)[-1] if os.path.exists(
        os.path.join(workdir, logs.METRICS_FILE)) else {}
    print(f"{workdir} is already complete ({restored[1]['epoch']} epochs); raise "
          "train.epochs to continue it", file=sys.stderr)
    ckpt.close()
    return {"final": final, "wall_time": restored[1]["wall_time"], "workdir": workdir,
            "state": restored[0], "task": task, "preempted": False}
  if restored:
    state, meta = restored
    # the config's hyperparameters win (they differ only with allow_config_change)
    state = state.replace(opt_state=optim.with_hyperparams(
        state.opt_state, learning_rate=config.optim.lr, weight_decay=config.optim.wd,
        momentum=config.optim.momentum))
    start_epoch, offsets = meta["epoch"], (meta["metrics_bytes"], meta["steps_bytes"])
    wall_before = meta["wall_time"]
    print(f"resuming {workdir} from the checkpoint of epoch {start_epoch} "
          f"(step {int(state.step)})", file=sys.stderr)

  mesh = data_mesh() if jax.device_count() > 1 else None
  # the data lives on every device (replicated; every host loads the same arrays); each
  # step's batch is then split
  if mesh:
    where = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    put = lambda a: jax.make_array_from_process_local_data(where, a, a.shape)
  else:
    put = jax.device_put
  train_x, train_y, test_x, test_y = (put(a) for a in (
      dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels))
  n_train = len(dataset.train_labels)

  step_fn = jax.jit(functools.partial(
      train_step, task, augment=config.data.augment, pad_value=jnp.asarray(dataset.pad_value),
      invariance_every=tc.invariance_every, invariance_scale=tc.invariance_scale, mesh=mesh),
      donate_argnums=0)
  micro_fn = jax.jit(functools.partial(micro_batch_grads, task), donate_argnums=2)
  gd_fn = jax.jit(functools.partial(gd_apply, task), donate_argnums=0, static_argnums=5)
  eval_fn = jax.jit(functools.partial(eval_sums, task), static_argnums=5)

  def evaluate(params, batch_stats, x, y, batch_size, train_mode):
    loss, accuracy = evaluate_in_batches(eval_fn, params, batch_stats, x, y, batch_size, train_mode)
    return float(loss), float(accuracy)

  def sgd_epoch(state, epoch):
    pending = []
    for idx in batches(epoch_order(order_seed(config), epoch, n_train), tc.batch_size,
                       tc.drop_last):
      state, m = step_fn(state, train_x, train_y, idx)
      pending.append(m)
    return state, pending

  def gd_epoch(state, epoch):
    del epoch  # full batch: the same subset every step
    grad_sum = jax.tree.map(jnp.zeros_like, state.params)
    loss_sum, correct_sum, stats = 0.0, 0.0, state.batch_stats
    for idx in batches(np.arange(n_train, dtype=np.int32), tc.micro_batch_size or n_train, False):
      grad_sum, stats, l, c = micro_fn(state.params, stats, grad_sum, train_x, train_y, idx)
      loss_sum, correct_sum = loss_sum + l, correct_sum + c
    state, m = gd_fn(state, grad_sum, stats, loss_sum, correct_sum, n_train)
    return state, [m]

  run_epoch = sgd_epoch if tc.mode == "sgd" else gd_epoch
  # every host computes the same metrics; host 0 writes the run's logs, others their own
  log_dir = workdir if jax.process_index() == 0 else os.path.join(
      workdir, f"process_{jax.process_index()}")
  os.makedirs(log_dir, exist_ok=True)
  writer = MetricWriter(log_dir, per_step=(tc.log_every == "step"), offsets=offsets)
  bar = Progress(tc.epochs, enabled=progress)
  start = time.time() - wall_before
  record: dict[str, Any] = {}
  preempted = False

  def save(epoch_done: int) -> str:
    metrics_bytes, steps_bytes = writer.offsets()
    return ckpt.save(epoch_done, state, {"metrics_bytes": metrics_bytes, "steps_bytes": steps_bytes,
                                         "wall_time": time.time() - start, "step": int(state.step)})

  try:
    with Preemption() as preemption:
      for epoch in range(start_epoch, tc.epochs):
        first_step = int(state.step)
        state, pending = run_epoch(state, epoch)
        # One stacked transfer per metric at the end of the epoch; the host never
        # waited on the device between the steps above.
        stacked = stack_metrics(pending)
        step_records = [{k: float(v[i]) for k, v in stacked.items()} for i in range(len(pending))]
        for i, r in enumerate(step_records):
          r.update(step=first_step + i, epoch=epoch)
        try:
          _check_finite(step_records, first_step, tc.on_nonfinite)
        except TrainingDiverged as e:
          writer.write_steps(step_records, tc.invariance_every)  # the steps up to it are kept
          last = ckpt.epochs()[-1] if ckpt and ckpt.epochs() else None
          kept = (f"the last good checkpoint (epoch {last}) is in {ckpt.directory}"
                  if last is not None else "no checkpoint was written")
          raise TrainingDiverged(f"{e} Training stopped; {kept}.") from None
        writer.write_steps(step_records, tc.invariance_every)
        record = {"epoch": epoch + 1, "step": int(state.step),
                  **_epoch_summary(step_records, tc.invariance_every)}
        if (epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs:
          record["test_loss"], test_acc = evaluate(
              state.params, state.batch_stats, test_x, test_y, tc.eval_batch_size, False)
          record["test_error"] = 1.0 - test_acc
          record["train_loss"], record["train_accuracy"] = evaluate(
              state.params, state.batch_stats, train_x, train_y, tc.batch_size, True)
        record["wall_time"] = time.time() - start
        writer.write_epoch(record)
        bar.update(epoch + 1, record)
        done = epoch + 1
        if ckpt and (done % cc.every_epochs == 0 or done in cc.snapshot_epochs
                     or done == tc.epochs or preemption.requested):
          path = save(done)
        if preemption.requested and done < tc.epochs:
          where = f"checkpoint saved to {path}" if ckpt else "no checkpoint (checkpoint.every_epochs=0)"
          print(f"preempted after epoch {done} (step {int(state.step)}): {where}. Resume "
                f"with the same command (same --workdir={workdir}).", file=sys.stderr, flush=True)
          preempted = True
          break
  finally:
    writer.close()
    if ckpt:
      ckpt.close()
  return {"final": record, "wall_time": time.time() - start, "workdir": workdir,
          "state": state, "task": task, "preempted": preempted}
