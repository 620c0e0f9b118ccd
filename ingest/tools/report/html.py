"""One self-contained HTML page from a run: figures inlined as base64 PNG data URIs, inline CSS, no external URL.

A section whose input file is missing says so in one line instead of failing, so a partial run still gets a
report. The page carries a tiny inline script that, once loaded, records how many images failed to decode in
``<div id="image-check">``: the headless-browser test reads it back with ``--dump-dom``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape

import numpy as np

from ingest.tools.demo.scoring import EVENT_KINDS as SCORED_EVENTS
from ingest.tools.demo.scoring import SCORE_KINDS
from ingest.tools.report import figures
from ingest.tools.report.run_dir import (
    EVAL_LOG,
    LABELS,
    SAMPLES,
    SCORES,
    TRAIN_LOG,
    GateRecord,
    RunData,
    Samples,
    Summary,
)

EVENT_KINDS = ("all", *SCORED_EVENTS)
EVAL_LABELS = {
    "future_top1": ("future top-1", "{:.3f}"),
    "future_loss": ("future loss (InfoNCE)", "{:.3f}"),
    "order_accuracy": ("order accuracy", "{:.3f}"),
    "pixel_psnr_gain_db": ("PSNR gain over copy-last", "{:+.2f} dB"),
    "pixel_psnr_db": ("pixel-head PSNR", "{:.2f} dB"),
    "copy_last_psnr_db": ("copy-last PSNR", "{:.2f} dB"),
    "windows": ("held-out windows", "{:.0f}"),
}

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; background: #f4f5f7;
       margin: 0; }
main { max-width: 1140px; margin: 0 auto; padding: 24px 20px 40px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
.sub { color: #555; margin: 0 0 16px; word-break: break-all; }
section { background: #fff; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.08); padding: 16px 20px;
          margin: 0 0 18px; }
h2 { font-size: 18px; margin: 0 0 10px; }
figure { margin: 8px 0; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption, .note { color: #555; font-size: 13.5px; margin-top: 6px; }
.unavailable { color: #8a6d3b; background: #fcf8e3; padding: 8px 12px; border-radius: 6px; margin: 0; }
.facts { display: flex; flex-wrap: wrap; gap: 10px; margin: 0 0 14px; }
.fact { flex: 1 1 auto; min-width: 120px; background: #f7f8fa; border-radius: 6px; padding: 8px 12px; }
.fact b { display: block; font-size: 12px; color: #666; font-weight: 600; text-transform: uppercase; }
.fact span { font-size: 16px; overflow-wrap: anywhere; }
.tables { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 28px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { padding: 5px 10px; border-bottom: 1px solid #e3e5e8; text-align: left; vertical-align: top; }
th { background: #f7f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.good { background: #e3f4e1; } td.weak { background: #fbe3e1; }
.badge { padding: 2px 8px; border-radius: 10px; font-size: 12.5px; font-weight: 600; }
.promoted { background: #dff3dc; color: #1e6b1a; } .refused { background: #fbe1df; color: #9b1c14; }
td ul { margin: 0; padding-left: 18px; }
footer { color: #888; font-size: 12px; text-align: center; }
"""

IMAGE_CHECK = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) { return !img.complete || img.naturalWidth === 0; }).length;
  var check = document.getElementById("image-check");
  check.setAttribute("data-images", String(images.length));
  check.setAttribute("data-broken", String(broken));
  check.textContent = "images: " + images.length + ", broken: " + broken;
});
"""


def render_report(run: RunData) -> str:
    """The whole page for ``run``."""
    sections = [
        _losses(run),
        _accuracy(run),
        _pixel_head(run),
        _timeline(run),
        _embedding_map(run),
        _gate(run),
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">',
            f"<title>StreamSSL run report: {escape(run.summary.production_version or 'no production model')}</title>",
            f"<style>{CSS}</style>\n</head>\n<body>\n<main>",
            _header(run.summary),
            *sections,
            f"<footer>written by <code>streamssl report</code> from {escape(str(run.root))} at {generated}</footer>",
            '<div id="image-check" hidden>not checked</div>',
            f"</main>\n<script>{IMAGE_CHECK}</script>\n</body>\n</html>\n",
        ]
    )


def _section(title: str, *parts: str) -> str:
    return f"<section>\n<h2>{escape(title)}</h2>\n" + "\n".join(parts) + "\n</section>"


def _figure(png: bytes, alt: str, caption: str) -> str:
    """An inlined PNG; ``caption`` is HTML (callers escape what came from files)."""
    source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<figure><img src="{source}" alt="{escape(alt)}"><figcaption>{caption}</figcaption></figure>'


def unavailable(what: str) -> str:
    """The one line a section shows instead of its figure."""
    return f'<p class="unavailable">Not available: {escape(what)}.</p>'


def _missing(path: str) -> str:
    return unavailable(f"{path} is not in the run directory")


def _number(value: float | None, pattern: str = "{:.3f}") -> str:
    return "n/a" if value is None or not math.isfinite(value) else pattern.format(value)


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table from already-escaped cell HTML; a cell starting with ``<td`` is taken as the whole cell."""
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    cells = ("".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) for row in rows)
    body = "".join(f"<tr>{row}</tr>" for row in cells)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _fact(name: str, value: str) -> str:
    return f'<div class="fact"><b>{escape(name)}</b><span>{escape(value)}</span></div>'


def _auroc_cell(value: float | None) -> str:
    grade = "" if value is None else " good" if value >= 0.8 else " weak" if value < 0.6 else ""
    return f'<td class="num{grade}">{_number(value)}</td>'


def _header(summary: Summary) -> str:
    facts = [
        _fact("production model", summary.production_version or "none promoted"),
        _fact("training steps", f"{summary.steps:,}"),
        *(
            [_fact("windows published", f"{summary.windows_published:,}")]
            if summary.windows_published is not None
            else []
        ),
        _fact("windows scored", f"{summary.windows_scored:,}"),
        _fact("time budget", _number(summary.minutes, "{:.1f} min")),
        _fact("model input", summary.model_input or "n/a"),
        _fact("bus", summary.bus),
        _fact("serving URL", summary.serving_url or "n/a"),
    ]
    return (
        f"<header><h1>StreamSSL run report</h1>"
        f'<p class="sub">source: <code>{escape(summary.source)}</code></p></header>'
        + _section(
            "Run",
            f'<div class="facts">{"".join(facts)}</div>',
            f'<div class="tables">{_eval_table(summary)}{_auroc_table(summary)}</div>',
            '<p class="note">AUROC: how well each score separates windows inside a labelled event (of that kind, '
            "or any for <i>all</i>) from the rest; 0.5 is chance, n/a where the clip had no such event.</p>",
        )
    )


def _eval_table(summary: Summary) -> str:
    if not summary.eval:
        return unavailable("no held-out numbers in summary.json (no version was promoted)")
    rows = []
    for key, value in summary.eval.items():
        name, pattern = EVAL_LABELS.get(key, (key, "{:.4g}"))
        rows.append((escape(name), f'<td class="num">{_number(value, pattern)}</td>'))
    return _table(["held-out metric (production)", "value"], rows)


def _auroc_table(summary: Summary) -> str:
    if not summary.auroc:
        return unavailable("no AUROC in summary.json (no labels, or nothing was scored)")
    kinds = [k for k in SCORE_KINDS if k in summary.auroc] + [k for k in summary.auroc if k not in SCORE_KINDS]
    rows = [[escape(k.replace("_", " ")), *(_auroc_cell(summary.auroc[k].get(e)) for e in EVENT_KINDS)] for k in kinds]
    return _table(["AUROC", *(e.replace("_", " ") for e in EVENT_KINDS)], rows)


def _losses(run: RunData) -> str:
    title = "Training losses"
    train = run.logs.train
    if train is None:
        return _section(title, _missing(TRAIN_LOG))
    if not len(train):
        return _section(title, unavailable(f"{TRAIN_LOG} has no training lines"))
    caption = (
        f"Loss per pretext task on the training batches: {len(train)} progress reports up to step "
        f"{train.steps[-1]:.0f}. A long run's noisy curve is drawn faint, with its trailing mean in bold. Each task "
        "on its own scale."
    )
    return _section(title, _figure(figures.loss_curves(train), "loss curves per task", caption))


def _accuracy(run: RunData) -> str:
    title = "Pretext-task accuracy"
    train, evals = run.logs.train, run.logs.evals
    if not (train is not None and len(train)) and not (evals is not None and len(evals)):
        return _section(title, unavailable(f"neither {TRAIN_LOG} nor {EVAL_LOG} has lines to plot"))
    held_out = f"{len(evals)} held-out evaluations" if evals is not None else f"no held-out evaluations ({EVAL_LOG})"
    caption = (
        f"Bold: {held_out}; faint: the training batches. Dashed: chance. Order chance is 1/24 (one of 4! "
        "orderings); future top-1 chance is taken as 1/48, the in-batch candidates of an evaluation batch "
        "(16 windows × 3 predicted steps)."
    )
    return _section(title, _figure(figures.accuracy_curves(train, evals), "accuracy against chance", caption))


def _pixel_head(run: RunData) -> str:
    title = "Next-frame pixel head"
    samples = run.samples
    if samples is None:
        return _section(title, _missing(SAMPLES))
    if samples.pixel_last is None or samples.pixel_real is None or samples.pixel_predicted is None:
        return _section(title, unavailable(f"{SAMPLES} holds no pixel-head samples"))
    h, w = samples.pixel_real.shape[1:3]
    gain = run.summary.eval.get("pixel_psnr_gain_db")
    caption = (
        f"Held-out samples at the head's {w}×{h} resolution, enlarged pixel for pixel. The production model's "
        f"PSNR gain over copying the last frame: {_number(gain, '{:+.2f} dB')}."
    )
    png = figures.pixel_strip(samples.pixel_last, samples.pixel_real, samples.pixel_predicted)
    return _section(title, _figure(png, "real and predicted next frames", caption))


def _timeline(run: RunData) -> str:
    title = "Anomaly scores over time"
    scores, labels, samples = run.scores, run.labels, run.samples
    parts = []
    if scores is None:
        parts.append(_missing(SCORES))
    elif not len(scores):
        parts.append(unavailable(f"{SCORES} has no results"))
    else:
        events = labels.events if labels is not None else []
        cameras = len(set(scores.camera_id))
        shown = (
            f"the first {figures.MAX_CAMERAS} of {cameras} cameras"
            if cameras > figures.MAX_CAMERAS
            else (f"{cameras} camera{'s' if cameras > 1 else ''}")
        )
        warmup = int(np.isnan(scores.score).sum())
        caption = (
            f"{len(scores)} windows from {shown}. Top: the per-camera z score ({warmup} windows without one, in "
            "warm-up); below it the raw score. Shaded: labelled events"
            + ("." if labels is not None else f" (none: {LABELS} is not in the run directory).")
        )
        parts.append(_figure(figures.score_timeline(scores, events), "anomaly score timeline", caption))
    parts.append(_top_windows(samples))
    return _section(title, *parts)


def _top_windows(samples: Samples | None) -> str:
    if samples is None:
        return _missing(SAMPLES)
    if samples.top_frames is None or not len(samples.top_frames):
        return unavailable(f"{SAMPLES} holds no top-scored windows")
    caption = f"The {len(samples.top_frames)} top-scored windows (middle frame), highest first, with window ids."
    return _figure(figures.top_windows(samples), "top-scored windows", caption)


def _embedding_map(run: RunData) -> str:
    title = "Embedding map"
    scores, labels = run.scores, run.labels
    problem = _embedding_problem(run)
    if problem is not None:
        return _section(title, unavailable(problem))
    assert scores is not None
    assert labels is not None
    keep = np.isfinite(scores.embeddings).all(axis=1)
    frames = figures.window_labels(scores, labels)[keep]
    png = figures.embedding_map(scores.embeddings[keep], labels, frames)
    caption = (
        f"PCA of {int(keep.sum())} window embeddings ({scores.embeddings.shape[1]}-D) to two dimensions, coloured "
        "by the synthetic world's labels at each window's middle PTS: structure here is what the encoder learned "
        "without labels."
    )
    return _section(title, _figure(png, "embedding map", caption))


def _embedding_problem(run: RunData) -> str | None:
    """Why the map cannot be drawn, or None."""
    if run.scores is None:
        return f"{SCORES} is not in the run directory"
    if run.labels is None:
        return f"{LABELS} is not in the run directory: nothing to colour the map by"
    if not len(run.labels.t):
        return f"{LABELS} has no frames"
    if run.scores.embeddings.shape[1] < 2:
        return f"{SCORES} carries no embeddings"
    if int(np.isfinite(run.scores.embeddings).all(axis=1).sum()) < 3:
        return f"{SCORES} has fewer than 3 embeddings"
    return None


def _gate_row(gate: GateRecord) -> list[str]:
    reasons = "<ul>" + "".join(f"<li>{escape(r)}</li>" for r in gate.reasons) + "</ul>" if gate.reasons else ""
    badge = "promoted" if gate.decision == "promoted" else "refused"
    return [
        f'<td class="num">{gate.step}</td>',
        escape(gate.candidate),
        escape(gate.production or "none"),
        f'<span class="badge {badge}">{escape(gate.decision)}</span>',
        reasons,
    ]


def _gate(run: RunData) -> str:
    title = "Promotion gate"
    gates = run.logs.gates
    if gates is None:
        return _section(title, _missing(EVAL_LOG))
    if not gates:
        return _section(title, unavailable(f"{EVAL_LOG} records no gate decision"))
    promoted = sum(g.decision == "promoted" for g in gates)
    table = _table(["step", "candidate", "production before", "decision", "reasons"], map(_gate_row, gates))
    note = f'<p class="note">{len(gates)} decision{"s" if len(gates) != 1 else ""}, {promoted} promoted.</p>'
    return _section(title, table, note)
