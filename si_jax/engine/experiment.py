"""Experiment families: one base run config plus named members, trained and analysed together.

The ``experiment`` config section and the workdir layout: docs/design_notes.md."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
from typing import Any

import jax
import ml_collections
import numpy as np

from si_jax import config as config_lib
from si_jax import logs, validate
from si_jax.analysis import forecast, phases, regimes
from si_jax.engine import lifecycle, sweep, train
from si_jax.engine.records import TrainingDiverged
from si_jax.engine.workdir_lock import WorkdirLock

log = logging.getLogger(__name__)

FIGURES = ("sweep", "product", "gd", "similarity")


def add_member(config: ml_collections.ConfigDict, name: str, label: str,
               overrides: dict[str, Any] | None = None) -> None:
  """Appends a member (``overrides``: dotted field -> value); ValueError for a bad ``name``."""
  if not name.isidentifier():
    raise ValueError(f"member names must be identifiers (command-line overrides), got {name!r}")
  nested = ml_collections.ConfigDict()
  for key, value in (overrides or {}).items():
    *sections, field = key.split(".")
    node = nested
    for s in sections:
      if s not in node:
        node[s] = ml_collections.ConfigDict()
      node = node[s]
    node[field] = value
  config.experiment.members[name] = ml_collections.ConfigDict(
      {"label": label, "overrides": nested})
  config.experiment.order = tuple(config.experiment.order) + (name,)


def experiment_config(base: ml_collections.ConfigDict, name: str,
                      figure: str = "sweep") -> ml_collections.ConfigDict:
  """``base`` with an empty ``experiment`` section."""
  if figure not in FIGURES:
    raise ValueError(f"experiment.figure must be one of {FIGURES}, got {figure!r}")
  base.experiment = ml_collections.ConfigDict(
      {"name": name, "figure": figure, "members": ml_collections.ConfigDict(), "order": (),
       "seeds": 1})
  return base


def run_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The base run config (the experiment section removed)."""
  c = config.copy_and_resolve_references()
  if "experiment" in c:
    with c.unlocked():
      del c["experiment"]
  return c


def member_overrides(config: ml_collections.ConfigDict) -> list[tuple[str, str, dict[str, Any]]]:
  """[(name, label, {dotted field: value})] in the config's order.

  With ``experiment.seeds`` = k > 1, member NAME becomes runs NAME_s0 .. NAME_s{k-1}, seeds
  config.seed + 0 .. k - 1.

  Raises:
    ValueError: no members, or ``experiment.seeds`` not an integer in [1, 100]."""
  if "experiment" not in config or not len(config.experiment.members):
    raise ValueError("an experiment config needs experiment.members "
                     "(see si_jax/engine/experiment.py)")
  members = config.experiment.members
  order = [n for n in config.experiment.get("order", ()) if n in members]
  names = order + sorted(set(members.keys()) - set(order))
  listed = [(n, members[n].label, config_lib.flatten(members[n].overrides.to_dict()))
            for n in names]
  seeds = config.experiment.get("seeds", 1)
  if not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= 100:
    raise ValueError(f"experiment.seeds must be an integer in [1, 100], got {seeds!r}")
  if seeds == 1:
    return listed
  return [(f"{n}_s{k}", f"{label}, seed {config.seed + k}", {**o, "seed": config.seed + k})
          for n, label, o in listed for k in range(seeds)]


def seed_groups(config: ml_collections.ConfigDict) -> dict[str, list[str]]:
  """{member: its runs' names}: one run each, or ``experiment.seeds`` runs named NAME_sK."""
  seeds = config.experiment.get("seeds", 1)
  names = [n for n, _, _ in member_overrides(config)]
  if seeds == 1:
    return {n: [n] for n in names}
  return {n[:n.rindex("_s")]: names[i:i + seeds] for i, n in enumerate(names) if i % seeds == 0}


def member_config(config: ml_collections.ConfigDict, overrides: dict[str, Any]):
  """The run config of one member; an unknown field is an error naming it."""
  c = run_config(config)
  config_lib.set_fields(c, overrides)
  return c


def _vmap_pays(config) -> bool:
  """Whether one vmapped program beats sequential runs (docs/design_notes.md)."""
  if jax.default_backend() != "cpu":
    return True
  return config.model.get("conv_impl") == "patches"


def _vmappable(overrides: list[dict[str, Any]]) -> bool:
  return all(set(o) <= set(sweep.SWEEPABLE) for o in overrides)


class FamilyStopped(RuntimeError):
  """A signal stopped a family before every member finished: nothing was summarized."""


def family_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What ``WORKDIR/family.json`` records: the name, members' overrides, base config."""
  return {"experiment": config.experiment.name,
          "members": [{"name": n, "overrides": o} for n, _, o in member_overrides(config)],
          "base": json.loads(run_config(config).to_json_best_effort())}


def identity_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """The fields in which two family identities differ (resumable fields excepted).

  A family may grow: members appended after the saved ones (e.g. a second stage) are no
  difference; a saved member removed, renamed or reordered is."""
  diffs = []
  if saved.get("experiment") != current["experiment"]:
    diffs.append(f"experiment.name: {saved.get('experiment')!r} -> {current['experiment']!r}")
  old = {m["name"]: m["overrides"] for m in saved.get("members", [])}
  new = {m["name"]: m["overrides"] for m in current["members"]}
  if list(new)[:len(old)] != list(old):
    diffs.append(f"members: {list(old)} -> {list(new)}")
  for name in (n for n in new if n in old and old[n] != new[n]):
    keys = sorted(set(old[name]) | set(new[name]))
    diffs += [f"{name}.{k}: {old[name].get(k, '<absent>')!r} -> {new[name].get(k, '<absent>')!r}"
              for k in keys if old[name].get(k, "<absent>") != new[name].get(k, "<absent>")]
  return diffs + lifecycle.config_differences(saved.get("base", {}), current["base"])


def check_family_workdir(config: ml_collections.ConfigDict, workdir: str,
                         configs: list, dirs: list[str]) -> None:
  """ValueError if ``workdir`` holds a single run, another family, or members' other runs."""
  for name in (lifecycle.CONFIG_FILE, logs.METRICS_FILE, "checkpoints"):
    if os.path.lexists(os.path.join(workdir, name)):
      raise ValueError(f"{workdir} holds a single run ({name}), not a family: use another "
                       "--workdir for the family")
  _check_older_family(config, workdir)
  path = os.path.join(workdir, lifecycle.FAMILY_FILE)
  if os.path.lexists(path):
    try:
      with open(path) as f:
        saved = json.load(f)
      diffs = identity_differences(saved, family_identity(config))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      raise ValueError(f"{path} is not the JSON this program writes ({type(e).__name__}: "
                       f"{e}): restore it, or use another --workdir") from None
    if diffs:
      raise ValueError(f"{workdir} holds another family ({'; '.join(diffs)}): use another "
                       "--workdir")
  for member_config_, d in zip(configs, dirs):
    if os.path.lexists(d) and not os.path.isdir(d):
      raise ValueError(f"{d} (a member's folder) is not a directory: move it aside")
    lifecycle.check_run_paths(d, d)
    lifecycle.check_workdir_config(member_config_, d, allow_config_change=False)


def _check_older_family(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses another family known only by its summary.json (written before family.json)."""
  path = os.path.join(workdir, "summary.json")
  if os.path.exists(os.path.join(workdir, lifecycle.FAMILY_FILE)) or not os.path.isfile(path):
    return
  try:
    with open(path) as f:
      saved = json.load(f)
    name, members = saved["experiment"], [m["name"] for m in saved["members"]]
  except (OSError, ValueError, KeyError, TypeError):
    return  # not a summary this program wrote: the member checks below still apply
  current = [n for n, _, _ in member_overrides(config)]
  if name != config.experiment.name or members != current:
    raise ValueError(f"{workdir} holds another family (its summary.json: {name!r} with "
                     f"members {members}; now {config.experiment.name!r} with {current}): "
                     "use another --workdir")


def member_dirs(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """Each member's run folder, ``WORKDIR/<member name>``, in the config's order."""
  return [os.path.join(workdir, name) for name, _, _ in member_overrides(config)]


def _vmapped_configs(config: ml_collections.ConfigDict) -> list:
  """The members' run configs as a vmapped family records them (one data order)."""
  base = run_config(config)
  return [sweep.member_config(base, o) for _, _, o in member_overrides(config)]


def check_family(config: ml_collections.ConfigDict, workdir: str) -> None:
  """``check_family_workdir`` for the config as it stands (``--figures_only``); reads only."""
  configs = _member_configs(config)
  dirs = member_dirs(config, workdir)
  try:
    check_family_workdir(config, workdir, configs, dirs)
  except ValueError:  # trained vmapped, its members record the family's data order
    if not _vmappable([o for _, _, o in member_overrides(config)]):
      raise
    check_family_workdir(config, workdir, _vmapped_configs(config), dirs)


def _member_configs(config: ml_collections.ConfigDict) -> list:
  """The validated run config of every member; ValueError naming the member."""
  configs = []
  for name, _, o in member_overrides(config):
    try:
      configs.append(member_config(config, o))
      validate.validate_config(configs[-1])
    except (ValueError, TypeError) as e:  # TypeError: ml_collections' type check
      raise ValueError(f"member {name!r}: {e}") from None
  return configs


def _resume_hint() -> str:
  return f"resume with: python {shlex.join(sys.argv)}"


def _train_members(config, workdir: str, configs: list, use_vmap: bool, progress: bool,
                   stop: lifecycle.Preemption) -> None:
  """Trains the unfinished members; FamilyStopped if a signal stopped them."""
  members = member_overrides(config)
  dirs = member_dirs(config, workdir)
  if use_vmap:
    todo = [i for i, d in enumerate(dirs) if not _finished(d, configs[i])]
    if todo:
      sweep.train_sweep(run_config(config), [members[i][2] for i in todo], workdir,
                        progress=progress, names=[members[i][0] for i in todo])
  else:
    for i, (name, label, _) in enumerate(members):
      if stop.requested:
        break
      if lifecycle.diverged_message(dirs[i]) is not None or _finished(dirs[i], configs[i]):
        continue  # it diverged in an earlier attempt, or its logs are complete: as vmapped
      print(f"[{i + 1}/{len(members)}] {config.experiment.name}: {label} -> {dirs[i]}",
            file=sys.stderr, flush=True)
      try:
        train.train_and_evaluate(configs[i], dirs[i], progress=progress)
      except TrainingDiverged as e:  # the member is marked; the family goes on
        lifecycle.write_atomically(os.path.join(dirs[i], logs.DIVERGED_FILE),
                                   json.dumps({"message": str(e)}))
        log.warning("member %r diverged (%s); the others go on", name, e)
  unfinished = [name for (name, _, _), d, c in zip(members, dirs, configs)
                if not _finished(d, c) and not lifecycle.diverged_message(d)]
  if stop.requested and unfinished:
    raise FamilyStopped(f"stopped by a signal: members {', '.join(unfinished)} are "
                        f"unfinished and no summary or figure was written; {_resume_hint()}")


def run_family(config: ml_collections.ConfigDict, workdir: str, vmap: str = "auto",
               progress: bool = True, analysis_kwargs: dict | None = None) -> dict[str, Any]:
  """Trains (or resumes, or skips finished) members, analyses them, writes summary.json.

  Holds the family's lock. ``vmap``: 'yes', 'no' or 'auto'; ``analysis_kwargs`` go to
  ``phases.analyze_run``. Returns ``summarize``'s.

  Raises:
    ValueError: a bad member, another family or run in ``workdir``, a busy workdir.
    FamilyStopped: SIGTERM/SIGINT stopped it before every member finished."""
  if vmap not in ("auto", "yes", "no"):
    raise ValueError(f"vmap must be auto, yes or no, got {vmap!r}")
  configs = _member_configs(config)
  overrides = [o for _, _, o in member_overrides(config)]
  # one vmapped program needs members that differ only in values the state holds
  use_vmap = {"yes": True, "no": False, "auto": _vmap_pays(configs[0])}[vmap] and _vmappable(
      overrides)
  if vmap == "yes" and not _vmappable(overrides):
    raise ValueError(f"--vmap=yes needs members that differ only in {sweep.SWEEPABLE}")
  lifecycle.make_workdir(workdir)
  dirs = member_dirs(config, workdir)
  with contextlib.ExitStack() as held:
    held.enter_context(family_lock(workdir))
    stop = held.enter_context(lifecycle.Preemption())
    check_family_workdir(config, workdir, _vmapped_configs(config) if use_vmap else configs,
                         dirs)
    for d in dirs:  # every member is the family's (its runs join these locks)
      lifecycle.make_workdir(d)
      held.enter_context(family_lock(d))
    lifecycle.write_atomically(os.path.join(workdir, lifecycle.FAMILY_FILE),
                               json.dumps(family_identity(config), indent=1))
    _train_members(config, workdir, configs, use_vmap, progress, stop)
    summary = summarize(config, workdir, **(analysis_kwargs or {}))
    lifecycle.write_atomically(os.path.join(workdir, "summary.json"),
                               json.dumps(summary, indent=1))
  return summary


def family_lock(workdir: str) -> WorkdirLock:
  """The lock of a family's top folder (re-entrant in this process)."""
  return WorkdirLock(workdir, "family", reentrant=True)


def _finished(workdir: str, config) -> bool:
  try:
    records = logs.read_run(workdir)
  except FileNotFoundError:
    return False
  return bool(records) and records[-1].get("epoch") == config.train.epochs


def summarize(config: ml_collections.ConfigDict, workdir: str,
              **analysis_kwargs) -> dict[str, Any]:
  """Per member: label, overrides, epochs logged and planned, phase analysis, regime."""
  out = {"experiment": config.experiment.name, "members": []}
  for name, label, overrides in member_overrides(config):
    run_dir = os.path.join(workdir, name)
    member_cfg = member_config(config, overrides)
    planned = member_cfg.train.epochs
    series = phases.load_series(run_dir)
    head = {"name": name, "label": label, "overrides": overrides, "planned_epochs": planned}
    if "epoch" not in series:  # diverged (or stopped) before its first epoch record
      out["members"].append({**head, "epochs": 0, "final": {}, **_no_epoch(run_dir),
                             "finished": lifecycle.diverged_message(run_dir) is not None})
      continue
    analysis = phases.analyze_run(run_dir, series=series, **analysis_kwargs)
    final = {k: float(series[k][-1]) for k in ("train_loss", "test_error") if k in series}
    epochs = int(series["epoch"][-1])
    diverged = lifecycle.diverged_message(run_dir)
    finished = epochs >= planned or diverged is not None
    out["members"].append({**head, "epochs": epochs, "finished": finished, "final": final,
                           **analysis.summary(),
                           **regimes.summary_fields(series, member_cfg, diverged),
                           "forecast": forecast.summary(forecast.score_workdir(run_dir))})
  if config.experiment.get("seeds", 1) > 1:
    out["seeds"] = seed_spread(config, out["members"])
  return out


def seed_spread(config: ml_collections.ConfigDict,
                members: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """Per member over its seeds: onset counts and mean periods, each with its mean and range.

  Keys: 'runs', 'n_destabilizations', 'count_mean', 'count_range', 'mean_period' (NaN: < 2
  onsets), 'period_mean', 'period_range', 'periodic' (how many seeds)."""
  by_name = {m["name"]: m for m in members}
  out = {}
  for member, runs in seed_groups(config).items():
    rows = [by_name[r] for r in runs if r in by_name]
    counts = [r["n_destabilizations"] for r in rows]
    periods = [r["mean_period"] for r in rows]
    finite = [p for p in periods if p == p]
    out[member] = {
        "runs": runs, "n_destabilizations": counts,
        "count_mean": float(np.mean(counts)) if counts else float("nan"),
        "count_range": [min(counts), max(counts)] if counts else [],
        "mean_period": periods,
        "period_mean": float(np.mean(finite)) if finite else float("nan"),
        "period_range": [min(finite), max(finite)] if finite else [],
        "periodic": sum(bool(r["periodic"]) for r in rows)}
  return out


def _no_epoch(run_dir: str) -> dict[str, Any]:
  """The summary of a member without an epoch record: why, and no periods."""
  message = lifecycle.diverged_message(run_dir)
  reason = "no epoch logged yet" if message is None else (
      f"diverged before its first epoch: {message}")
  return {"periodic": False, "reason": reason, "destabilizations": [], "n_destabilizations": 0,
          "mean_period": float("nan"), "periods": []}


def table(summary: dict[str, Any]) -> str:
  """A Markdown table of the members' periods."""
  rows = ["| member | destabilizations | mean period (epochs) | min train loss | min test error |",
          "| --- | --- | --- | --- | --- |"]
  for m in summary["members"]:
    periods = m["periods"]
    min_loss = min((p["min_loss"] for p in periods), default=float("nan"))
    min_err = min((p.get("min_test_error", float("nan")) for p in periods), default=float("nan"))
    if m["periodic"]:
      spikes = ", ".join(f"{e:g}" for e in m["destabilizations"])
    elif m["destabilizations"]:
      spikes = f"{', '.join(f'{e:g}' for e in m['destabilizations'])} (too few: not periodic)"
    elif "never converged" in m["reason"]:
      spikes = "none: the loss never converged"
    elif m["epochs"] and m["reason"].startswith("the loss converged"):
      spikes = "none: converged, never destabilized"
    else:  # no epoch yet, too few finite values, ...: the analysis' own words
      spikes = f"none: {m['reason']}"
    if not m.get("finished", True):
      spikes += f" (unfinished: {m['epochs']} of {m['planned_epochs']} epochs)"
    rows.append(f"| {m['label']} | {spikes} | {m['mean_period']:.3g} | {min_loss:.3g} "
                f"| {min_err:.3g} |")
  if "seeds" in summary:
    rows += ["", "| member | seeds periodic | destabilizations (mean, range) | mean period "
             "(mean, range) |", "| --- | --- | --- | --- |"]
    for name, g in summary["seeds"].items():
      span = lambda r: f"{r[0]:.3g}-{r[1]:.3g}" if r else "-"
      rows.append(f"| {name} | {g['periodic']} of {len(g['runs'])} | {g['count_mean']:.3g} "
                  f"({span(g['count_range'])}) | {g['period_mean']:.3g} "
                  f"({span(g['period_range'])}) |")
  return "\n".join(rows)


SCALES = ("cpu", "cifar_cpu", "paper", "cifar100", "resnet", "resnet_cifar100")


def scaled_base(arg: str | None, allowed: tuple[str, ...] = SCALES,
                ) -> tuple[ml_collections.ConfigDict, str]:
  """(base run config, scale) for a config-file argument ('' means 'paper', appendix B).

  The scales (``SCALES``): docs/design_notes.md. Raises ValueError for one not in ``allowed``."""
  from si_jax.config import base_config
  scale = arg or "paper"
  if scale not in allowed:
    raise ValueError(f"unknown config variant {arg!r}; this experiment has {allowed}")
  config = base_config()
  config.checkpoint.every_epochs = 50
  if scale == "cpu":
    config.model.width = 8
    config.data.name, config.data.source = "digits", "embedded"
    config.optim.lr, config.optim.wd = 0.1, 0.03
    config.train.epochs = 300
    return config, scale
  if scale == "cifar_cpu":
    config.model.width = 8
    config.data.name, config.data.source = "cifar10", "archive"
    config.data.train_size, config.data.test_size = 2048, 2000
    config.optim.lr, config.optim.wd = 0.1, 0.01
    config.train.epochs = 120
    return config, scale
  config.model.width = 32
  config.optim.lr, config.optim.wd = 0.01, 0.001
  config.train.epochs = 1001
  if scale in ("cifar100", "resnet_cifar100"):
    config.data.name = "cifar100"
  if scale == "cifar100":
    config.model.width, config.model.last_layer_norm = 64, 20.0
  if scale.startswith("resnet"):
    config.model.name, config.model.width = "resnet18_si", 64
  return config, scale
