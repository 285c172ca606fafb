"""Mutation check: named bugs that matter, each with the tests expected to catch it.

Each mutation replaces one exact snippet of the library (it must occur exactly once in
its file) in a private copy of the repository, then runs its target tests there:

  KILLED    a target test failed (the tests catch this bug)
  SURVIVED  every target test passed with the bug in place (a blind spot)
  STALE     the snippet occurs 0 or >1 times, or a target file is gone: the code moved,
            update the table below
  ERROR     pytest could not run (no test selected, usage error, timeout, ...)

Usage (from the repository root; tests/MUTATIONS.md has the list and the last result):

  .venv/bin/python tests/mutations.py --list
  .venv/bin/python tests/mutations.py --baseline          # the unmutated copy passes?
  .venv/bin/python tests/mutations.py                     # every mutation, one at a time
  .venv/bin/python tests/mutations.py --only NAME [NAME ...] --jobs 2 --timeout 600
  .venv/bin/python tests/mutations.py --rev HEAD          # a commit instead of the work tree

The exit status is 0 only if every mutation was killed (or, with --baseline, every
target set passed). The working tree itself is never modified: copies of COPIED go to
a temporary directory, and the tests run there with that directory first on PYTHONPATH,
so the mutated package is the one imported, by the tests and by any subprocess they
start (the editable install's finder comes after PYTHONPATH). The persistent JAX
compilation cache of tests/conftest.py is shared (it is keyed on the compiled program,
which a mutation changes); --private_cache gives each run its own.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time


@dataclasses.dataclass(frozen=True)
class Mutation:
  name: str
  file: str          # relative to the repository root
  original: str      # must occur exactly once in ``file``
  replacement: str
  targets: str       # pytest arguments (shlex syntax): test files or node ids, -k EXPR
  bug: str           # what the mutation does, in the paper's terms


# The table. Keep snippets short but unique; when the code moves, the mutation reports
# STALE and the snippet (or file, or targets) is updated here.
MUTATIONS = [
    Mutation(
        "test_eval_in_train_mode", "si_jax/engine/loop.py",
        "test_x, test_y, tc.eval_batch_size, False)",
        "test_x, test_y, tc.eval_batch_size, True)",
        "tests/test_sweep.py -k single_runs_log_the_evaluation",
        "test metrics computed with train-mode BN (batch statistics of the test batch) "
        "instead of the running statistics"),
    Mutation(
        "layer_norm_per_channel", "si_jax/models/layers.py",
        'axes = (1, 2, 3) if self.kind == "layer" else (1, 2)',
        'axes = (1, 2) if self.kind == "layer" else (1, 2)',
        "tests/test_models.py",
        "layer norm normalizes each channel over (H, W) (= instance norm) instead of each "
        "sample over (H, W, C)"),
    Mutation(
        "resume_zeroes_momentum", "si_jax/engine/checkpoint.py",
        'opt_state=tree["opt_state"]',
        "opt_state=jax.tree_util.tree_map_with_path(lambda p, x: x * 0 if '.trace' in "
        'jax.tree_util.keystr(p) else x, tree["opt_state"])',
        "tests/test_checkpoint.py tests/test_engine.py -k 'resume_is_bit_identical or "
        "killed_mid_way'",
        "resume restores the optimizer state but with the momentum buffer at zero"),
    Mutation(
        "resume_fresh_optimizer_state", "si_jax/engine/checkpoint.py",
        'opt_state=tree["opt_state"]',
        "opt_state=template.opt_state",
        "tests/test_checkpoint.py -k resume_is_bit_identical",
        "resume starts from a fresh optimizer state (tx.init: momentum buffer and step "
        "count at zero)"),
    Mutation(
        "fixed_effective_lr_uses_rho0", "si_jax/optim.py",
        "    return jax.tree.map(lambda m, u: u * rho_sq if m else u, si_mask, updates), state\n"
        "\n"
        "  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)\n",
        "    rho_sq = state.target_norm  # mutation: rho_0^2, taken once at init\n"
        "    return jax.tree.map(lambda m, u: u * rho_sq if m else u, si_mask, updates), state\n"
        "\n"
        "  return optax.GradientTransformation(lambda p: FixedNormState(sq_norm(\n"
        "      jax.tree.map(lambda m, x: x if m else 0 * x, si_mask, p))), update_fn)\n",
        "tests/test_optim.py -k fixed_effective_lr",
        "fixed effective LR scales the SI step by rho_0^2 from initialization instead of "
        "rho_t^2"),
    Mutation(
        "sweep_logs_accuracy_as_test_error", "si_jax/engine/loop.py",
        'test_error=1.0 - value("test_accuracy")',
        'test_error=value("test_accuracy") if member is not None else '
        '1.0 - value("test_accuracy")',
        "tests/test_sweep.py -k 'members_match or sweep_members_log'",
        "a sweep member writes its test accuracy under test_error"),
    Mutation(
        "phase_b_starts_at_the_peak", "si_jax/analysis/phases.py",
        "  b_start = min([i for i in converged if i >= peak] or [end])",
        "  b_start = peak",
        "tests/test_phases.py -k 'known_periods or phase_bounds'",
        "phase A empty: phase B starts at the spike's peak, not at the converged stretch"),
    Mutation(
        "cifar_std_wrong", "si_jax/data/__init__.py",
        "CIFAR_STD = (0.2023, 0.1994, 0.2010)",
        "CIFAR_STD = (0.2470, 0.2435, 0.2616)",
        "tests/test_data.py -k normalization",
        "CIFAR normalized with the per-pixel std of the dataset instead of the paper's "
        "constants (0.2023, 0.1994, 0.2010)"),
    Mutation(
        "prop3_band_twice_too_wide", "si_jax/analysis/theory.py",
        "return Interval(k * l, k * L, 2 * lr * wd * L <= l)",
        "return Interval(k * (3 * l - L) / 2, k * (3 * L - l) / 2, 2 * lr * wd * L <= l)",
        "tests/test_theory.py -k proposition3",
        "Proposition 3's band [kappa l, kappa L] twice as wide about its centre"),
    Mutation(
        "envelope_fit_ignores_t0", "si_jax/analysis/theory.py",
        "  dt = t[keep] - t0\n",
        "  dt = t[keep]\n",
        "tests/test_theory.py -k envelope",
        "the gradient-envelope fit c / (t - t0)^p, C / (t - t0) uses t instead of t - t0"),
    Mutation(
        "weight_decay_sign", "si_jax/optim.py",
        "optax.add_decayed_weights(weight_decay, mask=trainable_mask)",
        "optax.add_decayed_weights(-weight_decay, mask=trainable_mask)",
        "tests/test_optim.py -k eq2",
        "Eq. (2) with weight growth: x - eta (grad - lambda x)"),
    Mutation(
        "coupled_wd_is_decoupled", "si_jax/optim.py",
        "    parts = [decay, precondition]\n",
        "    parts = [precondition, decay]\n",
        "tests/test_optim.py -k coupled",
        "coupled weight decay added after the momentum trace (SGDW) instead of before it "
        "(torch.optim.SGD, the paper's runs)"),
    Mutation(
        "frozen_params_updated", "si_jax/optim.py",
        "jax.tree.map(lambda trainable: not trainable, trainable_mask)",
        "jax.tree.map(lambda trainable: False, trainable_mask)",
        "tests/test_optim.py -k eq2",
        "the frozen non-SI parameters (last layer, norm affine) get updated"),
    Mutation(
        "linear_schedule_decays_from_start", "si_jax/optim.py",
        "transition_begin=0.25 * T)",
        "transition_begin=0.0)",
        "tests/test_schedules.py -k multipliers",
        "the linear schedule (appendix J) decays from the first step instead of holding 1 "
        "for the first quarter"),
    Mutation(
        "epoch_schedule_moves_every_step", "si_jax/optim.py",
        "per_update(t // steps_per_epoch * steps_per_epoch)",
        "per_update(t)",
        "tests/test_schedules.py -k epoch_unit",
        "optim.schedule_unit='epoch' changes the learning rate every step, not once an "
        "epoch as the released code does"),
    Mutation(
        "label_noise_may_keep_the_label", "si_jax/data/__init__.py",
        "rng.integers(1, num_classes, num_noisy)",
        "rng.integers(0, num_classes, num_noisy)",
        "tests/test_loss_and_noise.py -k corrupts_exactly",
        "a corrupted train label may equal the clean one (data.label_noise corrupts fewer "
        "labels than it says)"),
    Mutation(
        "mse_sums_over_classes", "si_jax/metrics.py",
        "return jnp.mean(jnp.square(",
        "return jnp.sum(jnp.square(",
        "tests/test_loss_and_noise.py -k mse_value",
        "the MSE loss is K times the three-regimes paper's (sum instead of mean over classes)"),
    Mutation(
        "checkpoint_interval_ignored", "si_jax/engine/checkpoint.py",
        "([cm.FixedIntervalPolicy(every_epochs)] if every_epochs else [])",
        "[]",
        "tests/test_checkpoint.py -k save_decision",
        "checkpoint.every_epochs is ignored: only snapshots and the last epoch are saved, so "
        "a preempted run loses all its epochs"),
    Mutation(
        "compact_kinds_merge_overlapping_groups", "si_jax/si_groups.py",
        "while label in kinds and not set(kinds[label]).isdisjoint(paths):",
        "while False:",
        "tests/test_compact_groups.py -k found_transformer",
        "compact kinds merge overlapping versions of a group: the union is not SI, so the "
        "kind's effective LR is not the paper's quantity"),
    Mutation(
        "effective_lr_over_rho", "si_jax/metrics.py",
        '"effective_lr": lr / jnp.square(rho),',
        '"effective_lr": lr / rho,',
        "tests/test_dynamics.py -k eq8",
        "effective LR logged as eta / rho instead of eta / rho^2"),
    Mutation(
        "cosine_distance_not_halved", "si_jax/metrics.py",
        '"cosine_distance": unit_diff_sq / 2,',
        '"cosine_distance": unit_diff_sq,',
        "tests/test_dynamics.py",
        "1 - cos computed as ||u_{t+1} - u_t||^2 instead of half of it"),
    Mutation(
        "data_order_ignores_epoch", "si_jax/engine/batching.py",
        "np.random.default_rng([seed, epoch])",
        "np.random.default_rng([seed, 0])",
        "tests/test_train.py -k epoch_order",
        "every epoch sees the examples in the same order"),
    Mutation(
        "bn_momentum_flax_convention", "si_jax/models/layers.py",
        "momentum: float = 0.1",
        "momentum: float = 0.9",
        "tests/test_models.py -k batchnorm",
        "BN running statistics with momentum 0.9 (Flax's convention) read as PyTorch's"),
    Mutation(
        "bn_running_var_biased", "si_jax/models/layers.py",
        "m * var * (n / max(n - 1, 1))",
        "m * var",
        "tests/test_models.py -k batchnorm",
        "BN running variance updated with the biased batch variance"),
    Mutation(
        "resume_drops_bn_stats", "si_jax/engine/checkpoint.py",
        'batch_stats=tree["batch_stats"]',
        "batch_stats=template.batch_stats",
        "tests/test_checkpoint.py -k resume_is_bit_identical",
        "resume restores the initial BN running statistics"),
    Mutation(
        "kappa_without_2", "si_jax/analysis/theory.py",
        "return math.sqrt(lr / (2 * wd))",
        "return math.sqrt(lr / wd)",
        "tests/test_theory.py -k proposition",
        "kappa = sqrt(eta / lambda) instead of sqrt(eta / (2 lambda))"),
    Mutation(
        "loss_summed_over_batch", "si_jax/engine/step.py",
        "loss = jnp.mean(metrics.LOSSES[loss_name](logits, y))",
        "loss = jnp.sum(metrics.LOSSES[loss_name](logits, y))",
        "tests/test_train.py -k sgd_step_on_its_batch",
        "the training loss (and so the gradient) summed over the batch, not averaged"),
    Mutation(
        "eval_drops_last_batch", "si_jax/engine/loop.py",
        "drop_last=False):\n    l, c = eval_fn(",
        "drop_last=True):\n    l, c = eval_fn(",
        "tests/test_sweep.py -k single_runs_log_the_evaluation",
        "evaluation skips the last partial batch but still divides by the whole set"),
    # Second round (tests/test_round2.py): bugs planted in the code added since the first
    # table, and bugs of the same classes (best-vs-worst reductions, schedules in GD mode,
    # guards comparing fewer fields, what the gradient pass and records derive).
    Mutation(
        "si_confirm_euler_only", "si_jax/si_groups.py",
        "    if euler <= rtol and value <= rtol and flat:\n",
        "    if euler <= rtol:\n",
        "tests/test_round2.py -k si_confirmation",
        "an SI-group candidate accepted on its Euler residual alone (the finite rescaling "
        "f(c x_S) = f(x) not checked)"),
    Mutation(
        "si_change_best_argument_set", "si_jax/si_groups.py",
        "    return max(float(np.linalg.norm(np.asarray(self.apply(new_leaves, args)) - y)) / n",
        "    return min(float(np.linalg.norm(np.asarray(self.apply(new_leaves, args)) - y)) / n",
        "tests/test_round2.py -k worst_argument_set",
        "the relative change under rescaling taken as the best case over the argument sets "
        "(inputs) instead of the worst"),
    Mutation(
        "si_euler_best_argument_set", "si_jax/si_groups.py",
        "    return max(float(np.linalg.norm(self._jvp(self.leaves, tangents, args))) / n",
        "    return min(float(np.linalg.norm(self._jvp(self.leaves, tangents, args))) / n",
        "tests/test_round2.py -k worst_argument_set",
        "verify_si_groups' Euler residual taken as the best case over the argument sets"),
    Mutation(
        "si_confirm_best_scale", "si_jax/si_groups.py",
        "      value, baseline = max(value, change), max(baseline, reference)\n",
        "      value, baseline = ((min(value, change), min(baseline, reference)) if value\n"
        "                         else (change, reference))\n",
        "tests/test_round2.py -k si_confirmation_rescales",
        "the confirmation's relative change taken as the best case over the scales c"),
    Mutation(
        "si_verify_best_scale", "si_jax/si_groups.py",
        "    value = max(model.change(model.scaled(members, c)) for c in scales)",
        "    value = min(model.change(model.scaled(members, c)) for c in scales)",
        "tests/test_round2.py -k si_confirmation_rescales",
        "verify_si_groups' value taken as the best case over the scales c"),
    Mutation(
        "live_confirms_peaks", "si_jax/analysis/forecast.py",
        '    onsets = [e.x for e in events if e.kind == "onset"]',
        '    onsets = [e.x for e in events if e.kind == "peak"]',
        "tests/test_fig13.py -k live_phases",
        "the live record announces each spike's peak as its confirmed onset"),
    Mutation(
        "schedule_ignores_partial_batch", "si_jax/engine/state.py",
        "per_epoch = num_train // tc.batch_size if tc.drop_last else -(-num_train // tc.batch_size)",  # noqa: E501
        "per_epoch = num_train // tc.batch_size",
        "tests/test_round2.py -k 'schedule_length or sgd_schedule'",
        "a schedule's length T ignores the partial last batch (the schedule ends early)"),
    Mutation(
        "schedule_counts_dropped_batch", "si_jax/engine/state.py",
        "per_epoch = num_train // tc.batch_size if tc.drop_last else -(-num_train // tc.batch_size)",  # noqa: E501
        "per_epoch = -(-num_train // tc.batch_size)",
        "tests/test_round2.py -k schedule_length",
        "with train.drop_last a schedule's length T still counts the dropped partial batch"),
    Mutation(
        "gd_schedule_spans_minibatches", "si_jax/engine/state.py",
        '  if tc.mode == "gd":\n    return tc.epochs\n',
        "",
        "tests/test_round2.py -k 'schedule_length or gd_schedule'",
        "full-batch GD's schedule spans epochs x mini-batches instead of one update an epoch"),
    Mutation(
        "grad_pass_lr_unscheduled", "si_jax/engine/step.py",
        "  lr = optim.step_lr(state.opt_state)\n",
        '  lr = optim.hyperparams(state.opt_state)["learning_rate"]\n',
        "tests/test_round2.py -k grad_pass_effective_lr",
        "the gradient pass logs train_effective_lr from the base lr, not the scheduled one"),
    Mutation(
        "grad_pass_ignores_fixed_effective_lr", "si_jax/engine/step.py",
        "  if ctx.fixed_effective_lr:  # the SI step uses eta_t = eta~ rho_t^2\n"
        "    lr = lr * optim.sq_norm(optim.select(ctx.groups.si_mask(state.params), state.params))\n"  # noqa: E501
        "  out = metrics.full_pass_metrics(",
        "  out = metrics.full_pass_metrics(",
        "tests/test_round2.py -k grad_pass_effective_lr_under_fixed",
        "the gradient pass reads lr as eta under optim.fixed_effective_lr (logs eta~ / rho^2 "
        "instead of eta~)"),
    Mutation(
        "gd_accuracy_mean_as_count", "si_jax/engine/step.py",
        "loss * n, jnp.sum(metrics.correct(logits, y))",
        "loss * n, jnp.mean(metrics.correct(logits, y))",
        "tests/test_round2.py -k gd_step_loss_and_accuracy",
        "full-batch GD accumulates each micro-batch's mean accuracy as if it were a count"),
    Mutation(
        "gd_loss_mean_as_sum", "si_jax/engine/step.py",
        "loss * n, jnp.sum(metrics.correct(logits, y))",
        "loss, jnp.sum(metrics.correct(logits, y))",
        "tests/test_round2.py -k gd_step_loss_and_accuracy",
        "full-batch GD accumulates each micro-batch's mean loss as if it were a sum"),
    Mutation(
        "epoch_invariance_mean", "si_jax/engine/records.py",
        "      out[k] = max(r[k] for r in checked)",
        "      out[k] = float(np.mean([r[k] for r in checked]))",
        "tests/test_round2.py -k 'worst_invariance_residual or worst_checked_residual'",
        "the epoch record holds the mean invariance residual of the checked steps, not the "
        "worst"),
    Mutation(
        "record_policy_ignores_weights", "si_jax/engine/records.py",
        '    if bad and policy == "record" and math.isfinite(rec["weight_norm"]):',
        '    if bad and policy == "record":',
        "tests/test_round2.py -k record_policy",
        "on_nonfinite='record' trains on with non-finite weights"),
    Mutation(
        "resume_keeps_checkpoint_wd_momentum", "si_jax/engine/lifecycle.py",
        "learning_rate=oc.lr, weight_decay=oc.wd, momentum=oc.momentum))",
        "learning_rate=oc.lr))",
        "tests/test_round2.py -k resume_with_config_change",
        "resume with --allow_config_change applies the new lr but keeps the checkpoint's "
        "wd and momentum"),
    Mutation(
        "config_guard_all_train_fields", "si_jax/engine/lifecycle.py",
        'RESUMABLE_CHANGES = ("train.epochs", "checkpoint.")',
        'RESUMABLE_CHANGES = ("train.", "checkpoint.")',
        "tests/test_round2.py -k config_guard",
        "the config guard lets every train.* field change on resume"),
    Mutation(
        "config_guard_without_defaults", "si_jax/engine/lifecycle.py",
        "a, b = {**defaults, **config_lib.flatten(saved)}, config_lib.flatten(current)",
        "a, b = config_lib.flatten(saved), config_lib.flatten(current)",
        "tests/test_round2.py -k missing_field",
        "the config guard reads a field an older config.json lacks as a change (such runs "
        "no longer resume)"),
    Mutation(
        "runs_mesh_min", "si_jax/engine/sharding.py",
        "runs = math.gcd(len(devices), num_runs)",
        "runs = min(len(devices), num_runs)",
        "tests/test_round2.py -k runs_mesh",
        "the runs axis of a family's mesh is min(devices, runs) (a family whose size does "
        "not divide the devices fails)"),
    Mutation(
        "tensorboard_same_second_name", "si_jax/logs/tensorboard_log.py",
        'flush_secs=FLUSH_SECS, filename_suffix=f".{session:06d}")',
        'flush_secs=FLUSH_SECS)',
        "tests/test_round2.py -k event_logs",
        "two TensorBoard sessions started in the same second write the same event file name"),
    # one writer per workdir (this round)
    Mutation(
        "lock_shared_not_exclusive", "si_jax/engine/workdir_lock.py",
        "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
        "fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)",
        "tests/test_one_writer.py -k 'refused_naming or conflict'",
        "two writers share a workdir (the lock is shared, not exclusive)"),
    Mutation(
        "run_lock_reentrant", "si_jax/engine/workdir_lock.py",
        "if self._fd is None and key in _HELD and (self.reentrant or _HELD[key][1]):",
        "if self._fd is None and key in _HELD:",
        "tests/test_one_writer.py -k 'conflict or holds_the_workdir'",
        "a second run in the same process joins the first's lock"),
    Mutation(
        "family_identity_ignores_base", "si_jax/engine/experiment.py",
        'return diffs + lifecycle.config_differences(saved.get("base", {}), current["base"])',
        "return diffs",
        "tests/test_one_writer.py -k another_familys",
        "a family with another base config (wd) reuses a family's folder"),
    Mutation(
        "family_members_unchecked", "si_jax/engine/experiment.py",
        "    lifecycle.check_workdir_config(member_config_, d, allow_config_change=False)",
        "    pass",
        "tests/test_one_writer.py -k single_runs_folder",
        "a vmapped family skips finished members of another config and reports their "
        "results as its own"),
    Mutation(
        "family_goes_on_after_a_signal", "si_jax/engine/experiment.py",
        "      if stop.requested:\n        break",
        "      if False:\n        break",
        "tests/test_one_writer.py -k whole_family",
        "SIGTERM to a sequential family stops one member and trains the next"),
    Mutation(
        "signal_not_passed_to_the_family", "si_jax/engine/lifecycle.py",
        "      outer.requested, outer = True, outer._outer()",
        "      outer = outer._outer()",
        "tests/test_one_writer.py -k whole_family",
        "a run's loop catches the signal but its family never learns of it"),
    Mutation(
        "discard_before_logs_open", "si_jax/engine/lifecycle.py",
        "    run.discard_after = restored[1][\"epoch\"] if restored else 0",
        "    run.ckpt.discard_after(restored[1][\"epoch\"] if restored else 0)",
        "tests/test_one_writer.py -k kept_when",
        "checkpoints are deleted before the run has shown it can go on"),
    Mutation(
        "steps_log_not_checked", "si_jax/engine/lifecycle.py",
        '  _check_file(os.path.join(log_dir, logs.METRICS_FILE), "per-epoch log")',
        "  pass",
        "tests/test_bad_inputs.py -k log_is_a_folder",
        "metrics.jsonl replaced by a folder is found only after checkpoints were discarded"),
    Mutation(
        "zero_norm_trains_on", "si_jax/engine/records.py",
        '    if rec["weight_norm"] == 0.0:',
        "    if False:",
        "tests/test_one_writer.py -k underflows",
        "a weight norm of 0 (effective LR inf) trains on"),
    # the causal detector (this round)
    Mutation(
        "detector_norm_not_required", "si_jax/analysis/detector.py",
        "    if not self._free:\n      self._confirm(rise_at, events)",
        "    if True:\n      self._confirm(rise_at, events)",
        "tests/test_detector.py",
        "with a free norm, a loss bump without a norm jump counts as a destabilization"),
    Mutation(
        "detector_best_case_convergence", "si_jax/analysis/detector.py",
        "window[0].index <= self._last_peak or not all(map(self._converged, window)):",
        "window[0].index <= self._last_peak or not any(map(self._converged, window)):",
        "tests/test_detector.py",
        "phase B needs one converged sample of W instead of all of them (best case, not "
        "worst)"),
    Mutation(
        "detector_jitter_without_trend", "si_jax/analysis/detector.py",
        "    jitter = _median([abs(d - trend) for d in changes])  # about the trend: noise",
        "    jitter = _median([abs(d) for d in changes])  # about the trend: noise",
        "tests/test_detector.py",
        "the rise threshold counts phase B's steady trend as noise"),
    Mutation(
        "detector_peak_is_first_sample", "si_jax/analysis/detector.py",
        "    if self._recent[-1].loss > s[\"peak\"].loss:",
        "    if False:",
        "tests/test_detector.py",
        "the spike's peak is never updated after the onset (phase A starts too early)"),
    # the forecast, seeds, theory and weight normalization (round 3, second session)
    Mutation(
        "forecast_ignores_survival", "si_jax/analysis/forecast.py",
        "    survived = float(dist.cdf(math.log(now)))",
        "    survived = 0.0",
        "tests/test_forecast.py -k survival",
        "the forecast's level distribution is not conditioned on the run not having "
        "destabilized yet"),
    Mutation(
        "forecast_eq3_without_gradient", "si_jax/analysis/forecast.py",
        "      new = decay * sq + eta ** 2 * g ** 2 / sq  # Eq. (3), one step",
        "      new = decay * sq  # Eq. (3), one step",
        "tests/test_forecast.py -k eq3_projection",
        "the projection drops Eq. (3)'s effective-gradient term"),
    Mutation(
        "forecast_ignores_loss_rise", "si_jax/analysis/forecast.py",
        "    dist = self._predictive(rise if math.isfinite(rise) and rise > 0 else 0.0,",
        "    dist = self._predictive(0.0,",
        "tests/test_forecast.py -k climbing",
        "a loss climbing in phase B does not lower the forecast's critical level"),
    Mutation(
        "forecast_floor_not_reset", "si_jax/analysis/forecast.py",
        "        self._floor = min((self._log_loss(r) for i, r in self._recent if i >= e.index),",
        "        self._floor = min((self._floor,),",
        "tests/test_forecast.py -k resets_the_loss_floor",
        "the loss's floor is not reset at an onset: the climb is measured from an earlier "
        "phase B"),
    Mutation(
        "seeds_all_the_same", "si_jax/engine/experiment.py",
        '{**o, "seed": config.seed + k})',
        '{**o, "seed": config.seed})',
        "tests/test_experiment.py -k seeds_are_an_axis",
        "a family's seeds all train with the base seed"),
    Mutation(
        "eq16_printed_coefficient", "si_jax/analysis/theory.py",
        "  return q**t * rho0_sq + lr**2 * (1 - q**t) / (1 - q) * np.asarray(ema_sq)",
        "  return q**t * rho0_sq + lr**2 * (1 - q) / (1 - q**t) * np.asarray(ema_sq)",
        "tests/test_theory.py -k eq15",
        "Eq. (16) with the appendix's printed (inverted) coefficient"),
    Mutation(
        "weight_norm_whole_kernel", "si_jax/models/layers.py",
        "  norms = jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(v.ndim - 1))))",
        "  norms = jnp.sqrt(jnp.sum(jnp.square(v)))",
        "tests/test_models.py -k weight_normalized",
        "weight normalization divides by the whole kernel's norm, not each filter's"),
    Mutation(
        "detector_norm_answer_any_rise", "si_jax/analysis/detector.py",
        "and answer > self.constants.noise * _median(moves)):",
        "and answer > 0):",
        "tests/test_detector.py -k sharply",
        "condition 2' takes any rise of the norm, not a sharp one, as its answer"),
    Mutation(
        "detector_without_norm_confirmation", "si_jax/analysis/detector.py",
        "        self._try_norm_onset(hold, events)",
        "        pass",
        "tests/test_detector.py -k sharply",
        "a rise the loss does not hold never counts, whatever the norm does"),
    # claims over seeds, skipped finished members, the SI-group re-check (round 3, session 5)
    Mutation(
        "claims_seed_means_only", "si_jax/analysis/claims.py",
        "  return len(ranges) >= 2 and all(max(later) < min(earlier)",
        "  return len(ranges) >= 2 and all(np.mean(later) < np.mean(earlier)",
        "tests/test_run_reports.py -k every_seed",
        "'more frequent' compares the seeds' means, not their ranges: overlapping seeds pass"),
    Mutation(
        "claims_first_seed_only", "si_jax/analysis/claims.py",
        "  for seed in range(min(len(found[m.name]) for m in members)):",
        "  for seed in range(1):",
        "tests/test_run_reports.py -k every_seed",
        "'periodic for a middle range' is judged on the first seed only"),
    Mutation(
        "claims_regimes_any_order", "si_jax/analysis/claims.py",
        "  return all(all(rank[a] <= rank[b] for a, b in zip(seed, seed[1:]))",
        "  return all(all(True for a, b in zip(seed, seed[1:]))",
        "tests/test_run_reports.py -k regime_claims",
        "the sphere's regimes may step back as the ELR grows"),
    Mutation(
        "regimes_one_fall_suffices", "si_jax/analysis/regimes.py",
        "  return max(medians[1] / medians[0], medians[2] / medians[1])",
        "  return medians[2] / medians[1]",
        "tests/test_regimes.py",
        "a chaotic band that dropped once, a quarter before the end, is called convergence"),
    Mutation(
        "regimes_rise_at_the_end_ignored", "si_jax/analysis/regimes.py",
        "  if not len(last) or not np.max(last) <= medians[1] or not min(medians) > 0:",
        "  if not len(last) or not min(medians) > 0:",
        "tests/test_regimes.py",
        "a sphere run whose loss climbs back in its last epochs is called convergence"),
    Mutation(
        "regimes_diverged_member_classified", "si_jax/analysis/regimes.py",
        "  if diverged:\n    return",
        "  if False:\n    return",
        "tests/test_regimes.py",
        "a sphere member that stopped on a non-finite loss is classified from its finite "
        "prefix (convergence if it was still falling)"),
    Mutation(
        "generic_bias_without_fan_in", "si_jax/si_groups.py",
        "    return rms * float(np.sqrt(max(fan_in))) if fan_in else rms",
        "    return rms",
        "tests/test_generic_groups.py",
        "a zero bias behind a wide kernel moves by the kernel's RMS only: too little to break "
        "a group that holds only while the bias is zero (GroupNorm after a 64-channel conv)"),
    Mutation(
        "restored_state_left_committed", "si_jax/engine/checkpoint.py",
        "      lambda t, x: x if getattr(t, \"committed\", True) else "
        "jax.device_put(np.asarray(x)),",
        "      lambda t, x: x,",
        "tests/test_checkpoint.py -k uncommitted",
        "a resumed run's state stays committed as orbax restores it: its step compiles again "
        "and misses the fresh run's persistent-cache entries"),
    Mutation(
        "detector_precheck_too_strict", "si_jax/analysis/detector.py",
        "    return samples[t].loss > top and min(s.loss for s in held) >= top + math.log(",
        "    return samples[t].loss > top + 1 and min(s.loss for s in held) >= top + math.log(",
        "tests/test_detector.py",
        "the cheap check before condition 1 demands more than condition 2 does: smaller "
        "rises are never tried"),
    Mutation(
        "tiny_constant_scaled", "si_jax/si_groups.py",
        "    if _rms(x) >= TINY_CONSTANT * scale:  # a norm's scale of 1",
        "    if np.any(x):",
        "tests/test_generic_groups.py -k tiny",
        "a layer scale of 1e-6 is moved by a factor 1 + u, not as a zero: its branch stays "
        "off, the stem alone is reported and the branch's groups are missed"),
    Mutation(
        "near_si_warning_always_within_3x", "si_jax/si_groups.py",
        "            \"depend on it)\" if residual <= rtol else f\"within 3x of rtol={rtol:g}\")",
        "            \"depend on it)\" if residual < 0 else f\"within 3x of rtol={rtol:g}\")",
        "tests/test_si_groups.py -k below_rtol",
        "a tensor whose Euler residual is 200x below rtol is said to be 'within 3x of rtol'"),
    Mutation(
        "no_weak_pair_search", "si_jax/si_groups.py",
        "           for c in _weak_candidates(m_weak, weak_sizes, rtol, max_null_dim)]",
        "           for c in []]",
        "tests/test_generic_groups.py -k barely_read",
        "a kernel+bias pair each barely read (behind an out kernel of 1e-4) is never proposed"),
    Mutation(
        "no_weak_extensions", "si_jax/si_groups.py",
        "  more = [u for unions in grown.values() for u in unions]",
        "  more = []",
        "tests/test_generic_groups.py -k gives_way",
        "{embed} alone, SI only while a residual branch initialized at 1e-4 stays small, "
        "is reported"),
    Mutation(
        "extensions_bound_rtol", "si_jax/si_groups.py",
        "      residual(g), m_weak, margin, max_null_dim)] for g in dict.fromkeys(",
        "      residual(g), m_weak, rtol, max_null_dim)] for g in dict.fromkeys(",
        "tests/test_generic_groups.py -k epsilon_floor",
        "a union must cancel its group's residual to rtol of it: behind LayerNorm's epsilon "
        "1e-5, {kernel} alone stays where its bias is 1.3e-3 of the output's scale"),
    Mutation(
        "extension_columns_above_margin", "si_jax/si_groups.py",
        "np.linalg.norm(sub, axis=0) > margin ** 2)", "np.linalg.norm(sub, axis=0) > margin)",
        "tests/test_generic_groups.py -k convnext_a_few",
        "weak tensors below margin of a group's residual are left out of its unions: a "
        "ConvNeXt's stream group misses a dw bias"),
    Mutation(
        "dense_general_bias_without_fan_in", "si_jax/si_groups.py",
        "  return 1 <= bias.ndim < kernel.ndim and kernel.shape[kernel.ndim - bias.ndim:] == "
        "bias.shape",
        "  return bias.ndim == 1 < kernel.ndim and kernel.shape[-1] == bias.size",
        "tests/test_generic_groups.py -k dense_general",
        "a DenseGeneral bias (heads, features) is not seen as its kernel's: it moves by the "
        "kernel's RMS alone"),
    Mutation(
        "low_precision_kept", "si_jax/si_groups.py",
        "  params = _in_float32(params)\n  at, moved", "  at, moved",
        "tests/test_si_groups.py -k bfloat16",
        "bfloat16 params are refused as 'not floating'"),
    Mutation(
        "warnings_uncapped", "si_jax/si_groups.py",
        "  shown = list(report.degenerate_only.items())[:MAX_WARNED]",
        "  shown = list(report.degenerate_only.items())",
        "tests/test_si_groups.py -k capped",
        "one warning per group that holds only at zero biases: a thousand lines for ten towers"),
    Mutation(
        "stop_gradient_unnoticed", "si_jax/si_groups.py",
        "  read = {i: c for i, c in changes.items() if c > 10 * UNUSED_TOL}",
        "  read = {}",
        "tests/test_generic_groups.py -k stop_gradient",
        "a tensor read under a stop_gradient is reported unused, silently"),
    Mutation(
        "natural_scale_from_sibling_constant", "si_jax/si_groups.py",
        "  if np.any(leaves[i]) or not beside:  # a constant beside constants only: 1",
        "  if not beside:",
        "tests/test_generic_groups.py -k side_by_side",
        "two constant layer scales of 1e-5 in one module take each other's value as their "
        "natural scale and are not moved"),
    Mutation(
        "tiny_vector_ignored", "si_jax/si_groups.py",
        "  return x.ndim <= 1 and _rms(x) < TINY_CONSTANT\n",
        "  return False\n",
        "tests/test_generic_groups.py -k side_by_side",
        "a random layer scale of 1e-6 is not moved: its branch reads as unused"),
    Mutation(
        "tiny_bias_ignored", "si_jax/si_groups.py",
        "    return _rms(x) < TINY_BIAS * scale", "    return False",
        "tests/test_generic_groups.py -k near_zero_bias",
        "a bias 1e-5 of its kernel's output scale stays: {kernel} alone is reported"),
    Mutation(
        "tiny_bias_as_large_as_a_layer_scale", "si_jax/si_groups.py",
        "TINY_BIAS = 1e-3  #", "TINY_BIAS = 0.05  #",
        "tests/test_si_groups.py -k shrunk_weights",
        "torch-initialized biases (1/sqrt(fan-in) of the output's scale) are moved as zeros"),
    Mutation(
        "tiny_constant_one_percent", "si_jax/si_groups.py",
        "TINY_CONSTANT = 0.05  #", "TINY_CONSTANT = 0.01  #",
        "tests/test_generic_groups.py -k side_by_side",
        "layer scales of ~1e-2 stay: truncated stream groups pass within rtol"),
    Mutation(
        "near_si_warning_names_one", "si_jax/si_groups.py",
        "    others = [f\"{'/'.join(p)} ({r:.1e})\" for p, r in report.near_non_si if p != path]",
        "    others = []",
        "tests/test_si_groups.py -k names_every_near",
        "the near-SI warning names only the nearest of several near-SI tensors"),
    Mutation(
        "recount_exports_unfinished_runs", "si_jax/analysis/recount.py",
        "    if planned is not None and series[\"epoch\"][-1] < planned and not os.path.exists(",
        "    if False and not os.path.exists(",
        "tests/test_run_reports.py -k export",
        "the recount counts a run still training as a finished one"),
    Mutation(
        "family_restores_finished_members", "si_jax/engine/experiment.py",
        "is not None or _finished(dirs[i], configs[i]):",
        "is not None:",
        "tests/test_experiment.py -k family_trains_summarises",
        "a family restores its finished members' checkpoints (an older one stops the family)"),
    Mutation(
        "group_check_scales_nothing", "si_jax/engine/step.py",
        "outputs(invariance.scale_paths(params, tuple(paths), scale))",
        "outputs(invariance.scale_paths(params, tuple(paths), 1.0))",
        "tests/test_generic_groups.py -k group_changes",
        "the SI-group re-check rescales by 1: every group seems to hold"),
    Mutation(
        "forecast_prior_of_revision_2", "si_jax/analysis/forecast.py",
        "PRIOR_SPREAD = 0.25", "PRIOR_SPREAD = 0.5",
        "tests/test_forecast.py -k fixed_critical_level",
        "the forecast keeps revision 2's wide prior: late where a run's levels are tight"),
    Mutation(
        "checkpoint_files_not_checked", "si_jax/engine/checkpoint.py",
        "        _on_process_0(_check_files, path)\n", "",
        "tests/test_checkpoint.py -k refused_before_orbax",
        "a damaged checkpoint reaches orbax, whose failed read leaves its threads failing"),
    Mutation(
        "save_room_not_checked", "si_jax/engine/checkpoint.py",
        "      _on_process_0(_check_room, self.directory, _to_saveable(state))\n", "",
        "tests/test_checkpoint.py -k without_room",
        "a save without room starts orbax's writer threads, which fail after the error"),
    Mutation(
        "rescaled_claim_compares_after_onsets", "si_jax/analysis/claims.py",
        "*found[m.name][k].onsets[:1], *found[ref[0].name][k].onsets[:1]])",
        "])",
        "tests/test_run_reports.py -k rescaled_init_claim",
        "Proposition 4's claim compares the runs past their first destabilization"),
    Mutation(
        "rescaled_claim_ignores_reference_onset", "si_jax/analysis/claims.py",
        ", *found[ref[0].name][k].onsets[:1]])", "])",
        "tests/test_run_reports.py -k rescaled_init_claim",
        "Proposition 4's claim compares past the reference's first destabilization"),
    Mutation(
        "rescaled_claim_any_seed", "si_jax/analysis/claims.py",
        "[r.seed for r in m.runs] != [r.seed for r in ref[0].runs]",
        "len(m.runs) != len(ref[0].runs)",
        "tests/test_run_reports.py -k rescaled_init_claim",
        "a rescaled run is compared with another seed of its reference"),
    Mutation(
        "rescaled_claim_any_reference", "si_jax/analysis/claims.py",
        "\n           if round(r.overrides[\"optim.lr\"], 9) == lr_ref]",
        "]",
        "tests/test_run_reports.py -k rescaled_init_claim",
        "a rescaled run is compared with a member of its product at another lr"),
    Mutation(
        "fig9_claim_ignores_lemma2", "si_jax/analysis/theory_claims.py",
        'return criterion, measured, n["enter"] < 50 and n["bounded"]',
        'return criterion, measured, n["enter"] < 50',
        "tests/test_run_reports.py -k theory_claims_fail",
        "Fig. 9's claim holds whether or not Lemma 2's sequences bound x_t"),
    Mutation(
        "seeds_figure_onsets_of_first_seed", "si_jax/plots/family.py",
        "      onsets = run.analyze().onsets\n",
        "      onsets = member.runs[0].analyze().onsets\n",
        "tests/test_figures.py -k recounted",
        "every seed's curve is dotted at the first seed's onsets"),
    Mutation(
        "init_norm_matched_on_lowest", "tools/paper_settings.py",
        "nearest = min(norms, key=lambda n: abs(math.log(n / init)))",
        "nearest = norms[0]",
        "tests/test_paper_settings.py -k nearest_pytorchs_init",
        "the last-layer norm row compares the appendix's init norm with our lowest member only"),
    Mutation(
        "three_phases_ignores_phase_b_cos", "si_jax/analysis/period_claims.py",
        "\n          and b[\"cos\"] < a[\"cos\"])", ")",
        "tests/test_run_reports.py -k period_claims_fail",
        "the three-phase claim holds whether or not phase B's angular updates are the smallest"),
    Mutation(
        "bounds_claim_strict_80", "si_jax/analysis/period_claims.py",
        'lambda n: n["inside"] >= 0.8)', 'lambda n: n["inside"] > 0.8)',
        "tests/test_run_reports.py -k period_claims_fail",
        "Fig. 13's claim refuses a seed with exactly 80% of held-out steps inside"),
    Mutation(
        "period_claim_one_seed", "si_jax/analysis/period_claims.py",
        "return bool(seeds) and all(self.test(n) for n in seeds)",
        "return bool(seeds) and self.test(seeds[0])",
        "tests/test_run_reports.py -k period_claims_fail",
        "a period claim is judged on seed 0 alone"),
    Mutation(
        "minima_apart_includes_warmup", "si_jax/analysis/period_claims.py",
        'p["run"] == reference and p["period"]]', 'p["run"] == reference]',
        "tests/test_run_reports.py -k minima_claim",
        "the minima claim counts the warm-up's minimum among the periods"),
    Mutation(
        "schedules_claim_ignores_last_quarter", "si_jax/analysis/claims.py",
        "      if any(e > last_quarter for e in a.destabilizations) or ", "      if ",
        "tests/test_run_reports.py -k schedules_claim",
        "a decaying schedule that destabilizes late still counts as hiding the periods"),
    Mutation(
        "schedules_claim_constant_need_not_be_late", "si_jax/analysis/claims.py",
        "    if not any(e > last_quarter for e in base.destabilizations):\n      return False\n",
        "",
        "tests/test_run_reports.py -k schedules_claim",
        "the constant schedule need not keep destabilizing to the end"),
    Mutation(
        "period_numbers_phase_b_from_default_detector", "si_jax/analysis/period_steps.py",
        "  p = complete_period(run, period, **constants)\n",
        "  p = complete_period(run, period)\n",
        "tests/test_run_reports.py -k periods_block",
        "a variant's verdict reads phase B of the default detector's period"),
    Mutation(
        "minima_of_warmup_without_phase_a", "si_jax/analysis/minima.py",
        "    if p.a[1] > p.a[0] and p.b[1] > p.b[0]:", "    if p.b[1] > p.b[0]:",
        "tests/test_minima.py -k end_of_phase_a",
        "the causal detector's warm-up, all phase B, gives its first epoch as a minimum"),
    Mutation(
        "forecast_not_truncated_at_equilibrium", "si_jax/analysis/forecast.py",
        "    if self.equilibrium and self.wd is not None and g > 0",
        "    if False and self.wd is not None and g > 0",
        "tests/test_forecast.py -k truncates",
        "revision 4 keeps the mass of levels above Eq. (3)'s equilibrium"),
    Mutation(
        "forecast_angular_always", "si_jax/analysis/forecast.py",
        "    if self.angular and usable and (self._distribution(self.angular_levels)[1]\n"
        "                                    < self._distribution(self.levels)[1]):",
        "    if self.angular and usable:",
        "tests/test_forecast.py -k angular",
        "revision 4 takes the angular level even where the effective LR's levels agree better"),
    Mutation(
        "forecast_angular_g_after_onset", "si_jax/analysis/forecast.py",
        "g = [g for i, g in self._g_history if self._last_onset <= i < onset]",
        "g = [g for i, g in self._g_history if self._last_onset <= i]",
        "tests/test_forecast.py -k angular_level_uses",
        "an onset's angular level reads phase B's g~ after the onset"),
    Mutation(
        "forecast_truncated_below_now", "si_jax/analysis/forecast.py",
        "      if not now > 0 or top > math.log(now):", "      if True:",
        "tests/test_forecast.py -k below_todays",
        "revision 4 truncates below today's effective LR: a zero-width forecast, next sample"),
    Mutation(
        "forecast_angular_g_of_previous_period", "si_jax/analysis/forecast.py",
        "if self._last_onset <= i < onset]", "if i < onset]",
        "tests/test_forecast.py -k of_its_own_period",
        "an onset's angular level reads the previous period's g~"),
    Mutation(
        "forecast_scores_a_resumed_log", "si_jax/analysis/forecast.py",
        "    if x <= previous:", "    if x < previous:",
        "tests/test_forecast.py -k fails_at_the_end",
        "a log that repeats epochs after a resume is scored: a negative period, a spurious "
        "onset"),
    Mutation(
        "forecast_program_stops_at_a_bad_directory", "si_jax/programs/forecast.py",
        "            file=sys.stderr)\n      continue", "            file=sys.stderr)\n      break",
        "tests/test_forecast.py -k fails_at_the_end",
        "one bad directory ends the scoring: the runs after it are never scored"),
    Mutation(
        "forecast_config_sections_unchecked", "si_jax/analysis/phases.py",
        "    if name in (\"data\", \"model\", \"optim\", \"train\") and not",
        "    if False and not",
        "tests/test_forecast.py -k damaged_config",
        "a config whose optim is a string crashes the scorer with an AttributeError"),
    Mutation(
        "forecast_angular_not_widened_by_g", "si_jax/analysis/forecast.py",
        "scale=math.sqrt(spread ** 2 * (1 + 1 / k) + g_variance))",
        "scale=math.sqrt(spread ** 2 * (1 + 1 / k)))",
        "tests/test_forecast.py -k revision_5",
        "revision 5's angular level is not widened by g~'s spread in phase B (revision 4's "
        "intervals: too narrow on the digits)"),
    Mutation(
        "forecast_g_spread_of_all_levels", "si_jax/analysis/forecast.py",
        "      g_variance = self._phase_b_log_g_variance() if self.g_spread else 0.0\n",
        "      pass\n    g_variance = self._phase_b_log_g_variance() if self.g_spread else 0.0\n",
        "tests/test_forecast.py -k revision_5",
        "g~'s spread widens the effective LR's levels too, which do not pass through g~"),
    Mutation(
        "forecast_scores_loss_key_never_logged", "si_jax/analysis/forecast.py",
        "  if steps or not any(options[\"loss_key\"] in r for r in records):",
        "  if steps:",
        "tests/test_forecast.py -k only_loss",
        "a run logging only 'loss' is read for 'train_loss': no destabilization, nothing scored"),
    Mutation(
        "init_compiled_at_level_0", "si_jax/models/__init__.py",
        '{"xla_backend_optimization_level": 2}', '{"xla_backend_optimization_level": 0}',
        "tests/test_models.py -k compiles_faster",
        "the fast init compile moves the initial weights by an ulp (another run than pinned)"),
]

# What a private copy holds (the tests read configs/, experiments/ and benchmarks/).
COPIED = ("si_jax", "tests", "configs", "experiments", "benchmarks", "tools", "pyproject.toml")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")


@dataclasses.dataclass
class Outcome:
  name: str
  status: str        # KILLED, SURVIVED, STALE, ERROR (PASS / FAIL for the baseline)
  detail: str = ""
  seconds: float = 0.0
  tail: str = ""


class Source:
  """The files mutated and copied: the working tree, or a commit (``rev``)."""

  def __init__(self, rev: str | None):
    self.rev = rev

  def read(self, path: str) -> str | None:
    if self.rev is None:
      full = os.path.join(ROOT, path)
      if not os.path.isfile(full):
        return None
      with open(full) as f:
        return f.read()
    out = subprocess.run(["git", "show", f"{self.rev}:{path}"], cwd=ROOT, capture_output=True,
                         text=True)
    return out.stdout if out.returncode == 0 else None

  def exists(self, path: str) -> bool:
    if self.rev is None:
      return os.path.exists(os.path.join(ROOT, path))
    out = subprocess.run(["git", "cat-file", "-e", f"{self.rev}:{path}"], cwd=ROOT,
                         capture_output=True)
    return out.returncode == 0

  def copy_to(self, dest: str) -> None:
    if self.rev is None:
      for name in COPIED:
        src = os.path.join(ROOT, name)
        if os.path.isdir(src):
          shutil.copytree(src, os.path.join(dest, name), ignore=IGNORED)
        elif os.path.exists(src):
          shutil.copy2(src, os.path.join(dest, name))
      return
    present = [n for n in COPIED if self.exists(n)]
    archive = subprocess.run(["git", "archive", "--format=tar", self.rev, *present], cwd=ROOT,
                             capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", dest], input=archive.stdout, check=True)


def stale_reason(m: Mutation, source: Source) -> str:
  """Why the mutation cannot be applied as written ('' if it can)."""
  text = source.read(m.file)
  if text is None:
    return f"{m.file} does not exist"
  count = text.count(m.original)
  if count != 1:
    return f"snippet found {count} times in {m.file} (need exactly 1): {m.original.strip()[:60]!r}"
  missing = [t for t in target_files(m.targets) if not source.exists(t)]
  if missing:
    return f"target file(s) gone: {', '.join(missing)}"
  return ""


def target_files(targets: str) -> list[str]:
  """The test files named in a target string (node ids cut at '::'; -k EXPR skipped)."""
  args, files, skip = shlex.split(targets), [], False
  for a in args:
    if skip:
      skip = False
    elif a in ("-k", "-m"):
      skip = True
    elif not a.startswith("-"):
      files.append(a.split("::")[0])
  return files


def pytest_command(targets: str) -> list[str]:
  return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:xdist", "-rfE",
          *shlex.split(targets)]


def run_tests(copy: str, targets: str, timeout: float, private_cache: bool):
  """(returncode or None on timeout, output, seconds) of the targets run inside ``copy``."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([copy, *filter(None, [env.get("PYTHONPATH")])])
  env["PYTHONDONTWRITEBYTECODE"] = "1"
  if private_cache:
    env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(copy, ".jax_cache")
  # from another directory, so that only PYTHONPATH can lead to the copy
  check = subprocess.run([sys.executable, "-c", "import si_jax; print(si_jax.__file__)"],
                         cwd=os.path.dirname(copy), env=env, capture_output=True, text=True)
  if not check.stdout.strip().startswith(copy + os.sep):
    raise RuntimeError(f"si_jax imports from {check.stdout.strip() or check.stderr[-300:]}, "
                       f"not from the copy {copy}")
  start = time.time()
  proc = subprocess.Popen(pytest_command(targets), cwd=copy, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
  try:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out, time.time() - start
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, 9)  # the whole session: pytest and the runs it started
    out, _ = proc.communicate()
    return None, out, time.time() - start


def first_failure(output: str) -> str:
  """The node id of the first FAILED / ERROR line of pytest's short summary."""
  match = re.search(r"^(FAILED|ERROR) (\S+)", output, re.MULTILINE)
  return match.group(2) if match else "?"


def tail(output: str, lines: int = 15) -> str:
  return "\n".join(output.rstrip().splitlines()[-lines:])


def run_mutation(m: Mutation | None, targets: str, source: Source, args) -> Outcome:
  """One private copy, the mutation applied to it (None: unmutated), the targets run."""
  name = m.name if m else targets
  copy = tempfile.mkdtemp(prefix="si_jax_mutation_")
  try:
    source.copy_to(copy)
    if m:
      path = os.path.join(copy, m.file)
      with open(path) as f:
        text = f.read()
      assert text.count(m.original) == 1, m.name
      with open(path, "w") as f:
        f.write(text.replace(m.original, m.replacement))
    rc, out, seconds = run_tests(copy, targets, args.timeout, args.private_cache)
  except Exception as e:  # a copy or import problem, not a test result
    return Outcome(name, "ERROR", f"{type(e).__name__}: {e}")
  finally:
    if not args.keep:
      shutil.rmtree(copy, ignore_errors=True)
  if rc is None:
    return Outcome(name, "ERROR", f"timeout after {args.timeout:g}s", seconds, tail(out))
  if m is None:
    return Outcome(name, "PASS" if rc == 0 else "FAIL",
                   f"pytest exit {rc}" if rc else "", seconds, tail(out) if rc else "")
  if rc == 0:
    return Outcome(name, "SURVIVED", f"targets: {targets}", seconds)
  if rc == 1:
    return Outcome(name, "KILLED", f"by {first_failure(out)}", seconds)
  why = {2: "interrupted (collection error?)", 4: "usage error", 5: "no test selected"}
  return Outcome(name, "ERROR", f"pytest exit {rc}: {why.get(rc, 'internal error')}",
                 seconds, tail(out))


def report(outcome: Outcome, lock: threading.Lock) -> None:
  with lock:
    timing = f"  ({outcome.seconds:.0f}s)" if outcome.seconds else ""
    print(f"{outcome.status:9s} {outcome.name}  {outcome.detail}{timing}", flush=True)
    if outcome.tail and outcome.status in ("ERROR", "FAIL"):
      print("    " + outcome.tail.replace("\n", "\n    "), flush=True)


def run_all(jobs: list, source: Source, args) -> list[Outcome]:
  """Runs (mutation or None, targets) jobs on ``args.jobs`` workers, reporting each."""
  lock = threading.Lock()
  results: dict[int, Outcome] = {}

  def work(i, job):
    outcome = run_mutation(*job, source, args)
    report(outcome, lock)
    results[i] = outcome

  with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
    for future in [pool.submit(work, i, job) for i, job in enumerate(jobs)]:
      future.result()
  return [results[i] for i in range(len(jobs))]


def markdown(outcomes: list[Outcome]) -> str:
  rows = ["| mutation | result | detail | seconds |", "|---|---|---|---|"]
  for o in outcomes:
    rows.append(f"| `{o.name}` | {o.status} | {o.detail.replace('|', '/')} | "
                f"{o.seconds:.0f} |")
  return "\n".join(rows)


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--list", action="store_true", help="print the mutations and exit")
  parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
  parser.add_argument("--jobs", type=int, default=1, help="mutations run at once (default 1)")
  parser.add_argument("--timeout", type=float, default=900.0,
                      help="seconds per mutation before it counts as ERROR (default 900)")
  parser.add_argument("--baseline", action="store_true",
                      help="run each distinct target set on the unmutated copy instead")
  parser.add_argument("--rev", help="copy this git commit instead of the working tree")
  parser.add_argument("--private_cache", action="store_true",
                      help="a fresh JAX compilation cache per run (default: the shared one)")
  parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
  parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
  args = parser.parse_args(argv)
  if args.jobs < 1:
    parser.error("--jobs must be at least 1")
  return args


def selected(args) -> list[Mutation]:
  names = [m.name for m in MUTATIONS]
  assert len(set(names)) == len(names), "duplicate mutation names"
  if not args.only:
    return list(MUTATIONS)
  unknown = sorted(set(args.only) - set(names))
  if unknown:
    sys.exit(f"unknown mutation(s) {unknown}; --list shows the names")
  return [m for m in MUTATIONS if m.name in args.only]


def main(argv=None) -> int:
  args = parse_args(argv)
  mutations = selected(args)
  if args.list:
    for m in mutations:
      print(f"{m.name}\n    {m.file}: {m.bug}\n    targets: {m.targets}")
    return 0
  source = Source(args.rev)
  start = time.time()
  where = f"commit {args.rev}" if args.rev else f"working tree {ROOT}"
  print(f"{len(mutations)} mutation(s) of the {where}, {args.jobs} job(s)", flush=True)
  if args.baseline:
    target_sets = list(dict.fromkeys(m.targets for m in mutations))
    outcomes = run_all([(None, t) for t in target_sets], source, args)
    failed = sum(o.status != "PASS" for o in outcomes)
    print(f"baseline: {len(outcomes) - failed} target sets pass, {failed} fail "
          f"({time.time() - start:.0f}s)")
    return 1 if failed else 0
  outcomes, runnable = [], []
  for m in mutations:
    reason = stale_reason(m, source)
    if reason:
      outcomes.append(Outcome(m.name, "STALE", reason))
      print(f"{'STALE':9s} {m.name}  {reason}", flush=True)
    else:
      runnable.append(m)
  outcomes += run_all([(m, m.targets) for m in runnable], source, args)
  order = {m.name: i for i, m in enumerate(mutations)}
  outcomes.sort(key=lambda o: order[o.name])
  count = lambda s: sum(o.status == s for o in outcomes)
  summary = f"{count('KILLED')} killed, {count('SURVIVED')} survived, {count('STALE')} stale"
  if count("ERROR"):
    summary += f", {count('ERROR')} error"
  print(f"{summary} ({time.time() - start:.0f}s)")
  if args.markdown:
    print(markdown(outcomes))
  return 0 if count("KILLED") == len(outcomes) else 1


if __name__ == "__main__":
  sys.exit(main())
