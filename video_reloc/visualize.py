"""Figures a person can read, drawn with matplotlib (Agg, no display): the paper's Figs. 4 and 5.

- `timeline_figure`: the reference's timeline in seconds, with the true segment, the predicted
  one (or the top k) and the per-step probabilities of start, inside and end (Fig. 4);
- `attention_figure`: the forward matching's attention of every reference step over the
  query's steps, reference time across and query time up, with the true and predicted
  segments marked (Fig. 5);
- `pair_figures`: both figures for each pair of a padded batch (TensorBoard images during
  training's validation, `video-reloc-evaluate --plots`);
- `figure_image` and `save_figure`: a figure as an RGB array (for `tf.summary.image`) or a PNG.

Figures are `matplotlib.figure.Figure` objects made without pyplot, so drawing is safe in any
thread and never opens a window.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

TRUTH = "#2ca02c"  # green, as the paper's rectangles
PREDICTION = "#d62728"  # red
START = "#1f77b4"  # blue
INSIDE = "#7f7f7f"  # grey
END = "#ff7f0e"  # orange
TIMELINE_SIZE = (9.0, 3.8)  # inches
ATTENTION_SIZE = (9.0, 3.6)
DPI = 100


def _figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _axis(seconds_per_feature: float | None, name: str) -> tuple[float, str]:
    """Scale from steps to the axis' unit, and the axis label."""
    if seconds_per_feature:
        return float(seconds_per_feature), f"{name} time (s)"
    return 1.0, f"{name} step (feature)"


def timeline_figure(
    reference_length: int,
    seconds_per_feature: float | None = None,
    probabilities: np.ndarray | None = None,
    groundtruth: Sequence[int] | None = None,
    predictions: Sequence[Sequence[int]] = (),
    prediction_labels: Sequence[str] | None = None,
    title: str | None = None,
):
    """The reference timeline with true and predicted segments and per-step probabilities.

    Args:
        reference_length: Valid steps of the reference (the figure's extent).
        seconds_per_feature: Seconds per step; `None` draws steps.
        probabilities: `(T, 4)` per-step probabilities (start, end, inside, outside); steps
            past `reference_length` are ignored.
        groundtruth: `[start, end)` of the true segment in steps, if known.
        predictions: `[start, end)` of predicted segments, best first.
        prediction_labels: A label per prediction (default "prediction", or "#k" for several).
        title: The figure's title.

    Returns:
        A matplotlib `Figure`.
    """
    scale, label = _axis(seconds_per_feature, "reference")
    extent = reference_length * scale
    has_probabilities = probabilities is not None
    figure = _figure(TIMELINE_SIZE if has_probabilities else (TIMELINE_SIZE[0], 1.9))
    if has_probabilities:
        bars, curves = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 2.2]})
    else:
        bars, curves = figure.subplots(1, 1), None
    rows: list[tuple[str, Sequence[int], str]] = []
    if groundtruth is not None:
        rows.append(("ground truth", groundtruth, TRUTH))
    if prediction_labels is None:
        prediction_labels = (
            ["prediction"]
            if len(predictions) == 1
            else [f"#{k + 1}" for k in range(len(predictions))]
        )
    for k, (segment, name) in enumerate(zip(predictions, prediction_labels)):
        rows.append((name, segment, PREDICTION if k == 0 else "#f4a3a3"))
    for row, (_, (start, end), color) in enumerate(reversed(rows)):
        bars.broken_barh([(0, extent)], (row - 0.35, 0.7), facecolors="#eeeeee")
        bars.broken_barh(
            [(start * scale, (end - start) * scale)], (row - 0.35, 0.7), facecolors=color
        )
    bars.set_yticks(range(len(rows)), [name for name, _, _ in reversed(rows)])
    bars.set_ylim(-0.6, max(len(rows), 1) - 0.4)
    bars.set_xlim(0, extent)
    bars.tick_params(axis="y", length=0)
    if title:
        bars.set_title(title, fontsize=10)
    if curves is None:
        bars.set_xlabel(label)
        return figure
    p = np.asarray(probabilities, np.float64)[:reference_length]
    centres = (np.arange(len(p)) + 0.5) * scale
    curves.plot(centres, p[:, 2], color=INSIDE, lw=1.5, label="inside")
    curves.plot(centres, p[:, 0], color=START, lw=1.5, label="start")
    curves.plot(centres, p[:, 1], color=END, lw=1.5, label="end")
    if groundtruth is not None:
        curves.axvspan(groundtruth[0] * scale, groundtruth[1] * scale, color=TRUTH, alpha=0.15)
    if predictions:
        for edge in predictions[0]:
            curves.axvline(edge * scale, color=PREDICTION, ls="--", lw=1)
    curves.set_ylim(0, 1.02)
    curves.set_xlim(0, extent)
    curves.set_ylabel("probability")
    curves.set_xlabel(label)
    curves.legend(loc="upper right", ncol=3, fontsize=8, frameon=False)
    curves.grid(alpha=0.3)
    return figure


def attention_figure(
    attention: np.ndarray,
    reference_length: int,
    query_length: int,
    reference_seconds_per_feature: float | None = None,
    query_seconds_per_feature: float | None = None,
    groundtruth: Sequence[int] | None = None,
    prediction: Sequence[int] | None = None,
    title: str | None = None,
):
    """The attention of each reference step (across) over the query steps (up) (Fig. 5).

    Args:
        attention: `(Tr, Tq)` attention weights; each reference step's row sums to 1 over the
            valid query steps. Padding beyond the lengths is cut off.
        reference_length: Valid reference steps.
        query_length: Valid query steps.
        reference_seconds_per_feature: Seconds per reference step; `None` draws steps.
        query_seconds_per_feature: Seconds per query step; `None` draws steps.
        groundtruth: `[start, end)` of the true segment in the reference.
        prediction: `[start, end)` of the predicted segment.
        title: The figure's title.

    Returns:
        A matplotlib `Figure`.
    """
    reference_scale, reference_label = _axis(reference_seconds_per_feature, "reference")
    query_scale, query_label = _axis(query_seconds_per_feature, "query")
    weights = np.asarray(attention, np.float64)[:reference_length, :query_length]
    figure = _figure(ATTENTION_SIZE)
    axes = figure.subplots(1, 1)
    image = axes.imshow(
        weights.T,
        aspect="auto",
        origin="lower",
        cmap="Blues",
        interpolation="nearest",
        extent=(0, reference_length * reference_scale, 0, query_length * query_scale),
        vmin=0.0,
    )
    colorbar = figure.colorbar(image, ax=axes, pad=0.01)
    colorbar.set_label("attention weight")
    handles = []
    if groundtruth is not None:
        for edge in groundtruth:
            line = axes.axvline(edge * reference_scale, color=TRUTH, lw=2)
        line.set_label("ground truth")
        handles.append(line)
    if prediction is not None:
        for edge in prediction:
            line = axes.axvline(edge * reference_scale, color=PREDICTION, lw=1.5, ls="--")
        line.set_label("prediction")
        handles.append(line)
    if handles:
        axes.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.8)
    axes.set_xlabel(reference_label)
    axes.set_ylabel(query_label)
    if title:
        axes.set_title(title, fontsize=10)
    return figure


def _seconds(values: np.ndarray | None, index: int) -> float | None:
    return None if values is None else float(values[index])


def pair_figures(
    outputs: Mapping[str, np.ndarray],
    inputs: Mapping[str, np.ndarray],
    groundtruth: np.ndarray,
    reference_seconds_per_feature: np.ndarray | None = None,
    query_seconds_per_feature: np.ndarray | None = None,
    titles: Sequence[str] | None = None,
) -> list[tuple[Any, Any]]:
    """The timeline (Fig. 4) and attention (Fig. 5) figures of every pair of a padded batch.

    Args:
        outputs: The model's `start`, `end` `(B,)`, `probabilities` `(B, T, 4)` and
            `attention` `(B, Tr, Tq)` (the serving signature's outputs).
        inputs: The padded batch (`query_length`, `reference_length`, `(B,)`).
        groundtruth: `(B, 2)` true `[start, end)`.
        reference_seconds_per_feature: `(B,)` seconds per reference step, if known.
        query_seconds_per_feature: `(B,)` seconds per query step, if known.
        titles: A title per pair.

    Returns:
        `[(timeline, attention), ...]`, one pair of `Figure`s per pair.
    """
    figures = []
    for b in range(len(groundtruth)):
        prediction = (int(outputs["start"][b]), int(outputs["end"][b]))
        truth = tuple(int(g) for g in groundtruth[b])
        reference_length = int(inputs["reference_length"][b])
        title = titles[b] if titles is not None else None
        reference_seconds = _seconds(reference_seconds_per_feature, b)
        timeline = timeline_figure(
            reference_length,
            reference_seconds,
            probabilities=np.asarray(outputs["probabilities"][b]),
            groundtruth=truth,
            predictions=[prediction],
            title=title,
        )
        attention = attention_figure(
            np.asarray(outputs["attention"][b]),
            reference_length,
            int(inputs["query_length"][b]),
            reference_seconds,
            _seconds(query_seconds_per_feature, b),
            groundtruth=truth,
            prediction=prediction,
            title=title,
        )
        figures.append((timeline, attention))
    return figures


def figure_image(figure) -> np.ndarray:
    """The figure drawn as an `(H, W, 3)` uint8 RGB array (for `tf.summary.image`)."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def save_figure(figure, path: str | pathlib.Path) -> pathlib.Path:
    """Writes the figure as a PNG (its folder is made)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
