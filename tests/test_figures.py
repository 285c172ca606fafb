"""The figures read as the paper's: phases shaded (only for a periodic run) and keyed,
onsets marked and keyed, theory bands hatched in the run's colour and keyed once, the
phase diagram coloured by epoch with labelled ticks, no empty panel.

Drawn from synthetic per-epoch series whose destabilizations are placed by hand, and
inspected as matplotlib objects (patches, lines, legends, tick labels), not as pixels.
"""

import os
import types

import matplotlib
import numpy as np
import pytest

from si_jax.analysis import claims, phases, recount
from si_jax.plots import family, period_steps, plotting

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ONSETS = (40, 70, 100, 130)  # 0-based epoch indices; logged epochs are 1-based
EPOCH_TITLES = ("Train loss", "Test error", "Weight norm")


def run_series(onsets=ONSETS, n=150, lr=0.1, seed=0, test_error=True):
  """Per-epoch traces of a run destabilizing at the epoch indices ``onsets``: the loss
  falls 15% per epoch from 2 to a floor of 1e-3, is 0.1 at an onset, 1 the epoch after
  and falls 40% per epoch from there (0.03 decades of log-normal noise); rho shrinks
  1.5% per epoch and grows 12% in each of the two epochs after an onset; the effective
  gradient norm follows the loss."""
  rng = np.random.default_rng(seed)
  loss, rho = np.empty(n), np.empty(n)
  r, since = 3.0, None
  for i in range(n):
    since = 0 if i in onsets else None if since is None else since + 1
    level = 2.0 * 0.85**i if since is None else 0.1 if since == 0 else 0.6 ** (since - 1)
    loss[i] = max(level, 1e-3) * 10 ** (0.03 * rng.standard_normal())
    r *= 1.12 if since in (1, 2) else 0.985
    rho[i] = r
  s = {"epoch": np.arange(1.0, n + 1), "train_loss": loss, "loss": loss, "weight_norm": rho,
       "effective_lr": lr / rho**2, "effective_grad_norm": 0.3 + 3 * np.sqrt(loss)}
  if test_error:
    s["test_error"] = 0.1 + 0.2 * np.minimum(loss, 1)
  return s


def analyze(s):
  return phases.analyze(s, reference_loss=np.log(10))


def legend_labels(fig) -> list[str]:
  legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
  return [t.get_text() for legend in legends for t in legend.get_texts()]


def panels(fig) -> dict:
  """The figure's axes by title (colorbars left out)."""
  return {ax.get_title(): ax for ax in fig.axes if ax.get_label() != "<colorbar>"}


def rgb(color) -> tuple:
  return matplotlib.colors.to_rgb(color)


def patch_x(patch) -> tuple[float, float]:
  """(left, right) of a span in data coordinates."""
  x = patch.get_patch_transform().transform(patch.get_path().vertices)[:, 0]
  return float(x.min()), float(x.max())


def phase_spans(ax) -> list[tuple[str, float, float]]:
  """(phase, left, right) of every patch of ``ax`` filled in a phase colour, by left."""
  names = {rgb(c): p for p, c in plotting.PHASE_COLORS.items()}
  spans = [(names[tuple(p.get_facecolor()[:3])], *patch_x(p)) for p in ax.patches
           if p.get_facecolor()[3] > 0 and tuple(p.get_facecolor()[:3]) in names]
  return sorted(spans, key=lambda s: s[1])


def onset_lines(ax) -> list[float]:
  """x of the vertical dotted lines across ``ax``."""
  return sorted(float(line.get_xdata()[0]) for line in ax.lines
                if line.get_linestyle() == ":" and len(set(line.get_xdata())) == 1)


def onset_markers(ax) -> list:
  return [line for line in ax.lines if line.get_marker() == plotting.ONSET_MARKER["marker"]]


def test_a_periodic_run_has_its_phases_shaded_and_keyed():
  s = run_series()
  a = analyze(s)
  assert a.periodic and a.onsets == list(ONSETS)
  fig = plotting.figure_four_panels([s], ["run"], [a])
  assert {"phase A", "phase B", "phase C", plotting.ONSET_LABEL} <= set(legend_labels(fig))
  axes = panels(fig)
  epochs = [o + 1.0 for o in ONSETS]
  for title in EPOCH_TITLES:
    spans = phase_spans(axes[title])
    # the warm-up has no phase C; every later period is C, A, B; they tile the run
    assert [p for p, _, _ in spans] == ["A", "B"] + ["C", "A", "B"] * len(ONSETS)
    assert [left for p, left, _ in spans if p == "C"] == epochs
    assert spans[0][1] == 1 and spans[-1][2] == 150
    assert all(right == next_left for (_, _, right), (_, next_left, _) in zip(spans, spans[1:]))
    assert onset_lines(axes[title]) == epochs
  assert phase_spans(axes["Effective grad norm vs effective LR"]) == []
  plt.close(fig)


@pytest.mark.parametrize("onsets", [(100,), ()])
def test_a_run_without_periodic_behavior_is_not_shaded(onsets):
  s = run_series(onsets=onsets)
  a = analyze(s)
  assert not a.periodic and a.onsets == list(onsets)
  fig = plotting.figure_four_panels([s], ["run"], [a])
  assert all(phase_spans(ax) == [] and onset_lines(ax) == [] for ax in fig.axes)
  labels = legend_labels(fig)
  assert not any(label.startswith("phase") for label in labels)
  assert (plotting.ONSET_LABEL in labels) == bool(onsets)
  for title, key in zip(EPOCH_TITLES, ("train_loss", "test_error", "weight_norm")):
    marks = onset_markers(panels(fig)[title])
    assert [(list(m.get_xdata()), list(m.get_ydata())) for m in marks] == (
        [([101.0], [s[key][100]])] if onsets else [])
  plt.close(fig)
  _, ax = plt.subplots()
  assert plotting.shade_phases(ax, a) is False and not ax.patches and not ax.lines
  plt.close("all")


def test_several_runs_mark_onsets_on_their_own_curves():
  runs = [run_series(), run_series(onsets=(50, 90, 120), seed=1)]
  analyses = [analyze(s) for s in runs]
  assert analyses[0].onsets == list(ONSETS)
  assert np.abs(np.subtract(analyses[1].onsets, [50, 90, 120])).max() <= 1  # noise: 119
  fig = plotting.figure_four_panels(runs, ["a", "b"], analyses)
  labels = legend_labels(fig)
  assert plotting.ONSET_LABEL in labels and "phase A" not in labels
  assert {"a", "b"} <= set(labels)
  loss_panel = panels(fig)["Train loss"]
  assert all(phase_spans(ax) == [] for ax in fig.axes)
  marks = onset_markers(loss_panel)
  assert len(marks) == 2
  for k, (s, a, m) in enumerate(zip(runs, analyses, marks)):
    assert rgb(m.get_color()) == rgb(plotting.run_style(k)[0])
    np.testing.assert_array_equal(m.get_xdata(), np.asarray(a.onsets) + 1.0)
    np.testing.assert_array_equal(m.get_ydata(), s["train_loss"][a.onsets])
  plt.close(fig)


def test_seeds_of_a_member_share_its_colour_and_one_legend_entry():
  runs = [run_series(), run_series(onsets=(50, 90, 120), seed=1), run_series(seed=2)]
  labels = ["lr 0.1, seed 0", "lr 0.1, seed 1", "lr 0.3, seed 0"]
  fig = plotting.figure_four_panels(runs, labels, groups=[0, 0, 1])
  assert {"lr 0.1 (2 seeds, first bold)", "lr 0.3, seed 0"} <= set(legend_labels(fig))
  assert not {"lr 0.1, seed 0", "lr 0.1, seed 1"} & set(legend_labels(fig))
  curves = panels(fig)["Train loss"].get_lines()[:3]
  assert [rgb(c.get_color()) for c in curves] == [rgb(plotting.run_style(g)[0]) for g in (0, 0, 1)]
  assert [c.get_linewidth() for c in curves] == [1.0, 0.4, 1.0]
  plt.close(fig)


def test_a_recounted_familys_seeds_figure_marks_each_seeds_confirmed_onsets():
  options = {"reference": float(np.log(10)), "norm": "auto", "loss_key": "train_loss"}
  seeds = [run_series(), run_series(onsets=(50, 90, 120), seed=1)]
  members = [claims.Member("lr_0p1", {"optim.lr": 0.1}, tuple(
                 recount.Run(f"lr_0p1_s{k}", k, options, s) for k, s in enumerate(seeds))),
             claims.Member("lr_0p0333", {"optim.lr": 1 / 30}, (
                 recount.Run("lr_0p0333_s0", 0, options, run_series(onsets=(), seed=2)),))]
  fig = family.figure_seeds("lr_sweep", members)
  loss, rho, elr = fig.axes[:3]
  assert legend_labels(fig) == ["lr 0.1 (2 seeds)", "lr 0.0333 (1 seed)"]
  assert [line.get_linewidth() for line in loss.get_lines()] == [1.0, 0.4, 1.0]
  assert [rgb(line.get_color()) for line in rho.get_lines()] == [
      rgb(plotting.run_style(k)[0]) for k in (0, 0, 1)]
  np.testing.assert_allclose(elr.get_lines()[1].get_ydata(), seeds[1]["effective_lr"])
  dots = [c.get_offsets()[:, 0] for c in loss.collections]
  expected = [members[0].runs[k].analyze().onsets for k in (0, 1)]
  assert [list(d) for d in dots] == [list(np.asarray(e) + 1.0) for e in expected] + [[]]
  assert [len(e) for e in expected] == [len(ONSETS), 3]
  plt.close(fig)


def test_theory_bands_are_hatched_in_run_colours_and_keyed_once():
  phase_rgbs = {rgb(c) for c in plotting.PHASE_COLORS.values()}
  assert not phase_rgbs & {rgb(c) for c in plotting.RUN_COLORS}
  runs = [run_series(), run_series(lr=0.05, seed=1), run_series(seed=2)]
  hyper = [(0.1, 0.01), (0.05, 0.01), (0.1, 0.0)]  # no weight decay: no band
  fig = plotting.figure_four_panels(runs, ["a", "b", "c"], [analyze(s) for s in runs], hyper)
  labels = legend_labels(fig)
  assert labels.count("Prop. 3 band") == 1 and labels.count("Remark 3 band") == 1
  axes = panels(fig)
  for title, horizontal in (("Weight norm", True), ("Effective grad norm vs effective LR", False)):
    bands = [p for p in axes[title].patches if p.get_hatch()]
    assert len(bands) == 2
    for k, (band, s, (lr, wd)) in enumerate(zip(bands, runs, hyper)):
      assert band.get_facecolor()[3] == 0 and band.get_linestyle() == "--"
      assert rgb(band.get_edgecolor()[:3]) == rgb(plotting.run_style(k)[0])
      assert tuple(band.get_edgecolor()[:3]) not in phase_rgbs
      l, L = np.quantile(s["effective_grad_norm"][75:], (0.05, 0.95))  # by hand
      if horizontal:  # Prop. 3: rho^2 in [kappa l, kappa L], kappa = sqrt(eta / (2 lam))
        y = band.get_patch_transform().transform(band.get_path().vertices)[:, 1]
        kappa = np.sqrt(lr / (2 * wd))
        np.testing.assert_allclose((y.min(), y.max()), np.sqrt(kappa * np.array([l, L])))
      else:  # Remark 3: effective LR in [sqrt(2 eta lam) / L, sqrt(2 eta lam) / l]
        np.testing.assert_allclose(patch_x(band), np.sqrt(2 * lr * wd) / np.array([L, l]))
  plt.close(fig)


def test_phase_diagram_is_coloured_by_epoch_with_a_colorbar():
  thinned = run_series(n=120, seed=1)
  thinned["train_effective_lr"] = np.full(120, np.nan)  # appendix B's pass every 10 epochs
  thinned["train_effective_grad_norm"] = np.full(120, np.nan)
  thinned["train_effective_lr"][9::10] = thinned["effective_lr"][9::10]
  thinned["train_effective_grad_norm"][9::10] = thinned["effective_grad_norm"][9::10]
  fig = plotting.figure_four_panels([run_series(), thinned], ["a", "b"])
  (cbar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
  assert cbar.get_ylabel() == "epoch" and cbar.get_ylim() == (1, 150)
  diagram = panels(fig)["Effective grad norm vs effective LR"]
  dots = diagram.collections
  assert len(dots) == 2
  np.testing.assert_array_equal(dots[0].get_array(), np.arange(1, 151))
  np.testing.assert_array_equal(dots[1].get_array(), np.arange(10, 121, 10))
  assert all(d.cmap.name == plotting.TIME_CMAP and (d.norm.vmin, d.norm.vmax) == (1, 150)
             for d in dots)
  shapes = [d.get_paths()[0].vertices for d in dots]  # one marker shape per run
  assert shapes[0].shape != shapes[1].shape or not np.allclose(shapes[0], shapes[1])
  assert [rgb(line.get_color()) for line in diagram.lines] == [rgb(plotting.run_style(k)[0])
                                                               for k in range(2)]
  plt.close(fig)


def visible_tick_labels(ax, axis: str) -> list:
  """The non-empty tick labels (major and minor) of ``ax``'s ``axis`` inside its view."""
  ax.figure.canvas.draw()
  a = ax.xaxis if axis == "x" else ax.yaxis
  lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
  pairs = [*zip(a.get_majorticklocs(), a.get_majorticklabels()),
           *zip(a.get_minorticklocs(), a.get_minorticklabels())]
  return [label for loc, label in pairs if lo <= loc <= hi and label.get_text()]


def assert_readable(ax, axis: str) -> None:
  """Two or more tick labels on ``axis``, none overlapping another."""
  labels = visible_tick_labels(ax, axis)
  assert len(labels) >= 2, [t.get_text() for t in labels]
  renderer = ax.figure.canvas.get_renderer()
  boxes = sorted((b.x0, b.x1) if axis == "x" else (b.y0, b.y1)
                 for b in (t.get_window_extent(renderer) for t in labels))
  assert all(right < next_left for (_, right), (next_left, _) in zip(boxes, boxes[1:])), boxes


@pytest.mark.parametrize("lo, hi", [(0.01, 0.02), (0.011, 0.019), (0.003, 0.03), (0.5, 0.9),
                                    (0.012, 0.15), (1e-4, 1e2)])
def test_log_axes_get_tick_labels_on_short_ranges(lo, hi):
  fig, ax = plt.subplots(figsize=(4, 3))
  v = np.geomspace(lo, hi, 50)
  ax.loglog(v, v)
  plotting.readable_log_ticks(ax)
  assert_readable(ax, "x")
  assert_readable(ax, "y")
  plt.close(fig)


def test_phase_diagram_labels_an_effective_lr_of_001_to_002():
  s = run_series(onsets=())
  s["effective_lr"] = np.linspace(0.01, 0.02, 150)
  fig = plotting.figure_four_panels([s], ["run"], [analyze(s)])
  diagram = panels(fig)["Effective grad norm vs effective LR"]
  assert_readable(diagram, "x")
  assert_readable(diagram, "y")
  plt.close(fig)


def has_data(ax) -> bool:
  """Whether ``ax`` draws a curve (two or more finite points) or a scatter."""
  curves = [line for line in ax.lines if np.isfinite(np.asarray(line.get_ydata(), float)).sum() >= 2
            and len(set(line.get_xdata())) > 1]
  return bool(curves) or any(len(c.get_offsets()) for c in ax.collections)


@pytest.mark.parametrize("test_errors", [(None,), ("nan",), (None, "logged")])
def test_no_panel_is_left_without_data(test_errors):
  runs = []
  for k, what in enumerate(test_errors):
    s = run_series(seed=k, test_error=what == "logged")
    if what == "nan":
      s["test_error"] = np.full(150, np.nan)
    runs.append(s)
  fig = plotting.figure_four_panels(runs, [f"run {k}" for k in range(len(runs))],
                                    [analyze(s) for s in runs])
  titles = list(panels(fig))
  assert ("Test error" in titles) == ("logged" in test_errors)
  assert len(titles) == 3 + ("logged" in test_errors)
  assert all(has_data(ax) for ax in panels(fig).values())
  plt.close(fig)


def test_phase_panels_shade_only_periodic_runs_and_hide_spare_cells():
  runs = [run_series(), run_series(onsets=(100,)), run_series(onsets=())]
  analyses = [analyze(s) for s in runs]
  fig = plotting.figure_phases(runs, ["periodic", "one", "none"], analyses, columns=2)
  cells = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"][:4]  # the grid, then twins
  assert [ax.axison for ax in cells] == [True, True, True, False]
  assert [p for p, _, _ in phase_spans(cells[0])] == ["A", "B"] + ["C", "A", "B"] * 4
  assert onset_lines(cells[0]) == [o + 1.0 for o in ONSETS]
  assert phase_spans(cells[1]) == phase_spans(cells[2]) == []
  assert [list(m.get_xdata()) for m in onset_markers(cells[1])] == [[101.0]]
  assert onset_markers(cells[2]) == [] and onset_lines(cells[1]) == onset_lines(cells[2]) == []
  assert all(has_data(ax) for ax in cells[:3])
  labels = legend_labels(fig)
  assert {"phase A", "phase B", "phase C", plotting.ONSET_LABEL, "train loss"} <= set(labels)
  assert plotting.ONSET_LABEL + " (no periodic behavior)" in labels
  plt.close(fig)


def test_plot_series_writes_png_and_pdf(tmp_path):
  out = plotting.plot_series([run_series()], str(tmp_path / "f.png"), hyperparams=[(0.1, 0.01)])
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.getsize(tmp_path / "f.pdf") > 1000


def test_fig13_shades_phase_b_and_keys_the_fitting_part():
  t = np.arange(600.0, 700.0)
  curve = 1 / (t - 500)
  fit = types.SimpleNamespace(c=1.0, C=2.0, lower_power=1.0)
  a = {"held": types.SimpleNamespace(fit=fit, t_split=650.0), "t": t, "lr": 0.1, "wd": 0.01,
       **{k: curve for k in ("g", "low", "high", "cd", "predicted", "cd_low", "cd_high")}}
  fig = period_steps.figure_delta_bounds(a)
  labels = legend_labels(fig)
  assert "phase B" in labels and "envelopes fitted here" in labels
  assert not {"phase A", "phase C"} & set(labels)
  for ax in fig.axes:
    assert phase_spans(ax) == [("B", 600.0, 699.0)]
    (fitted,) = [p for p in ax.patches if p.get_hatch()]
    assert patch_x(fitted) == (600.0, 650.0)
  plt.close(fig)


def test_fig16_ranges_use_the_released_code_s_batch_means_by_default():
  """The product figure's ranges: the epoch means of the mini-batch values (the released
  code's "mean effective gradient norm"), the whole-set pass only on request."""
  s = run_series(n=40)
  s["train_effective_lr"] = s["effective_lr"] * 1.5
  s["train_effective_grad_norm"] = s["effective_grad_norm"] * 0.5
  for measure, scale in (("batch_mean", 1.0), ("full_pass", 0.5)):
    fig = plotting.figure_effective_ranges([s], ["a"], measure=measure)
    (line,) = fig.axes[1].lines
    np.testing.assert_allclose(line.get_ydata(), scale * s["effective_grad_norm"])
    assert ("mini-batches" in fig.axes[1].get_title()) == (measure == "batch_mean")
    plt.close(fig)
  with pytest.raises(ValueError, match="measure must be one of"):
    plotting.effective_series(s, "median")


def test_forecast_figure_gives_each_scored_run_its_own_colour_and_one_entry():
  """Twelve runs, six of them scored (the others too few periods), the scored ones
  spread over the list: six distinct colours (the colour of the k-th *scored* run, so
  the palette's ten never wrap), one legend entry each, and one key each for the
  forecast, the naive forecast and the diagonal."""
  from si_jax.plots import family
  point = {"actual": 100.0, "predicted": 104.0, "low": 96.0, "high": None, "naive": 98.0}
  scored = [(f"run {k}", [point] if k in (0, 3, 5, 6, 9, 11) else []) for k in range(12)]
  fig = family.figure_forecast(scored)
  ax = fig.axes[0]
  colours = [line.get_color() for line in ax.lines if line.get_marker() == "o"
             and line.get_markerfacecolor() != "none" and len(line.get_xdata())]
  assert len(colours) == 6 and len(set(colours)) == 6
  labels = ax.get_legend_handles_labels()[1]
  assert sorted(labels) == sorted([f"run {k}" for k in (0, 3, 5, 6, 9, 11)] + [
      "predicted = actual", "filled: forecast, 80% interval",
      "hollow: the previous period again"])
  plt.close(fig)
