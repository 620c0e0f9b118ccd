"""How many cameras does the whole pipeline carry on this machine? The soak harness at growing camera counts.

    python bench/pipeline_bench.py [--cameras 4,8,12,16] [--minutes 2] [--bus kafka://HOST:PORT | --bus embedded]
        [--no-replay-full] [--keep-going] [--out FILE]

Each step is one run of bench/soak/run.py (real broker, ``streamssl-ingest`` with N looping synthetic cameras in real
time at the default 10 fps, ``streamssl-train`` beside it at low priority, ``streamssl-serve`` in stream mode) for
``--minutes`` of steady state. ``--bus embedded``: the same services with the same arguments in one process on the
embedded bus (a fresh one per step); the cores columns are then that process's CPU split by thread (its harness —
the soak's topic tails — and threads no stage started apart), the RSS column the one process's. As the soak does by
default, each step's steady state starts once the trainer's replay buffer is full (a few minutes of start-up per
step, longer at few cameras: the buffer fills with the windows they produce); ``--no-replay-full`` skips that wait
(the RSS column then includes the buffer filling).

A camera count *holds* when serving keeps up with capture (scored/produced ≥ 0.98 in the steady state), the backlog
does not grow (its mean over the last third of the steady state is at most one window per camera above the first
third's) and capture → score p99 is at most 2 s. A count whose start-up never ends (serving scores less than 90 %
of what the cameras produce for 2 minutes once it scores at all, or the start-up timeout passes) does not hold,
and the sweep stops there unless ``--keep-going``. The reference measured in the same run is capture itself:
windows/s scored against windows/s the cameras produced.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.soak import run as soak  # noqa: E402

P99_LIMIT_S = 2.0


def holds(summary: dict[str, Any]) -> tuple[bool, str]:
    """Whether the pipeline kept up at this camera count, and if not, why."""
    if "failed" in summary:
        return False, summary["failed"]
    produced, scored = summary["windows_per_s_produced"], summary["windows_per_s_scored"]
    backlog = summary["backlog_windows"]
    growth = backlog["last_third_mean"] - backlog["first_third_mean"]
    p99 = summary["latency_s"]["p99"]
    if summary["ledger"]["lost"]:
        return False, f"{summary['ledger']['lost']} windows lost"
    if produced and scored / produced < 0.98:
        return False, f"scored {scored}/s of {produced}/s"
    if growth > summary["cameras"]:
        return False, f"backlog grew by {growth:.0f} windows"
    if not p99 <= P99_LIMIT_S:
        return False, f"p99 {p99} s > {P99_LIMIT_S} s"
    return True, "holds"


def row(summary: dict[str, Any]) -> str:
    _, why = holds(summary)
    if "failed" in summary:  # no steady state to report
        return f"| {summary['cameras']} | {' | '.join(['—'] * 8)} | does not hold: {why} |"
    produced = summary["windows_per_s_produced"]
    ratio = summary["windows_per_s_scored"] / produced if produced else float("nan")
    stages = summary.get("stages")  # the embedded bus: one process, its CPU split by stage
    cores = {name: process["cores_per_camera"] for name, process in (stages or summary["processes"]).items()}
    rss = {name: f"{p['rss_start_mib']:.0f}→{p['rss_end_mib']:.0f}" for name, p in summary["processes"].items()}
    latency = summary["latency_s"]
    cores_cell = f"{cores['ingest']:.3f} / {cores['serving']:.3f} / {cores['trainer']:.3f}"
    if stages:
        cores_cell += f" (harness {cores['harness']:.3f}, other {cores['other']:.3f})"
        rss_cell = f"one process {rss['stack']}"
    else:
        rss_cell = f"{rss['ingest']} / {rss['serving']} / {rss['trainer']}"
    return (
        f"| {summary['cameras']} | {produced} | {summary['windows_per_s_scored']} | {ratio:.2f}× | {latency['p50']} | "
        f"{latency['p99']} | {summary['backlog_windows']['max']} | {cores_cell} | {rss_cell} | {why} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", default="4,8,12,16", help="comma-separated camera counts, in order")
    parser.add_argument("--minutes", type=float, default=2.0, help="steady state per camera count")
    parser.add_argument(
        "--bus", default=None, help="kafka://HOST:PORT (default: a broker started per step), or embedded: the services "
        "in one process on the embedded bus",
    )  # fmt: skip
    parser.add_argument(
        "--replay-full", action=argparse.BooleanOptionalAction, default=True,
        help="each step's start-up waits for the trainer's replay buffer to be full (the soak's --replay-full)",
    )  # fmt: skip
    parser.add_argument(
        "--keep-going", action="store_true", help="go on to larger camera counts after one that does not hold"
    )
    parser.add_argument("--out", type=Path, default=None, help="write every step's summary as JSON here")
    args = parser.parse_args(argv)
    summaries = []
    header = (
        "| cameras | windows/s produced | scored | scored / produced | p50 s | p99 s | max backlog | "
        "cores/camera ingest / serving / trainer | RSS MiB start→end ingest / serving / trainer | verdict |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---|---|---|"
    )
    for cameras in (int(count) for count in args.cameras.split(",")):
        print(f"pipeline_bench: {cameras} cameras", file=sys.stderr, flush=True)
        step = soak.main_args(["--cameras", str(cameras), "--minutes", str(args.minutes)]
                              + (["--bus", args.bus] if args.bus else [])
                              + ([] if args.replay_full else ["--no-replay-full"]))  # fmt: skip
        try:
            summaries.append(soak.run(step))
        except soak.NoSteadyStateError as error:
            summaries.append({"cameras": cameras, "failed": str(error)})
        print(row(summaries[-1]), file=sys.stderr, flush=True)
        if not holds(summaries[-1])[0] and not args.keep_going:
            print("pipeline_bench: stopping here: more cameras will not hold either", file=sys.stderr, flush=True)
            break
    print(header)
    for summary in summaries:
        print(row(summary))
    held = [summary["cameras"] for summary in summaries if holds(summary)[0]]
    print(f"\nmost cameras held: {max(held) if held else 'none'} (of {args.cameras})")
    if args.out is not None:
        args.out.write_text(json.dumps(summaries, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
