"""`streamssl report RUN_DIR`: the run-directory reader, the self-contained page, and a real headless browser on it."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ingest.tools.report.html import render_report
from ingest.tools.report.run_dir import RunDirError, read_run_dir
from tests.browser import assert_renders_in_browser

ROOT = Path(__file__).resolve().parents[1]
UMBRELLA = [sys.executable, "-m", "ingest.tools.umbrella"]

FULL_REPORT_IMAGES = 6  # losses, accuracy, pixel strip, score timeline, top windows, embedding map
# optional file -> the images the report still has without it
IMAGES_WITHOUT = {
    "labels.json": 5,
    "trainer/train.jsonl": 5,
    "trainer/eval.jsonl": 6,
    "scores.jsonl": 4,
    "samples.npz": 4,
}
CAMERAS = ("junction-north", "junction-south")
WINDOWS_PER_CAMERA = 150
WARMUP = 8
FPS = 10


def _write_lines(path: Path, lines: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def _summary() -> dict[str, Any]:
    return {
        "source": "/tmp/demo/clip.mp4",
        "bus": "embedded://demo",
        "minutes": 3.5,
        "steps": 400,
        "production_version": "v000003",
        "eval": {
            "future_top1": 0.41,
            "order_accuracy": 0.62,
            "pixel_psnr_gain_db": 1.8,
            "pixel_psnr_db": 27.4,
            "copy_last_psnr_db": 25.6,
            "windows": 64,
        },
        "auroc": {
            "score": {"all": 0.83, "wrong_way": 0.91, "stalled": None, "jam": 0.77},
            "raw_score": {"all": 0.71, "wrong_way": 0.80, "stalled": None, "jam": 0.55},
            "pixel_error": {"all": 0.64, "wrong_way": 0.70, "stalled": None, "jam": 0.58},
        },
        "windows_scored": len(CAMERAS) * WINDOWS_PER_CAMERA,
        "serving_url": "http://127.0.0.1:8080",
        "model_input": "64x64x3",
    }


def _labels(seconds: float) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    frames = []
    for frame in range(int(seconds * FPS)):
        t = frame / FPS
        active = ["wrong_way"] if 20 <= t < 26 else ["jam"] if 40 <= t < 50 else []
        frames.append(
            {
                "frame": frame,
                "t": t,
                "vehicle_count": int(rng.integers(0, 12)) + (8 if active == ["jam"] else 0),
                "mean_speed_mps": 9.0,
                "mean_flow_direction_deg": 90.0,
                "flow_coherence": 0.9,
                "light_state": ("green", "green", "yellow", "red", "red")[int(t // 4) % 5],
                "illumination": round(1 - t / seconds, 4),
                "active_events": active,
            }
        )
    events = [
        {"kind": "wrong_way", "start_s": 20.0, "end_s": 26.0, "start_frame": 200, "end_frame": 260, "lane": 2},
        {"kind": "jam", "start_s": 40.0, "end_s": 50.0, "start_frame": 400, "end_frame": 500, "lane": None},
    ]
    return {"schema": "streamssl.synth.labels/1", "fps": FPS, "seconds": seconds, "events": events, "frames": frames}


def _trainer_logs(directory: Path) -> None:
    rng = np.random.default_rng(2)
    train = []
    for step in range(4, 401, 4):
        decay = np.exp(-step / 150)
        parts = {"future": 3.9 * decay + 1.0, "order": 3.2 * decay + 0.9, "pixel": 0.02 * decay + 0.004}
        parts = {k: float(v * rng.uniform(0.9, 1.1)) for k, v in parts.items()}
        train.append(
            {
                "kind": "train",
                "step": step,
                "time": 1.7e9 + step,
                "loss_total": sum(parts.values()),
                **{f"loss_{k}": v for k, v in parts.items()},
                "future_top1": float(0.5 * (1 - decay)),
                "order_accuracy": float(0.7 * (1 - decay)),
                "windows_per_s": 60.0,
                "data_wait_fraction": 0.1,
                "effective_rank": 12.0,
            }
        )
    _write_lines(directory / "train.jsonl", train)
    evals: list[dict[str, Any]] = []
    for version, step in enumerate(range(100, 401, 100), start=1):
        grow = step / 400
        evals.append(
            {
                "kind": "eval",
                "step": step,
                "time": 1.7e9 + step,
                "order_accuracy": 0.6 * grow,
                "future_top1": 0.4 * grow,
                "future_loss": 2.0,
                "pixel_psnr_db": 27.0,
                "copy_last_psnr_db": 25.6,
                "pixel_psnr_gain_db": 1.4,
                "windows": 64,
            }
        )
        promoted = version != 2
        evals.append(
            {
                "kind": "gate",
                "step": step,
                "time": 1.7e9 + step,
                "decision": "promoted" if promoted else "refused",
                "promoted": promoted,
                "candidate": f"v{version:06d}",
                "production": None if version == 1 else "v000001" if version < 4 else "v000003",
                "reasons": [f"future_top1: candidate {0.4 * grow:.4f} {'>=' if promoted else '<'} production"],
                "candidate_metrics": {"future_top1": 0.4 * grow},
                "production_metrics": {},
            }
        )
    _write_lines(directory / "eval.jsonl", evals)


def _scores() -> list[dict[str, Any]]:
    """Windows of 0.8 s every 0.4 s; embeddings drift with time (day to night) so the map has structure."""
    rng = np.random.default_rng(3)
    direction = rng.normal(size=32)
    lines = []
    for camera in CAMERAS:
        for sequence in range(WINDOWS_PER_CAMERA):
            start = sequence * 0.4
            in_event = 20 <= start < 26 or 40 <= start < 50
            raw = float(rng.gamma(2.0, 0.5) + (3.0 if in_event else 0.0))
            lines.append(
                {
                    "camera_id": camera,
                    "window_id": f"{camera}:{sequence:08d}",
                    "sequence": sequence,
                    "pts_start_s": start,
                    "pts_end_s": start + 0.8,
                    "score": None if sequence < WARMUP else raw * 1.5 - 1,
                    "raw_score": raw,
                    "pixel_error": None if sequence % 10 == 0 else raw / 100,
                    "model_version": "v000003",
                    "embedding": (rng.normal(size=32) * 0.3 + direction * start / 60).round(5).tolist(),
                }
            )
    return lines


def _samples(path: Path) -> None:
    rng = np.random.default_rng(4)
    scene = np.zeros((64, 64, 3), np.uint8)
    scene[..., 0] = np.linspace(40, 200, 64, dtype=np.uint8)[None, :]
    scene[..., 2] = np.linspace(200, 40, 64, dtype=np.uint8)[:, None]
    top = np.stack([np.roll(scene, 6 * k, axis=1) for k in range(8)])
    real = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    np.savez(
        path,
        top_frames=top,
        top_window_ids=np.array([f"junction-north:{k:08d}" for k in range(8)]),
        top_scores=np.linspace(6.0, 3.0, 8),
        pixel_last=np.roll(real, 1, axis=2),
        pixel_real=real,
        pixel_predicted=(real // 2 + 60).astype(np.uint8),
    )


def make_run_dir(root: Path) -> Path:
    """A run directory as `streamssl demo` writes it, with small synthetic content of realistic shapes."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.json").write_text(json.dumps(_summary()), encoding="utf-8")
    (root / "labels.json").write_text(json.dumps(_labels(60.0)), encoding="utf-8")
    _trainer_logs(root / "trainer")
    _write_lines(root / "scores.jsonl", _scores())
    _samples(root / "samples.npz")
    return root


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`streamssl report RUN_DIR` run once as a user would (a subprocess); the page it wrote."""
    run_dir = make_run_dir(tmp_path_factory.mktemp("run"))
    result = subprocess.run(
        [*UMBRELLA, "report", str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    report = run_dir / "report.html"
    assert result.stdout.strip() == str(report)
    assert report.is_file()
    return report


# (a) the reader


def test_the_reader_returns_what_was_written(tmp_path: Path) -> None:
    run = read_run_dir(make_run_dir(tmp_path))
    assert run.summary.production_version == "v000003"
    assert run.summary.auroc["score"] == {"all": 0.83, "wrong_way": 0.91, "stalled": None, "jam": 0.77}
    assert run.summary.eval["pixel_psnr_gain_db"] == 1.8
    assert run.labels is not None
    assert [(e.kind, e.start_s, e.end_s) for e in run.labels.events] == [("wrong_way", 20, 26), ("jam", 40, 50)]
    assert len(run.labels.t) == 600
    assert run.labels.light_state[:2] == ["green", "green"]
    assert run.logs.train is not None
    assert len(run.logs.train) == 100
    assert run.logs.train.steps[-1] == 400
    assert "loss_pixel" in run.logs.train.values
    assert run.logs.evals is not None
    assert list(run.logs.evals.steps) == [100, 200, 300, 400]
    assert run.logs.gates is not None
    assert [g.decision for g in run.logs.gates] == ["promoted", "refused"] + ["promoted"] * 2
    assert run.logs.gates[0].production is None
    assert run.logs.gates[1].candidate == "v000002"
    scores = run.scores
    assert scores is not None
    assert len(scores) == 300
    assert scores.embeddings.shape == (300, 32)
    assert int(np.isnan(scores.score).sum()) == WARMUP * len(CAMERAS)
    assert scores.window_id[0] == "junction-north:00000000"
    assert scores.pts_end_s[1] == pytest.approx(1.2)
    samples = run.samples
    assert samples is not None
    assert samples.top_frames is not None
    assert samples.top_frames.shape == (8, 64, 64, 3)
    assert samples.top_window_ids[7] == "junction-north:00000007"
    assert samples.top_scores[0] == 6.0
    assert samples.pixel_predicted is not None
    assert samples.pixel_predicted.shape == (6, 32, 32, 3)


@pytest.mark.parametrize(("name", "images"), IMAGES_WITHOUT.items())
def test_a_missing_optional_file_gives_a_not_available_section(tmp_path: Path, name: str, images: int) -> None:
    run_dir = make_run_dir(tmp_path)
    (run_dir / name).unlink()
    page = render_report(read_run_dir(run_dir))
    assert f"Not available: {name} is not in the run directory" in page
    assert page.count("<img ") == images
    assert page.count("<section>") == 7  # every section is still there, saying what it lacks


def test_a_run_where_nothing_was_promoted_still_gets_a_report(tmp_path: Path) -> None:
    # What `streamssl demo` writes when the gate refused every candidate: no serving, so no scores, an empty
    # AUROC table and eval, and a samples.npz with only the empty top-window placeholder.
    run_dir = make_run_dir(tmp_path)
    nothing = {"production_version": None, "eval": {}, "auroc": {}, "windows_scored": 0, "serving_url": None,
               "model_input": None, "windows_published": 150}  # fmt: skip
    (run_dir / "summary.json").write_text(json.dumps({**_summary(), **nothing}), encoding="utf-8")
    (run_dir / "scores.jsonl").unlink()
    empty = {"top_frames": np.zeros((0, 1, 1, 3)), "top_window_ids": np.array([]), "top_scores": np.array([])}
    np.savez_compressed(run_dir / "samples.npz", **empty)
    run = read_run_dir(run_dir)
    assert run.summary.production_version is None
    assert run.samples is not None
    assert run.samples.top_frames is None
    page = render_report(run)
    assert "none promoted" in page
    assert "Not available: no AUROC in summary.json" in page
    assert "Not available: samples.npz holds no pixel-head samples" in page
    assert "Not available: samples.npz holds no top-scored windows" in page
    assert page.count("<img ") == 2  # losses and accuracy


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected an object"),
        (json.dumps({k: v for k, v in _summary().items() if k != "auroc"}), "missing key 'auroc'"),
        (json.dumps({**_summary(), "minutes": "long"}), "expected a number"),
    ],
)
def test_a_malformed_summary_is_a_clear_error_naming_the_file(tmp_path: Path, content: str, expected: str) -> None:
    run_dir = make_run_dir(tmp_path)
    (run_dir / "summary.json").write_text(content, encoding="utf-8")
    with pytest.raises(RunDirError, match=re.escape(str(run_dir / "summary.json"))) as caught:
        read_run_dir(run_dir)
    assert expected in str(caught.value)


def test_a_malformed_line_names_its_file_and_line_and_the_command_exits_1(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path)
    with (run_dir / "scores.jsonl").open("a", encoding="utf-8") as stream:
        stream.write('{"camera_id": "x", "window_id": \n')
    with pytest.raises(RunDirError, match=r"scores\.jsonl: line 301: not a JSON object"):
        read_run_dir(run_dir)
    (run_dir / "summary.json").unlink()
    result = subprocess.run(
        [*UMBRELLA, "report", str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1
    assert f"streamssl report: error: {run_dir / 'summary.json'}: missing" in result.stderr
    assert not (run_dir / "report.html").exists()


# (b) the command and the self-contained page


def test_the_command_writes_a_self_contained_page(rendered: Path) -> None:
    page = rendered.read_text(encoding="utf-8")
    references = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.IGNORECASE)
    assert not [r for r in references if not r.startswith("data:")], "the page references outside files"
    assert not re.search(r"https?://[^\s\"'<]*\.(?:js|css|png|jpe?g|svg|woff2?)", page)
    assert "<link" not in page
    assert "@import" not in page
    assert "url(" not in page
    sources = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page)
    assert len(sources) == page.count("<img ") == FULL_REPORT_IMAGES
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        png = base64.b64decode(source.removeprefix("data:image/png;base64,"), validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(png)) as image:
            image.verify()
    assert "v000003" in page
    assert "http://127.0.0.1:8080" in page
    assert "n/a" in page
    assert page.count('class="badge refused"') == 1


def test_out_writes_where_asked(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run")
    (run_dir / "samples.npz").unlink()
    (run_dir / "scores.jsonl").unlink()
    out = tmp_path / "elsewhere" / "page.html"
    result = subprocess.run(
        [*UMBRELLA, "report", str(run_dir), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert out.is_file()
    assert not (run_dir / "report.html").exists()


# (c) a real headless browser (tests/browser.py)


@pytest.mark.slow
def test_a_headless_browser_renders_every_image(rendered: Path, tmp_path: Path) -> None:
    assert_renders_in_browser(rendered, tmp_path, FULL_REPORT_IMAGES)
