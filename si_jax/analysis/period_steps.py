"""One period of a run logged per step: its phases step by step and Fig. 13's phase B.

Appendix D bounds the effective gradient norm in phase B by envelopes
l(t) = c/(t - t0)^p <= g~_t <= L(t) = C/(t - t0) (Eq. (17)) and so, through Eq. (8), the
cosine distance of adjacent steps. The paper handpicks c and C; fitted on the very steps
they are checked on they would hold by construction, so here they are fitted on the first
``fit_fraction`` of phase B and checked on the rest (``theory.held_out_bounds``).

Period k runs from the k-th destabilization to the next; its phase B is the one
``phases.analyze`` finds on the per-epoch logs (to the epoch before the next
destabilization), and t_valid is its first step.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from si_jax.analysis import phases, theory

PHASE_NAMES = ("C", "A", "B")


@dataclasses.dataclass(frozen=True)
class LoggedRun:
  """A run logged per step: its per-epoch and per-step series and its config (a dict)."""
  name: str
  epochs: dict[str, np.ndarray]
  steps: dict[str, np.ndarray]
  config: dict[str, Any]

  @classmethod
  def read(cls, workdir: str) -> LoggedRun:
    """The run in ``workdir`` (its config.json first: a missing run names that file)."""
    with open(os.path.join(workdir, "config.json")) as f:
      config = json.load(f)
    return cls(workdir, phases.load_series(workdir), phases.load_series(workdir, steps=True),
               config)

  def analyze(self, **constants) -> phases.Analysis:
    """The detector on the per-epoch logs (``constants``: a variant of its constants)."""
    return phases.analyze_with_config(self.epochs, self.config, **constants)


def _logged(run: str | LoggedRun) -> LoggedRun:
  return run if isinstance(run, LoggedRun) else LoggedRun.read(run)


def complete_period(run: LoggedRun, period: int, **constants) -> phases.Period:
  """Period ``period`` of the run's per-epoch logs; ValueError where it is not complete.

  ``constants``: a variant of the detector's."""
  analysis = run.analyze(**constants)
  if not 1 <= period <= len(analysis.onsets) or not analysis.periods[period].complete:
    raise ValueError(f"{run.name}: destabilizations at epochs {analysis.destabilizations}; "
                     f"period {period} needs two of them. Train longer or pick another --period.")
  return analysis.periods[period]


def phase_b_steps(run: LoggedRun, p: phases.Period) -> tuple[int, int, int]:
  """(t0, first step of phase B, last step of phase B) of period ``p``.

  t0 is the first iteration of the period (appendix D): the first step of the epoch in
  which the destabilization starts.
  """
  done = run.epochs["step"].astype(int)  # steps completed at the end of each epoch
  return int(done[p.start - 1]), int(done[p.b[0] - 1]), int(done[p.end - 1] - 1)


def phase_b_analysis(run: str | LoggedRun, period: int = 1, lower_power: float = 1.0,
                     fit_fraction: float = 0.5, **constants) -> dict[str, Any]:
  """Phase B of ``period``: envelopes fitted on its first part, checked on the rest.

  The envelopes are fitted on the first ``fit_fraction`` of phase B's steps; the trends
  (``theory.half_trend``) of the measured 1 - cos and of both bounds run from that part to
  the rest.

  Returns the per-step arrays (t, g, rho, cd, the envelopes low/high, the bounds
  cd_low/cd_high, Eq. (8)'s ``predicted`` 1 - cos from the measured g~, all ``steps``) and
  the numbers (lr, wd, the ``period``, t0, b_start, b_end, ``held``: the ``HeldOutBounds``,
  ``trends``).
  """
  if not 0 < fit_fraction < 1:
    raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction!r}")
  run = _logged(run)
  lr, wd = float(run.config["optim"]["lr"]), float(run.config["optim"]["wd"])
  steps = run.steps
  p = complete_period(run, period, **constants)
  t0, b_start, b_end = phase_b_steps(run, p)
  sel = (steps["step"] >= b_start) & (steps["step"] <= b_end)
  t, g, rho, cd = (steps[k][sel] for k in ("step", "effective_grad_norm", "weight_norm",
                                          "cosine_distance"))
  t_split = b_start + round(fit_fraction * (b_end - b_start + 1))
  held = theory.held_out_bounds(t, g, rho, cd, lr, wd, t0=t0, t_split=t_split,
                                t_valid=b_start, lower_power=lower_power)
  low, high = held.fit(t)
  cd_low, cd_high = theory.cosine_distance_bounds(rho, low, high, lr, wd)
  trends = {name: theory.half_trend(t, v, t_split)
            for name, v in (("1 - cos", cd), ("bound with l(t)", cd_low),
                            ("bound with L(t)", cd_high))}
  return {"lr": lr, "wd": wd, "period": p, "t0": t0, "b_start": b_start, "b_end": b_end,
          "held": held,
          "trends": trends, "t": t, "g": g, "rho": rho, "cd": cd, "low": low, "high": high,
          "cd_low": cd_low, "cd_high": cd_high,
          "predicted": theory.cosine_distance(rho, g, lr, wd), "steps": steps}


def equilibrium_lines(steps, t0: int, b_start: int, b_end: int, lr: float, wd: float,
                      momentum: float = 0.0) -> list[str]:
  """Per phase, the angular update per step against the equilibrium sqrt(2 eta lam / (1 + mu)).

  Phase C is the destabilization epoch that starts at t0, A runs from its end to phase B.
  """
  predicted = theory.equilibrium_angular_update(lr, wd, momentum)
  angle = theory.angular_update(steps["cosine_distance"])
  step, epoch = steps["step"], steps["epoch"]
  spike_epoch = epoch[step == t0][0]
  c_end = int(step[epoch == spike_epoch].max())
  out = []
  for name, lo, hi in (("C", t0, c_end), ("A", c_end + 1, b_start - 1), ("B", b_start, b_end)):
    sel = (step >= lo) & (step <= hi)
    if sel.any():
      ratio = angle[sel] / predicted
      out.append(f"phase {name} (steps {lo}..{hi}): angular update / sqrt(2 eta lam) "
                 f"median {np.median(ratio):.3g}, range {ratio.min():.3g}..{ratio.max():.3g}")
  return out


def phase_b_report(a: dict[str, Any], out: str) -> list[str]:
  """``phase_b_analysis``'s numbers for a terminal (``out``: the figure's path).

  The equilibrium per phase, the envelopes and how often they hold on the held-out steps,
  Eq. (8)'s residual, and whether 1 - cos and the bounds grow in the second part.
  """
  lines = equilibrium_lines(a["steps"], a["t0"], a["b_start"], a["b_end"], a["lr"], a["wd"])
  held, residual = a["held"], np.abs(a["cd"] / a["predicted"] - 1)
  split = int(held.t_split)
  lines += [
      f"{out}: phase B steps {a['b_start']}..{a['b_end']} (t0={a['t0']}); envelopes fitted "
      f"on steps {a['b_start']}..{split - 1} ({held.n_fit}): c={held.fit.c:.4g}, "
      f"C={held.fit.C:.4g}; on the held-out steps {split}..{a['b_end']} ({held.n_check}): "
      f"g~ inside [l, L] at {100 * held.gradient_inside:.1f}%, measured 1 - cos inside "
      f"the bounds at {100 * held.cosine_inside:.1f}%",
      f"Eq. (8) from the measured g~ vs measured 1 - cos: residual median "
      f"{np.median(residual):.2e}, max {residual.max():.2e}"]
  for name, trend in a["trends"].items():
    lines.append(f"{name}: median after / before step {split} = {trend.median_ratio:.3g}; a "
                 f"line through log({name}) over steps {split}..{a['b_end']} rises "
                 f"x{trend.growth:.3g}: {trend.verdict}")
  return lines


def phase_values(steps: dict[str, np.ndarray], p: phases.Period,
                 done: np.ndarray) -> dict[str, dict[str, Any]]:
  """{phase: its numbers} for each phase of period ``p`` that has steps.

  The numbers: its first and last step ``steps``, median ``loss``, ``rho`` and effective LR
  ``elr`` at its first and last step, median 1 - cos ``cos``. ``done``: the steps completed
  before each epoch index."""
  out = {}
  for name, (a, b) in zip(PHASE_NAMES, (p.c, p.a, p.b)):
    m = (steps["step"] >= done[a]) & (steps["step"] < done[b])
    if m.any():
      rho, elr = steps["weight_norm"][m], steps["effective_lr"][m]
      out[name] = {"steps": (int(done[a]), int(done[b] - 1)),
                   "loss": float(np.median(steps["loss"][m])),
                   "rho": (float(rho[0]), float(rho[-1])), "elr": (float(elr[0]), float(elr[-1])),
                   "cos": float(np.median(steps["cosine_distance"][m]))}
  return out


def phase_lines(steps: dict[str, np.ndarray], p: phases.Period, done: np.ndarray) -> list[str]:
  """Each phase of period ``p``: its steps, median loss, rho, effective LR, median 1 - cos.

  ``done``: the steps completed before each epoch index.
  """
  return [f"phase {name}: steps {v['steps'][0]}..{v['steps'][1]}: loss {v['loss']:.3g} "
          f"(median), rho {v['rho'][0]:.3g} -> {v['rho'][1]:.3g}, effective LR "
          f"{v['elr'][0]:.3g} -> {v['elr'][1]:.3g}, median 1-cos {v['cos']:.3g}"
          for name, v in phase_values(steps, p, done).items()]


def period_numbers(run: str | LoggedRun, period: int = 1, lower_power: float = 1.0,
                   **constants) -> dict[str, Any]:
  """What the report reads of ``period``: its epochs, ``phase_values`` and Fig. 13's numbers.

  Fig. 13's: the envelopes' ``c``, ``C`` fitted on the first half of phase B, the share of
  the second half's steps with g~ inside them (``inside``, of ``n_check``), 1 - cos's
  ``cos_ratio`` (median of the second half over the first) and the ``rise`` of 1 - cos and
  of both bounds across the second half (``theory.half_trend``). ValueError where the run
  has no complete ``period``. ``constants``: a variant of the detector's.
  """
  run = _logged(run)
  a = phase_b_analysis(run, period, lower_power, **constants)
  p = a["period"]
  done = np.r_[0, run.epochs["step"].astype(int)]
  held = a["held"]
  return {"epochs": (float(p.stats["x_start"]), float(p.stats["x_end"])),
          "phases": phase_values(run.steps, p, done),
          "t0": a["t0"], "b": (a["b_start"], a["b_end"]), "split": int(held.t_split),
          "c": float(held.fit.c), "C": float(held.fit.C), "inside": float(held.gradient_inside),
          "n_check": int(held.n_check), "cos_ratio": float(a["trends"]["1 - cos"].median_ratio),
          "rise": [float(t.growth) for t in a["trends"].values()]}
