"""The report's figures, one function each, drawn with matplotlib's Agg canvas and returned as PNG bytes.

Figures are built on ``matplotlib.figure.Figure`` objects, never pyplot: no global figure state, so a report can
be rendered from any thread and nothing needs closing.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, cast

import matplotlib
import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from sklearn.decomposition import PCA

from ingest.tools.report.run_dir import Event, FloatArray, ImageArray, Labels, MetricLog, Samples, Scores

P = ParamSpec("P")
DPI = 100
WIDTH_IN = 11.0  # 1100 px: the page's content width
ORDER_CHANCE = 1 / 24  # 4! permutations of the order task's shuffled clips
FUTURE_CHANCE = 1 / (16 * 3)  # in-batch candidates: eval batch 16 × 3 predicted steps
TASK_COLOURS = {"total": "#333333", "future": "#1f77b4", "order": "#ff7f0e", "pixel": "#2ca02c"}
EVENT_COLOURS = {"wrong_way": "#d62728", "stalled": "#ff7f0e", "jam": "#9467bd"}
LIGHT_COLOURS = {"green": "#2ca02c", "yellow": "#e6b800", "red": "#d62728"}
MAX_CAMERAS = 6
SMOOTH_FROM = 50  # training reports from which the loss curves also show a trailing mean
MAX_PIXEL_SAMPLES = 8
MAX_THUMBNAIL_COLUMNS = 8
STYLE: dict[str, Any] = {
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "legend.frameon": False,
}


def figure_png(draw: Callable[P, Figure]) -> Callable[P, bytes]:
    """Turn a function that draws a Figure into one that returns its PNG, drawn in the report's style."""

    @functools.wraps(draw)
    def render(*args: P.args, **kwargs: P.kwargs) -> bytes:
        with matplotlib.rc_context(cast(Any, STYLE)):
            figure = draw(*args, **kwargs)
            FigureCanvasAgg(figure)
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
        return buffer.getvalue()

    return render


def _smoothed(values: FloatArray, span: int) -> FloatArray:
    """Trailing mean over ``span`` points (NaN-aware), so a noisy training curve shows its trend."""
    finite = np.isfinite(values)
    kernel = np.ones(span)
    sums = np.convolve(np.where(finite, values, 0.0), kernel)[: len(values)]
    counts = np.convolve(finite.astype(float), kernel)[: len(values)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


@figure_png
def loss_curves(train: MetricLog) -> Figure:
    """One panel per task: losses live on different scales (InfoNCE, cross-entropy, MSE)."""
    figure = Figure(figsize=(WIDTH_IN, 2.8), layout="constrained")
    axes = figure.subplots(1, len(TASK_COLOURS))
    span = len(train) // 10 if len(train) >= SMOOTH_FROM else 1  # few reports as they are; many, their trend too
    for ax, (task, colour) in zip(axes, TASK_COLOURS.items(), strict=True):
        values = train.series(f"loss_{task}")
        if span < 2:
            ax.plot(train.steps, values, color=colour, linewidth=2, marker=".", label="as logged")
        else:
            ax.plot(train.steps, values, color=colour, alpha=0.3, linewidth=0.8, label="as logged")
            ax.plot(train.steps, _smoothed(values, span), color=colour, linewidth=2, label=f"mean of {span}")
        ax.set_title(f"{task} loss")
        ax.set_xlabel("training step")
        if not np.isfinite(values).any():
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", color="grey")
    axes[0].set_ylabel("loss (training batch)")
    axes[0].legend(loc="upper right", fontsize=8)
    return figure


@figure_png
def accuracy_curves(train: MetricLog | None, evals: MetricLog | None) -> Figure:
    """Held-out accuracy against chance: a pretext task at chance level has learned nothing."""
    figure = Figure(figsize=(WIDTH_IN, 3.2), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    panels = (
        ("order_accuracy", "temporal order accuracy", ORDER_CHANCE, "chance 1/24"),
        ("future_top1", "future-embedding top-1", FUTURE_CHANCE, "chance 1/48"),
    )
    for ax, (metric, title, chance, chance_label) in zip(axes, panels, strict=True):
        if train is not None and len(train):
            ax.plot(train.steps, train.series(metric), color="#7f7f7f", alpha=0.45, linewidth=1, label="training batch")
        if evals is not None and len(evals):
            ax.plot(
                evals.steps,
                evals.series(metric),
                color="#1f77b4",
                marker="o",
                markersize=4,
                linewidth=2,
                label="held-out",
            )
        ax.axhline(chance, color="#d62728", linestyle="--", linewidth=1.2, label=chance_label)
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.set_ylim(0, 1.02)
        ax.legend(loc="best", fontsize=8, frameon=True, framealpha=0.85)
    axes[0].set_ylabel("accuracy")
    return figure


def _show(ax: Axes, image: ImageArray) -> None:
    """An image drawn pixel for pixel (nearest-neighbour upscaling), grayscale when it has one channel."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


@figure_png
def pixel_strip(last: ImageArray, real: ImageArray, predicted: ImageArray) -> Figure:
    """Columns are held-out samples; rows the last context frame, the real next frame, the head's prediction."""
    count = min(len(last), MAX_PIXEL_SAMPLES)
    rows = (("last context", last), ("real next", real), ("predicted next", predicted))
    tile = min(WIDTH_IN / max(count, 4), 1.6)
    figure = Figure(figsize=(tile * max(count, 4) + 1.0, tile * 3 + 0.4), layout="constrained")
    axes = np.atleast_2d(figure.subplots(3, count, squeeze=False))
    for row, (name, images) in enumerate(rows):
        for column in range(count):
            _show(axes[row, column], images[column])
        axes[row, 0].set_ylabel(name, fontsize=10)
    return figure


def _shade_events(ax: Axes, events: Sequence[Event], label_them: bool) -> None:
    for event in events:
        colour = EVENT_COLOURS.get(event.kind, "#8c564b")
        ax.axvspan(event.start_s, event.end_s, color=colour, alpha=0.15, linewidth=0)
        if label_them:
            ax.text(
                (event.start_s + event.end_s) / 2,
                1.01,
                event.kind.replace("_", " "),
                color=colour,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=9,
                fontweight="bold",
            )


def _camera_panels(score_ax: Axes, raw_ax: Axes, scores: Scores, rows: npt.NDArray[np.intp]) -> list[Any]:
    order = rows[np.argsort(scores.pts_start_s[rows])]
    x = scores.pts_start_s[order]
    handles = score_ax.plot(x, scores.score[order], color="#1f77b4", linewidth=1.5, label="score (per-camera z)")
    score_ax.axhline(0, color="#999999", linewidth=0.8)
    score_ax.set_ylabel("score (z)")
    handles += raw_ax.plot(x, scores.raw_score[order], color="#555555", linewidth=1, label="raw score")
    raw_ax.set_ylabel("raw score")
    return handles


@figure_png
def score_timeline(scores: Scores, events: Sequence[Event]) -> Figure:
    """Score over source time per camera, with the labelled events behind it: do the peaks sit in the events?"""
    cameras = sorted(set(scores.camera_id))[:MAX_CAMERAS]
    camera_of = np.array(scores.camera_id)
    figure = Figure(figsize=(WIDTH_IN, 3.4 * len(cameras) + 0.5), layout="constrained")
    axes = figure.subplots(2 * len(cameras), 1, sharex=True, height_ratios=[2.2, 1] * len(cameras))
    handles: list[Any] = []
    for index, camera in enumerate(cameras):
        score_ax, raw_ax = axes[2 * index], axes[2 * index + 1]
        handles = _camera_panels(score_ax, raw_ax, scores, np.flatnonzero(camera_of == camera))
        _shade_events(score_ax, events, label_them=True)
        _shade_events(raw_ax, events, label_them=False)
        score_ax.set_title(f"camera {camera}", loc="left", pad=16)
    axes[-1].set_xlabel("window start (source PTS, s)")
    kinds = sorted({event.kind for event in events})
    handles += [Patch(color=EVENT_COLOURS.get(k, "#8c564b"), alpha=0.3, label=k.replace("_", " ")) for k in kinds]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9)
    return figure


@figure_png
def top_windows(samples: Samples) -> Figure:
    """Middle frames of the top-scored windows, so a person can see what the model found unusual."""
    assert samples.top_frames is not None
    count = len(samples.top_frames)
    grid_rows = -(-count // MAX_THUMBNAIL_COLUMNS)
    columns = -(-count // grid_rows)  # balanced rows: 10 thumbnails are 2 × 5, not 8 + 2
    tile = WIDTH_IN / max(columns, 5)
    figure = Figure(figsize=(tile * columns, tile * 0.85 * grid_rows + 0.3), layout="constrained")
    axes = figure.subplots(grid_rows, columns, squeeze=False).ravel()
    for index, ax in enumerate(axes):
        if index >= count:
            ax.set_axis_off()
            continue
        _show(ax, samples.top_frames[index])
        ax.set_title(f"#{index + 1}  score {samples.top_scores[index]:.2f}", fontsize=9)
        ax.set_xlabel(samples.top_window_ids[index], fontsize=7)
    return figure


def window_labels(scores: Scores, labels: Labels) -> npt.NDArray[np.intp]:
    """Index of the labelled frame nearest each window's middle PTS."""
    middle = (scores.pts_start_s + scores.pts_end_s) / 2
    if len(labels.t) < 2:
        return np.zeros(len(middle), dtype=np.intp)
    right = np.clip(np.searchsorted(labels.t, middle), 1, len(labels.t) - 1)
    left = right - 1
    nearer_left = np.abs(middle - labels.t[left]) <= np.abs(labels.t[right] - middle)
    return np.where(nearer_left, left, right)


@figure_png
def embedding_map(embeddings: FloatArray, labels: Labels, frame_index: npt.NDArray[np.intp]) -> Figure:
    """2-D PCA of the window embeddings coloured by what the world knew then: does the encoder see it?"""
    pca = PCA(n_components=2)
    points = pca.fit_transform(embeddings)
    ratio = pca.explained_variance_ratio_
    figure = Figure(figsize=(WIDTH_IN, 3.6), layout="constrained")
    axes = figure.subplots(1, 3, sharex=True, sharey=True)
    style = {"s": 12, "alpha": 0.8, "linewidths": 0}
    day = axes[0].scatter(*points.T, c=labels.illumination[frame_index], cmap="cividis", vmin=0, vmax=1, **style)
    figure.colorbar(day, ax=axes[0], label="illumination (0 night, 1 day)")
    states = np.array(labels.light_state)[frame_index]
    for state, colour in LIGHT_COLOURS.items():
        chosen = states == state
        axes[1].scatter(*points[chosen].T, color=colour, label=f"{state} ({int(chosen.sum())})", **style)
    axes[1].legend(loc="best", fontsize=8, markerscale=1.5, frameon=True, framealpha=0.85)
    count = axes[2].scatter(*points.T, c=labels.vehicle_count[frame_index], cmap="viridis", **style)
    figure.colorbar(count, ax=axes[2], label="vehicles in view")
    for ax, title in zip(axes, ("day / night", "traffic light", "vehicle count"), strict=True):
        ax.set_title(title)
        ax.set_xlabel(f"PC1 ({ratio[0]:.0%} of variance)")
    axes[0].set_ylabel(f"PC2 ({ratio[1]:.0%} of variance)")
    return figure
