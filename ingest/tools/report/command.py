"""``streamssl report RUN_DIR [--out FILE]``: write the run's HTML report and print its path."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ingest.runtime.commands import run_command
from ingest.runtime.durable_files import write_atomically

REPORT_NAME = "report.html"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report of a demo run directory",
        description="Read a run directory written by `streamssl demo` (summary.json, labels.json, trainer/*.jsonl, "
        "scores.jsonl, samples.npz) and write one self-contained HTML page: losses, pretext accuracy, pixel-head "
        "samples, the anomaly-score timeline with labelled events, an embedding map and the promotion gate. Files "
        "other than summary.json may be missing; their sections say so.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the demo's run directory")
    parser.add_argument("--out", type=Path, metavar="FILE", help=f"output file (default: RUN_DIR/{REPORT_NAME})")
    parser.set_defaults(handler=_run)


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Render the report of ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``); return the path written."""
    # Imported here: matplotlib and scikit-learn load only for this subcommand, not for every `streamssl` call.
    from ingest.tools.report.html import render_report
    from ingest.tools.report.run_dir import read_run_dir

    page = render_report(read_run_dir(run_dir))
    target = out if out is not None else run_dir / REPORT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, page.encode("utf-8"))  # a browser open on the old report never sees half a page
    return target


def _run(args: argparse.Namespace) -> int:
    def action() -> int:
        print(write_report(args.run_dir, args.out))
        return 0

    return run_command("streamssl report", action)
