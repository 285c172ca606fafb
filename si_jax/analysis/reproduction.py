"""The claim checks of docs/reproduction.md, read from the figure families' summaries.

Each function returns the lines it reports (indented two spaces, for a terminal):
periodic members of a sweep (Figs. 2-3: periodic behavior for a middle range), the
period lengths, Proposition 4's rescaled runs against their reference, the minima's
similarity.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from si_jax.analysis import phases


def load_summary(path: str) -> dict[str, Any] | None:
  """A family's summary.json (None where the family has not been run)."""
  if not os.path.exists(os.path.join(path, "summary.json")):
    return None
  with open(os.path.join(path, "summary.json")) as f:
    return json.load(f)


def relative_differences(a: str, b: str, key: str, scale: float = 1.0,
                         epochs=(1, 2, 5, 10, 20, 40, 50, 60, 100)) -> str:
  """|a / scale - b| / |b| of a per-epoch metric of two runs at some epochs."""
  x, y = phases.load_series(a)[key] / scale, phases.load_series(b)[key]
  n = min(len(x), len(y))  # a rescaled member may stop earlier than its reference
  d = np.abs(x[:n] - y[:n]) / np.abs(y[:n])
  return ", ".join(f"epoch {e}: {d[e - 1]:.1e}" for e in epochs if e <= len(d))


def period_length_lines(s: dict[str, Any]) -> list[str]:
  """The lengths of each member's complete periods after the warm-up."""
  out = []
  for m in s["members"]:
    lengths = [p["length"] for p in m["periods"][1:] if p["complete"]]
    if lengths:
      out.append(f"  {m['label']}: period lengths {lengths}")
  return out


def sweep_claim_lines(s: dict[str, Any]) -> list[str]:
  """The periodic members, whether they are a contiguous middle range, why others are not."""
  is_periodic = [m["periodic"] for m in s["members"]]
  periodic = [i for i, f in enumerate(is_periodic) if f]
  contiguous = periodic and periodic == list(range(periodic[0], periodic[-1] + 1))
  middle = bool(contiguous and periodic[0] > 0 and periodic[-1] < len(is_periodic) - 1)
  out = [f"  periodic members: {[s['members'][i]['label'] for i in periodic]}; contiguous "
         f"middle range: {middle}"]
  return out + [f"  {m['label']}: {m['reason']}" for m in s["members"] if not m["periodic"]]


def rescaled_lines(s: dict[str, Any], path: str) -> list[str]:
  """Proposition 4: each rescaled member against its product's reference run.

  A member p<product>_rescaled_k against p<product>_ratio_1: the relative differences of
  the loss, the weight norm / c and the effective LR.
  """
  out = []
  for m in s["members"]:
    if "_rescaled" not in m["name"]:
      continue
    ref = os.path.join(path, m["name"].split("_rescaled")[0] + "_ratio_1")
    c = m["overrides"]["model.init_scale"]
    for key, scale in (("loss", 1.0), ("weight_norm", c), ("effective_lr", 1.0)):
      name = "weight_norm / c" if key == "weight_norm" else key
      out.append(f"  {m['label']} vs its product's reference run: relative difference of "
                 f"{name}: {relative_differences(os.path.join(path, m['name']), ref, key, scale)}")
  return out


MINIMA_KEYS = ("within_run_cosine", "independent_cosine", "within_run_ensemble_error",
               "independent_ensemble_error")


def minima_lines(r: dict[str, Any]) -> list[str]:
  """The minima similarity's statistics (``similarity.json``) and its single models."""
  out = ["## minima similarity"]
  for k in MINIMA_KEYS:
    v = r[k]
    out.append(f"  {k}: mean {np.mean(v):.4f}, min {np.min(v):.4f}, max {np.max(v):.4f} "
               f"({len(v)})")
  models = [(c["run"], c["period"], c["epoch"], round(c["test_error"], 4))
            for c in r["checkpoints"]]
  return out + [f"  single models: {models}"]
