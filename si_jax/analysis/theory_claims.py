"""The report's theory claims as code: Fig. 9 (appendix A.4) and the toy function (appendix E).

Deterministic computations (``si_jax.analysis.theory``, ``si_jax.analysis.toy``), so each
criterion decides a fixed number; the criteria were written 2026-12-05, after the report
had described these figures by hand (they are not held out: they replace typed verdicts).
``render`` writes the block ``theory_claims`` of docs/reproduction.md; a test renders it
again and compares.
"""

from __future__ import annotations

import numpy as np

from si_jax.analysis import theory, toy

FIG9 = dict(alpha=0.1, a=1.0, b=10.0, x0=40.0, steps=150, seed=0)  # Fig. 9's caption, our x0
TOY_STEPS, TOY_WD = 600, 0.01  # the appendix's w0 (0.01, 1) and lr 1; its wd is not stated


def fig9_sequences(alpha: float, a: float, b: float, x0: float, steps: int, seed: int):
  """What Fig. 9 draws, in this order.

  x_t of Eq. (10) with beta_t ~ U(a, b), Lemma 2's x_{a,t} and x_{b,t}, and Proposition 5's
  interval."""
  betas = np.random.default_rng(seed).uniform(a, b, steps)
  return (theory.beta_sequence(x0, alpha, betas),
          *theory.lemma2_bounding_sequences(x0, alpha, a, b, steps),
          theory.proposition5_interval(alpha, a, b))


def fig9_numbers() -> dict[str, float]:
  """Eq. (10) with beta_t ~ U(a, b) (Fig. 9).

  When x_t enters Proposition 5's interval for good, its range after, and whether Lemma 2's
  sequences bound it at every t."""
  x, xa, xb, band = fig9_sequences(**FIG9)
  inside = (x >= band.low) & (x <= band.high)
  outside = np.flatnonzero(~inside)
  enter = int(outside[-1]) + 1 if len(outside) else 0  # inside from here to the end
  after = x[enter:] if enter < len(x) else np.array([np.nan])  # never settles: NaN
  return {"low": band.low, "high": band.high, "enter": enter,
          "min_after": float(after.min()), "max_after": float(after.max()),
          "bounded": bool(np.all((xa <= x * (1 + 1e-12)) & (x <= xb * (1 + 1e-12)))),
          "steps": FIG9["steps"]}


def _rise(loss: np.ndarray) -> float:
  """How far the loss climbs after its lowest value in ``loss`` (a rise, not the fall)."""
  low = int(np.argmin(loss))
  return float(loss[low:].max() / loss[low])


def toy_numbers() -> dict[str, float]:
  """GD on f(x, y) = x^2 / (x^2 + y^2) without and with weight decay (Fig. 14)."""
  plain = toy.gradient_descent(wd=0.0, steps=TOY_STEPS)
  decayed = toy.gradient_descent(wd=TOY_WD, steps=TOY_STEPS)
  minima = toy.norm_minima(decayed["weight_norm"])
  gaps = np.diff(minima) if len(minima) >= 2 else np.array([0])
  rises = [_rise(decayed["loss"][i:j]) for i, j in zip(minima, minima[1:])] or [1.0]
  return {"final_loss": float(plain["loss"][-1]),
          "elr_rises": int(np.sum(np.diff(plain["effective_lr"]) > 0)),
          "elr_first": float(plain["effective_lr"][0]),
          "elr_last": float(plain["effective_lr"][-1]),
          "minima": len(minima), "gap_min": int(gaps.min()), "gap_max": int(gaps.max()),
          "gap_median": float(np.median(gaps)), "least_rise": float(min(rises))}


def fig9_claim(n: dict) -> tuple[str, str, bool]:
  """(criterion, what was computed, held) for Fig. 9 from ``fig9_numbers``."""
  criterion = ("x_t enters Proposition 5's interval [sqrt(a / alpha), sqrt(b / alpha)] "
               "before t = 50 and stays inside to t = 150, and Lemma 2's x_{a,t} <= x_t <= "
               "x_{b,t} at every t.")
  measured = (f"inside [{n['low']:.3g}, {n['high']:.3g}] from t = {n['enter']} to "
              f"{n['steps']} ({n['min_after']:.2g}-{n['max_after']:.2g}); Lemma 2's sequences "
              f"bound it at every t: {'yes' if n['bounded'] else 'no'}")
  return criterion, measured, n["enter"] < 50 and n["bounded"]


def toy_claim(n: dict) -> tuple[str, str, bool]:
  """(criterion, what was computed, held) for Fig. 14 from ``toy_numbers``."""
  criterion = (f"without weight decay the loss ends below 1e-12 after {TOY_STEPS} steps and "
               "the effective LR never rises; with weight decay "
               f"{TOY_WD:g} the weight norm has at least 10 local minima, spaced within 20% of "
               "their median, and within every period between them the loss climbs at least "
               "10x above its lowest value.")
  measured = (f"no weight decay: loss {n['final_loss']:.2g} at step {TOY_STEPS}, effective LR "
              f"{n['elr_first']:.3g} -> {n['elr_last']:.3g} ({n['elr_rises']} rises); "
              f"weight decay {TOY_WD:g}: {n['minima']} norm minima {n['gap_min']}-{n['gap_max']} "
              f"steps apart, the loss climbing at least {n['least_rise']:.3g}x above its lowest "
              "value in each period")
  held = (n["final_loss"] < 1e-12 and n["elr_rises"] == 0 and n["minima"] >= 10
          and n["gap_max"] <= 1.2 * n["gap_median"] and n["gap_min"] >= 0.8 * n["gap_median"]
          and n["least_rise"] >= 10)
  return criterion, measured, held


CLAIMS = (
    ("A beta-undetermined sequence enters Proposition 5's interval and stays (A.4, Fig. 9)",
     fig9_numbers, fig9_claim),
    ("GD on a scale-invariant function converges without weight decay and is periodic with it "
     "(E, Fig. 14)", toy_numbers, toy_claim),
)


def render() -> str:
  """The block ``theory_claims``: each claim, its criterion, what was computed, the verdict."""
  lines = ["| claim | criterion | computed | verdict |", "| --- | --- | --- | --- |"]
  for statement, numbers, judge in CLAIMS:
    criterion, measured, held = judge(numbers())
    lines.append(f"| {statement} | {criterion} | {measured} | "
                 f"{'**held**' if held else '**not shown**'} |")
  return "\n".join(lines)
