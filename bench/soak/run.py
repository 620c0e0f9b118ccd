"""Soak: N synthetic cameras in real time through the bus (the real broker or the embedded one), the trainer and
serving stream mode.

    python bench/soak/run.py [--cameras 8] [--minutes 10] [--bus kafka://HOST:PORT | --bus embedded] [--out soak.json]

On Kafka every service runs as its own process with its defaults, as in production: ``streamssl-ingest`` with one
camera per looping synthetic clip paced at its frame rate, ``streamssl-train`` in continual mode at low priority
(``nice``), ``streamssl-serve`` in stream mode. Without ``--bus`` a broker is started in a fresh directory by
scripts/kafka.sh and stopped at the end. ``--bus embedded`` (or ``embedded://NAME``) runs the same three services
with the same arguments in ONE process (bench/soak/embedded_stack.py: the embedded bus is in-process only), the
trainer's threads at nice +10, the two topic tails inside it too. Both variants are a :class:`Stack` to the phases
below. The run has three phases:

1. start-up: until serving has a model (the trainer's first export was promoted) and has scored the windows that
   queued meanwhile, and (``--replay-full``, the default) until the trainer's bounded replay buffer is full: its fill
   ratio, scraped from the trainer's metrics endpoint (``--metrics-port``, a free port the soak picks), is at least
   0.99. A buffer filling up to its bound is start-up, not a leak: the steady state starts once it is full, so the
   trainer's RSS over the steady state is what it is with the buffer at its bound (the summary's ``trainer_replay``:
   the buffer at the steady state's start and end). ``--trainer-replay-windows N`` bounds it at N windows (the
   trainer's ``data.replay_windows``, through a ``--config`` file) for a short run;
2. steady state, ``--minutes`` long: windows/s produced and scored, backlog (produced − scored) over time, capture →
   score latency of each window captured in it (from the last frame's capture time to the result's broker
   timestamp), CPU seconds of each process (with its children) at the start and the end, and its RSS every
   5 s: the trainer's RSS swings by tens of MiB with its export and evaluation cycle, so a sample at each end
   says more about where in that cycle it fell than about growth. Start → end is the least-squares line through
   every sample, at the steady state's two ends, beside the range (:class:`RssSeries`);
   ``--settle-minutes M`` runs M more minutes before the steady state starts (serving's per-camera scene
   memories take ~13 min to reach their bound);
3. drain: ingest is stopped, serving must score every window on the topic; then serving and the trainer stop.

On the embedded bus the process table has one row, ``stack`` (its RSS includes the bus itself: every window and
result stays in memory for the run), and ``stages`` splits its CPU by thread (/proc/PID/task/*/stat, sampled every
second): ``ingest``, ``trainer`` (export children included), ``serving``, ``harness`` (the tails and the control
loop, which the Kafka soak runs in its parent, unmeasured) and ``other`` (threads no stage started, and what threads
used after their last sample); bench/soak/embedded_stack.py says how threads are attributed.

The ledger (windows produced / scored / duplicates / lost) is exact: every window id on the window topic against
every result on the output topic. Exit status 1 if a window was lost or a process failed, so CI can run a short
version; the timing numbers are reported, never asserted (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.soak import embedded_stack  # noqa: E402
from ingest.bus import open_bus  # noqa: E402
from ingest.contract.messages import header_from_record  # noqa: E402
from trainer.config import DataConfig  # noqa: E402

CLIP_SECONDS = 20.0  # each clip loops: long enough that a loop's discontinuity is rare, short enough to render fast
CLIP_SIZE = (320, 180)  # a substream-sized camera; ingest cuts its default 128×128 windows from it
DRAIN_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 120.0
SAMPLE_EVERY_S = 5.0
FIRST_MODEL_TIMEOUT_S = 600.0  # start-up without the replay wait: the first model, its promotion, serving's catch-up
WINDOWS_PER_CAMERA_S = 1.25  # ingest's default 8-frame windows, stride 8, at the synthetic clips' 10 fps
# The slowest rate the default timeout allows the trainer's replay buffer to fill at. Measured (8 cameras, Kafka, 2
# shared cores): ~6 windows/s (4-8 per 30 s interval), the default 64 MiB bound reached at ~1,700 windows 280 s in.
REPLAY_FILL_FLOOR_PER_S = 2.0
PROGRESS_EVERY_S = 30.0
REPLAY_FULL = 0.99  # the trainer's replay fill ratio at which start-up may end
# Serving scoring less than this share of what the cameras produce, over this long once it scores at all: it will
# not catch up with the start-up backlog, so waiting out the start-up timeout would only say so later.
BEHIND_SPAN_S = 120.0
BEHIND_SHARE = 0.9
REPLAY_GAUGES = {"windows": "streamssl_trainer_replay_windows", "bytes": "streamssl_trainer_replay_bytes",
                 "fill": "streamssl_trainer_replay_fill_ratio"}  # fmt: skip


def say(message: str) -> None:
    print(f"soak: {message}", file=sys.stderr, flush=True)


class RowTail:
    """A thread that follows a topic's records and appends one row per record to ``rows``; ``error`` is what ended
    it early (the run reports it: a tail that dies would fake lost windows). Subclasses say how to follow."""

    topic: str

    def __post_init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"tail-{self.topic}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        try:
            self._follow()
        except BaseException as error:
            self.error = error

    def _follow(self) -> None:
        raise NotImplementedError


@dataclass
class TopicTail(RowTail):
    """Reads a topic from the beginning (no consumer group) and keeps what each record says."""

    bus_url: str
    topic: str
    parse: Any  # Callable[[Record], dict[str, Any]]

    def _follow(self) -> None:
        with open_bus(self.bus_url) as bus:
            bus.create_topic(self.topic, 8)
            with bus.consumer([self.topic], group_id=None) as consumer:
                while not self._stop.is_set():
                    for record in consumer.poll(0.5):
                        self.rows.append(self.parse(record))


def window_row(record: Any) -> dict[str, Any]:
    header = header_from_record(record)
    return {"window_id": header.window_id, "camera_id": header.camera_id, "t": record.timestamp_ms / 1000}


def result_row(record: Any) -> dict[str, Any]:
    result = json.loads(record.value)
    captured_until = result["capture_time_s"] + (result["pts_end_s"] - result["pts_start_s"])
    return {"window_id": result["window_id"], "captured_until": captured_until, "t": record.timestamp_ms / 1000}


def process_usage(pid: int) -> dict[str, float]:
    """CPU seconds of the process and its children (the trainer's export children included, finished ones too) and,
    apart, of the children alone; RSS (MiB) of the process itself and, apart, of its live children (an export child
    comes and goes)."""
    nan = float("nan")
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {"cpu_s": nan, "children_cpu_s": nan, "rss_mib": nan, "children_rss_mib": nan}
    cpu, own, rss = 0.0, nan, []
    for member in members:
        try:
            times = member.cpu_times()
            cpu += times.user + times.system + times.children_user + times.children_system
            if member is root:
                own = times.user + times.system
            rss.append(member.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            rss.append(0.0)
    return {"cpu_s": cpu, "children_cpu_s": cpu - own, "rss_mib": rss[0], "children_rss_mib": sum(rss[1:])}


class RssSeries:
    """One process's RSS sampled over the steady state, summarised so that a periodic swing (the trainer's export
    and evaluation cycle: tens of MiB) is not read as growth or shrinkage, while a leak still shows, in the trend."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (seconds into the steady state, MiB)

    def add(self, t: float, mib: float) -> None:
        if mib == mib:  # NaN: the process was gone at that moment
            self.samples.append((t, mib))

    def summary(self) -> dict[str, float | None]:
        """Start and end: the least-squares line through every sample, at the first and the last sample's time."""
        if not self.samples:
            return {"start_mib": None, "end_mib": None, "growth": None, "trend_mib_per_10min": None,
                    "min_mib": None, "max_mib": None}  # fmt: skip
        times, values = zip(*self.samples, strict=True)
        if len(set(times)) > 1:
            slope, intercept = statistics.linear_regression(times, values)
        else:
            slope, intercept = 0.0, statistics.fmean(values)
        start, end = intercept + slope * times[0], intercept + slope * times[-1]
        return {"start_mib": round(start, 1), "end_mib": round(end, 1), "growth": round(end / start - 1, 3),
                "trend_mib_per_10min": round(slope * 600, 1), "min_mib": round(min(values), 1),
                "max_mib": round(max(values), 1)}  # fmt: skip


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def usage(self) -> dict[str, float]:
        return process_usage(self.process.pid)


@contextmanager
def broker(bus: str | None, work: Path) -> Iterator[str]:
    """The bus URL: the one given, a fresh embedded bus for ``embedded``, or a broker started (and stopped at the end)
    by scripts/kafka.sh."""
    if bus == "embedded":
        yield f"embedded://soak-{uuid.uuid4().hex[:8]}"
        return
    if bus is not None:
        yield bus
        return
    env = {**os.environ, "STREAMSSL_KAFKA_DIR": str(work / "kafka")}
    script = str(REPO / "scripts" / "kafka.sh")
    started = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True, check=False)
    if started.returncode != 0:
        raise SystemExit(f"soak: scripts/kafka.sh start failed:\n{started.stderr[-2000:]}")
    try:
        yield f"kafka://{started.stdout.strip().splitlines()[-1]}"
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, check=False)


def make_clips(work: Path, count: int, seed: int) -> list[Path]:
    clips = []
    for index in range(count):
        clip = work / f"clip-{index}.mp4"
        width, height = CLIP_SIZE
        subprocess.run(
            [sys.executable, "-m", "ingest.tools.umbrella", "synth", "--seconds", str(CLIP_SECONDS),
             "--seed", str(seed + index), "--width", str(width), "--height", str(height), "--out", str(clip)],
            check=True, capture_output=True,
        )  # fmt: skip
        clips.append(clip)
    return clips


def free_port() -> int:
    """A TCP port free now (the trainer binds it a few seconds later)."""
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))  # where the trainer's telemetry server binds
        return int(probe.getsockname()[1])


def trainer_config(args: argparse.Namespace, work: Path) -> list[str]:
    """``--config FILE`` for the trainer's replay bound (``--trainer-replay-windows``; none: its own default)."""
    if args.trainer_replay_windows is None:
        return []
    config = work / "trainer.yaml"
    config.write_text(yaml.safe_dump({"data": {"replay_windows": args.trainer_replay_windows}}))
    return ["--config", str(config)]


def service_commands(
    args: argparse.Namespace, work: Path, topics: dict[str, str], metrics_port: int
) -> dict[str, list[str]]:
    """Each service's ``python`` arguments (``-m MODULE ...``, without ``--bus``); renders the clips it loops. The
    trainer serves its metrics on ``metrics_port`` (the soak reads its replay buffer there)."""
    clips = make_clips(work, min(args.clips, args.cameras), args.seed)
    cameras = [
        {"camera_id": f"cam-{index}", "url": str(clips[index % len(clips)]), "loop": True, "realtime": True}
        for index in range(args.cameras)
    ]
    config = work / "ingest.yaml"
    config.write_text(yaml.safe_dump({"cameras": cameras}))
    registry, checkpoints = work / "registry", work / "checkpoints"
    commands = {
        "ingest": ["-m", "ingest", "--config", str(config), "--topic", topics["windows"]],
        # The trainer yields the CPU to the real-time path, as its deployment does (nice, one torch thread).
        "trainer": ["-m", "trainer", "--registry", str(registry), "--checkpoint-dir", str(checkpoints),
                    "--threads", "1", "--export-every", str(args.export_every), "--topic", topics["windows"],
                    "--metrics-port", str(metrics_port), *trainer_config(args, work)],
        "serving": ["-m", "serving", "--registry", str(registry), "--port", "0",
                    "--stream-topic", topics["windows"], "--output-topic", topics["scores"]],
    }  # fmt: skip
    return commands


def start_services(
    args: argparse.Namespace, bus: str, work: Path, topics: dict[str, str], metrics_port: int
) -> list[Service]:
    services = []
    for name, argv in service_commands(args, work, topics, metrics_port).items():
        log_path = work / f"{name}.log"
        prefix = ["nice", "-n", "10"] if name == "trainer" else []
        process = subprocess.Popen(
            [*prefix, sys.executable, *argv, "--bus", bus],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_path.open("wb"),
        )  # fmt: skip
        services.append(Service(name, process, log_path))
    return services


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Stack(Protocol):
    """The three services as the phases see them: separate processes (Kafka) or one (the embedded bus)."""

    def check_alive(self) -> None:
        """Raise, with the log's end, if a process has exited."""

    def serving_alive(self) -> bool: ...

    def usage(self) -> dict[str, dict[str, float]]:
        """Per process: :func:`process_usage`."""

    def stage_usage(self) -> dict[str, dict[str, Any]]:
        """Per stage of a process that runs several: CPU seconds, live threads and their nice values; empty where
        each stage has its own process."""

    def stop_ingest(self) -> int | None:
        """Stop ingest (it flushes) and wait for it: its exit status."""

    def stop_rest(self) -> dict[str, int | None]:
        """Stop serving and the trainer and wait for them: every exit status not given yet (None: killed)."""

    def kill(self) -> None:
        """Kill what still runs (the run's ``finally``)."""


@dataclass
class ProcessStack:
    """One process per service: the real broker."""

    services: list[Service]

    def _named(self, name: str) -> Service:
        return next(service for service in self.services if service.name == name)

    def check_alive(self) -> None:
        for service in self.services:
            if service.process.poll() is not None:
                tail = service.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{service.name} exited {service.process.returncode} during the soak:\n{tail}")

    def serving_alive(self) -> bool:
        return self._named("serving").process.poll() is None

    def usage(self) -> dict[str, dict[str, float]]:
        return {service.name: service.usage() for service in self.services}

    def stage_usage(self) -> dict[str, dict[str, Any]]:
        return {}

    def stop_ingest(self) -> int | None:
        ingest = self._named("ingest").process
        ingest.send_signal(signal.SIGTERM)
        return ingest.wait(STOP_TIMEOUT_S)

    def stop_rest(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for name in ("serving", "trainer"):
            self._named(name).process.send_signal(signal.SIGTERM)
        for name in ("serving", "trainer"):
            try:
                codes[name] = self._named(name).process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._named(name).process.kill()
                codes[name] = None
        return codes

    def kill(self) -> None:
        for service in self.services:
            if service.process.poll() is None:
                service.process.kill()


@dataclass
class FileTail(RowTail):
    """The rows the embedded stack's tail of ``topic`` writes to ``path`` (JSON lines), read as they come.
    ``stop`` reads what was written before it."""

    path: Path
    topic: str

    def _follow(self) -> None:
        with self.path.open("rb") as stream:
            pending = b""
            while True:
                chunk = stream.read()
                *lines, pending = (pending + chunk).split(b"\n")
                self.rows.extend(json.loads(line) for line in lines if line)
                if not chunk and self._stop.wait(0.5):
                    break


@dataclass
class EmbeddedStack:
    """The three services in one process on the embedded bus (bench/soak/embedded_stack.py, its signal protocol)."""

    process: subprocess.Popen[bytes]
    log_path: Path
    events_path: Path
    ledger: embedded_stack.ThreadLedger

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the stack exited {self.process.returncode} during the soak:\n{tail}")

    def serving_alive(self) -> bool:
        return self.process.poll() is None

    def usage(self) -> dict[str, dict[str, float]]:
        return {"stack": process_usage(self.process.pid)}

    def stage_usage(self) -> dict[str, dict[str, Any]]:
        live = self.ledger.sample()
        usage = process_usage(self.process.pid)  # after the threads: its total covers what they used
        return self.ledger.by_stage(live, usage["cpu_s"] - usage["children_cpu_s"], usage["children_cpu_s"])

    def _event(self, name: str) -> Mapping[str, Any] | None:
        return next((event for event in embedded_stack.read_events(self.events_path) if event["event"] == name), None)

    def stop_ingest(self) -> int | None:
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while (event := self._event("ingest_stopped")) is None:
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"ingest did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM")
            time.sleep(0.5)
        return event["code"]

    def stop_rest(self) -> dict[str, int | None]:
        self.process.send_signal(signal.SIGTERM)  # the second one: serving and the trainer
        try:
            code: int | None = self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = None
        self.ledger.stop()
        stopped = self._event("stopped") or {"codes": {}, "tail_errors": {}}
        if stopped["tail_errors"]:
            raise RuntimeError(f"the stack's topic tails failed: {stopped['tail_errors']}")
        return {"serving": stopped["codes"].get("serving"), "trainer": stopped["codes"].get("trainer"), "stack": code}

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.ledger.stop()


def start_embedded(
    args: argparse.Namespace, bus: str, work: Path, topics: dict[str, str], metrics_port: int
) -> tuple[EmbeddedStack, FileTail, FileTail]:
    """The stack process, given the soak's command lines and files to write; the tails of those files, started."""
    files = {kind: work / f"stack-{kind}.jsonl" for kind in ("events", "windows", "scores")}
    for path in files.values():
        path.write_text("")
    windows, scores = FileTail(files["windows"], topics["windows"]), FileTail(files["scores"], topics["scores"])
    windows.start()
    scores.start()
    say(f"rendering clips, starting ingest ({args.cameras} cameras), trainer and serving in one process on {bus}")
    commands = service_commands(args, work, topics, metrics_port)
    argv = {name: [*command[2:], "--bus", bus] for name, command in commands.items()}
    spec = work / "stack.json"
    spec.write_text(json.dumps({"bus": bus, "topics": topics, "argv": argv,
                                "files": {kind: str(path) for kind, path in files.items()}}, indent=2))  # fmt: skip
    log_path = work / "stack.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.soak.embedded_stack", str(spec)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_path.open("wb"),
    )  # fmt: skip
    ledger = embedded_stack.ThreadLedger(process.pid).start()
    return EmbeddedStack(process, log_path, files["events"], ledger), windows, scores


def start_stack(
    args: argparse.Namespace, bus: str, work: Path, topics: dict[str, str], metrics_port: int
) -> tuple[Stack, RowTail, RowTail]:
    """The services on ``bus`` and the tails of the two topics, started (the tails first); the trainer serves its
    metrics on ``metrics_port``."""
    if bus.startswith("embedded://"):
        return start_embedded(args, bus, work, topics, metrics_port)
    windows = TopicTail(bus, topics["windows"], window_row)
    scores = TopicTail(bus, topics["scores"], result_row)
    windows.start()
    scores.start()
    say(f"rendering clips, starting ingest ({args.cameras} cameras), trainer and serving on {bus}")
    return ProcessStack(start_services(args, bus, work, topics, metrics_port)), windows, scores


def trainer_replay(metrics_port: int) -> dict[str, float] | None:
    """The trainer's replay gauges (``windows``, ``bytes``, ``fill``: see trainer/metrics.py) from its metrics
    endpoint; None while it does not answer (it serves once the trainer is built)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    families = text_string_to_metric_families(text)
    samples = {sample.name: sample.value for family in families for sample in family.samples}
    return {key: samples[name] for key, name in REPLAY_GAUGES.items()}


def replay_limit(args: argparse.Namespace) -> int:
    """The trainer's replay bound by count: ``--trainer-replay-windows``, else the trainer's own default."""
    return args.trainer_replay_windows if args.trainer_replay_windows is not None else DataConfig().replay_windows


def replay_text(replay: dict[str, float] | None, limit: int) -> str:
    if replay is None:
        return "replay buffer: the trainer's metrics do not answer yet"
    return f"replay buffer {replay['windows']:,.0f} / {limit:,} windows, {replay['bytes'] / 2**20:.0f} MiB"


def startup_timeout(args: argparse.Namespace) -> float:
    """``--startup-timeout``, else long enough for the first model and, with ``--replay-full``, for the replay buffer
    to fill at a pessimistic rate: the trainer offers the buffer the fresh windows it trains on, at most what the
    cameras produce (less the held-out share) and, on a busy machine, fewer (:data:`REPLAY_FILL_FLOOR_PER_S`)."""
    if args.startup_timeout is not None:
        return args.startup_timeout
    if not args.replay_full:
        return FIRST_MODEL_TIMEOUT_S
    produced = args.cameras * WINDOWS_PER_CAMERA_S * (1 - 1 / DataConfig().holdout_every)
    return FIRST_MODEL_TIMEOUT_S + replay_limit(args) / min(produced, REPLAY_FILL_FLOOR_PER_S)


def startup_failure(
    windows: RowTail, scores: RowTail, replay: dict[str, float] | None, limit: int, timeout_s: float
) -> str:
    if not scores.rows:
        return f"serving has no model yet (nothing promoted?) after {timeout_s:.0f} s: {len(windows.rows)} windows"
    if replay is None or replay["fill"] < REPLAY_FULL:
        return f"the trainer's replay buffer is not full after {timeout_s:.0f} s: {replay_text(replay, limit)}"
    return f"serving is behind after {timeout_s:.0f} s: {len(scores.rows)} of {len(windows.rows)}"


class NoSteadyStateError(RuntimeError):
    """The stack ran but never reached a steady state at this load (serving behind, or no model in time)."""


class CatchUpWatch:
    """Whether serving gains on the backlog: over the last :data:`BEHIND_SPAN_S` after its first score, it must have
    scored at least :data:`BEHIND_SHARE` of the windows produced."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int, int]] = deque()  # (time, windows produced, windows scored)

    def falling_behind(self, now: float, produced: int, scored: int) -> str | None:
        if not scored:
            return None
        self._samples.append((now, produced, scored))
        while len(self._samples) > 1 and self._samples[1][0] <= now - BEHIND_SPAN_S:
            self._samples.popleft()
        then, produced_then, scored_then = self._samples[0]
        span = now - then
        if span < BEHIND_SPAN_S or produced == produced_then:
            return None
        if scored - scored_then >= BEHIND_SHARE * (produced - produced_then):
            return None
        return (
            f"serving cannot keep up: it scored {(scored - scored_then) / span:.1f} windows/s while the cameras "
            f"produced {(produced - produced_then) / span:.1f}/s over the last {span:.0f} s ({scored} of {produced})"
        )


def wait_caught_up(
    stack: Stack, windows: RowTail, scores: RowTail, args: argparse.Namespace, metrics_port: int
) -> None:
    """Until serving has a model and has caught up with the windows that queued while the first one was trained and,
    with ``--replay-full``, the trainer's replay buffer is full (its bound reached: start-up, not growth)."""
    began, timeout_s, limit = time.monotonic(), startup_timeout(args), replay_limit(args)
    next_report, caught_up_once, watch = began + PROGRESS_EVERY_S, False, CatchUpWatch()
    while True:
        stack.check_alive()
        behind = watch.falling_behind(time.monotonic(), len(windows.rows), len(scores.rows))
        if behind is not None:
            raise NoSteadyStateError(behind)
        caught_up = bool(scores.rows) and len(windows.rows) - len(scores.rows) <= 2 * args.cameras
        replay = trainer_replay(metrics_port) if args.replay_full else None
        full = not args.replay_full or (replay is not None and replay["fill"] >= REPLAY_FULL)
        if caught_up and full:
            return
        now = time.monotonic()
        if caught_up and not caught_up_once:  # what the replay wait adds to start-up
            say(f"serving caught up after {now - began:.0f} s; waiting for the {replay_text(replay, limit)}")
            caught_up_once = True
        if now - began > timeout_s:
            raise NoSteadyStateError(startup_failure(windows, scores, replay, limit, timeout_s))
        if args.replay_full and now >= next_report:
            say(f"start-up {now - began:.0f} s: {replay_text(replay, limit)}; {len(scores.rows)} of "
                f"{len(windows.rows)} windows scored")  # fmt: skip
            next_report += PROGRESS_EVERY_S
        time.sleep(1.0)


def settle(args: argparse.Namespace, stack: Stack, windows: RowTail, scores: RowTail) -> None:
    """``--settle-minutes`` more of start-up: serving's per-camera scene memories fill to their bound (1,000
    windows, ~13 min of a camera at 1.25 windows/s), so a steady state after it measures RSS with them full."""
    end = time.monotonic() + args.settle_minutes * 60
    next_report = time.monotonic() + PROGRESS_EVERY_S
    while time.monotonic() < end:
        stack.check_alive()
        if time.monotonic() >= next_report:
            left = (end - time.monotonic()) / 60
            say(f"settling, {left:.1f} min left: {len(windows.rows)} windows produced, {len(scores.rows)} scored")
            next_report += PROGRESS_EVERY_S
        time.sleep(1.0)


def steady_state(args: argparse.Namespace, stack: Stack, windows: RowTail, scores: RowTail, metrics_port: int) -> dict:
    start = time.time()
    usage_start, stages_start = stack.usage(), stack.stage_usage()
    replay_start = trainer_replay(metrics_port)
    backlog: list[tuple[float, int]] = []
    rss = {name: RssSeries() for name in usage_start}
    end = start + args.minutes * 60
    next_report = start + 30
    while time.time() < end:
        stack.check_alive()
        backlog.append((time.time() - start, len(windows.rows) - len(scores.rows)))
        for name, usage in stack.usage().items():
            rss[name].add(time.time() - start, usage["rss_mib"])
        if time.time() >= next_report:
            say(f"{time.time() - start:.0f} s: {len(windows.rows)} windows produced, {len(scores.rows)} scored")
            next_report += 30
        time.sleep(SAMPLE_EVERY_S)
    usage_end, stages_end = stack.usage(), stack.stage_usage()
    replay_end = trainer_replay(metrics_port)
    for name, usage in usage_end.items():
        rss[name].add(time.time() - start, usage["rss_mib"])
    return {"start": start, "end": time.time(), "usage_start": usage_start, "usage_end": usage_end, "backlog": backlog,
            "stages_start": stages_start, "stages_end": stages_end, "replay_start": replay_start,
            "replay_end": replay_end, "rss": {name: series.summary() for name, series in rss.items()}}  # fmt: skip


def drain(stack: Stack, windows: RowTail, scores: RowTail) -> dict[str, int | None]:
    """Stop ingest, let serving score what is left, then stop serving and the trainer; their exit codes."""
    codes: dict[str, int | None] = {"ingest": stack.stop_ingest()}
    time.sleep(3.0)  # the window tail catches the last acknowledged windows
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while {row["window_id"] for row in windows.rows} - {row["window_id"] for row in scores.rows}:
        if time.monotonic() > deadline or not stack.serving_alive():
            break
        time.sleep(1.0)
    time.sleep(2.0)  # a duplicate would arrive now
    codes.update(stack.stop_rest())
    return codes


def stage_rows(args: argparse.Namespace, steady: dict, codes: dict, seconds: float) -> dict[str, dict[str, Any]]:
    """Cores per stage of a process that runs several (the embedded stack); its threads and their nice values at
    the end."""
    rows = {}
    for stage, after in steady["stages_end"].items():
        cpu = after["cpu_s"] - steady["stages_start"].get(stage, {"cpu_s": 0.0})["cpu_s"]
        rows[stage] = {"cores": round(cpu / seconds, 3), "cores_per_camera": round(cpu / seconds / args.cameras, 4),
                       "threads": after["threads"], "nice": after["nice"], "exit_code": codes.get(stage)}  # fmt: skip
    return rows


def replay_row(start: dict[str, float] | None, end: dict[str, float] | None) -> dict[str, float | None]:
    """The trainer's replay buffer at the steady state's start and end (None: its metrics did not answer)."""
    row: dict[str, float | None] = {}
    for when, replay in (("start", start), ("end", end)):
        row[f"windows_{when}"] = None if replay is None else int(replay["windows"])
        row[f"bytes_{when}_mib"] = None if replay is None else round(replay["bytes"] / 2**20, 1)
        row[f"fill_{when}"] = None if replay is None else round(replay["fill"], 3)
    return row


def summarise(args: argparse.Namespace, steady: dict, windows: RowTail, scores: RowTail, codes: dict) -> dict:
    start, end = steady["start"], steady["end"]
    seconds = end - start
    produced = Counter(row["window_id"] for row in windows.rows)
    scored = Counter(row["window_id"] for row in scores.rows)
    latencies = [row["t"] - row["captured_until"] for row in scores.rows if start <= row["captured_until"] < end]
    backlog = steady["backlog"]
    third = max(1, len(backlog) // 3)
    processes = {}
    for name, before in steady["usage_start"].items():
        after = steady["usage_end"][name]
        cpu = after["cpu_s"] - before["cpu_s"]
        rss = steady["rss"][name]
        processes[name] = {
            "rss_start_mib": rss["start_mib"],
            "rss_end_mib": rss["end_mib"],
            "rss_growth": rss["growth"],
            "rss_trend_mib_per_10min": rss["trend_mib_per_10min"],
            "rss_min_mib": rss["min_mib"],
            "rss_max_mib": rss["max_mib"],
            "children_rss_end_mib": round(after["children_rss_mib"], 1),
            "cores": round(cpu / seconds, 3),
            "cores_per_camera": round(cpu / seconds / args.cameras, 4),
            "exit_code": codes.get(name),
        }
    ledger = {
        "produced": len(produced),
        "scored": len(scored),
        "duplicates": sum(count - 1 for count in scored.values() if count > 1),
        "lost": len(set(produced) - set(scored)),
        "unexpected": len(set(scored) - set(produced)),
    }
    stages = {"stages": stage_rows(args, steady, codes, seconds)} if steady["stages_end"] else {}
    return {
        "cameras": args.cameras,
        "replay_full": args.replay_full,  # the steady state started with the trainer's replay buffer full
        "settle_minutes": args.settle_minutes,  # and this long after start-up
        "steady_seconds": round(seconds, 1),
        "windows_per_s_produced": round(sum(start <= row["t"] < end for row in windows.rows) / seconds, 2),
        "windows_per_s_scored": round(sum(start <= row["t"] < end for row in scores.rows) / seconds, 2),
        "latency_s": {"windows": len(latencies), "p50": round(percentile(latencies, 0.5), 3),
                      "p99": round(percentile(latencies, 0.99), 3),
                      "mean": round(statistics.fmean(latencies), 3) if latencies else None},
        "backlog_windows": {"first_third_mean": round(statistics.fmean(b for _, b in backlog[:third]), 1),
                            "last_third_mean": round(statistics.fmean(b for _, b in backlog[-third:]), 1),
                            "max": max(b for _, b in backlog)},
        "processes": processes,
        **stages,
        "trainer_replay": replay_row(steady["replay_start"], steady["replay_end"]),
        "ledger": ledger,
    }  # fmt: skip


def replay_report(row: dict[str, float | None]) -> str:
    def pair(name: str, unit: str, spec: str) -> str:
        values = (row[f"{name}_{when}{unit}"] for when in ("start", "end"))
        return " → ".join("n/a" if value is None else format(value, spec) for value in values)

    return (f"  trainer replay buffer, steady state start → end: {pair('windows', '', ',')} windows, "
            f"{pair('bytes', '_mib', '.1f')} MiB, fill ratio {pair('fill', '', '.3f')}")  # fmt: skip


def report(summary: dict) -> str:
    lines = [
        f"soak: {summary['cameras']} cameras, {summary['steady_seconds']:.0f} s steady state "
        f"(after {summary['startup_seconds']:.0f} s of start-up: clips, first model, backlog"
        f"{', full replay buffer' if summary['replay_full'] else ''})",
        f"  windows/s produced {summary['windows_per_s_produced']}, scored {summary['windows_per_s_scored']}",
        "  capture → score latency p50 {p50} s, p99 {p99} s over {windows} windows".format(**summary["latency_s"]),
        "  backlog (windows produced − scored): first third {first_third_mean}, last third {last_third_mean}, "
        "max {max}".format(**summary["backlog_windows"]),
        "  process  RSS start → end (MiB)  growth  trend (MiB/10 min)  range (MiB)      children at end (MiB)  cores  "
        "cores/camera  exit   (RSS start → end: the least-squares line through a sample every 5 s)",
    ]
    for name, row in summary["processes"].items():
        row = {key: float("nan") if value is None else value for key, value in row.items()}  # no RSS sample
        lines.append(
            f"  {name:<8} {row['rss_start_mib']:>8.1f} → {row['rss_end_mib']:<8.1f} {row['rss_growth']:>+7.1%}  "
            f"{row['rss_trend_mib_per_10min']:>+10.1f}        {row['rss_min_mib']:>6.1f}–{row['rss_max_mib']:<8.1f}"
            f"{row['children_rss_end_mib']:>10.1f}            {row['cores']:.2f}   {row['cores_per_camera']:.3f}"
            f"        {row['exit_code']}"
        )
    if "stages" in summary:
        lines.append("  stage    cores  cores/camera  threads  nice   exit   (the one process's CPU split by thread)")
        for name, row in summary["stages"].items():
            nice = ",".join(str(value) for value in row["nice"]) or "-"
            lines.append(f"  {name:<8} {row['cores']:.2f}   {row['cores_per_camera']:.3f}         {row['threads']:>7}  "
                         f"{nice:<6} {'' if row['exit_code'] is None else row['exit_code']}")  # fmt: skip
    lines.append(replay_report(summary["trainer_replay"]))
    lines.append("  ledger: " + ", ".join(f"{key} {value}" for key, value in summary["ledger"].items()))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="streamssl-soak-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        began = time.time()
        run_id = uuid.uuid4().hex[:8]
        topics = {"windows": f"soak.{run_id}", "scores": f"soak.scores.{run_id}"}
        with broker(args.bus, work) as bus:
            metrics_port = free_port()
            stack, windows, scores = start_stack(args, bus, work, topics, metrics_port)
            try:
                wait_caught_up(stack, windows, scores, args, metrics_port)
                full = ", the trainer's replay buffer is full" if args.replay_full else ""
                say(f"serving caught up with the start-up backlog{full}")
                settle(args, stack, windows, scores)
                say(f"steady state for {args.minutes} min")
                steady = steady_state(args, stack, windows, scores, metrics_port)
                say("draining: ingest stopped, serving scores what is left")
                codes = drain(stack, windows, scores)
            finally:
                stack.kill()
                windows.stop()
                scores.stop()
            for tail in (windows, scores):
                if tail.error is not None:
                    raise RuntimeError(f"reading {tail.topic} failed: {tail.error!r}")
            summary = summarise(args, steady, windows, scores, codes)
            return {"startup_seconds": round(steady["start"] - began, 1), **summary}


def main_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The soak's options (bench/pipeline_bench.py builds its steps with them)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the steady state")
    parser.add_argument(
        "--bus", default=None, help="kafka://HOST:PORT (default: start a broker for the run), or embedded "
        "(embedded://NAME): the three services in one process on the embedded bus",
    )  # fmt: skip
    parser.add_argument("--clips", type=int, default=2, help="distinct synthetic clips the cameras loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export-every", type=int, default=25, help="trainer steps between exports")
    parser.add_argument(
        "--replay-full", action=argparse.BooleanOptionalAction, default=True,
        help="start-up also waits until the trainer's replay buffer is full (fill ratio >= 0.99)",
    )  # fmt: skip
    parser.add_argument(
        "--trainer-replay-windows", type=int, default=None, metavar="N",
        help="the trainer's replay bound by count (data.replay_windows; default: the trainer's own)",
    )  # fmt: skip
    parser.add_argument(
        "--startup-timeout", type=float, default=None, help="seconds to a model, no backlog and (--replay-full) a "
        "full replay buffer (default: enough for the replay buffer to fill at a pessimistic rate)",
    )  # fmt: skip
    parser.add_argument(
        "--settle-minutes", type=float, default=0.0, metavar="M",
        help="after start-up, run M more minutes before the steady state (e.g. 14: serving's scene memories full)",
    )  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="keep clips, logs and checkpoints here")
    parser.add_argument("--out", type=Path, default=None, help="write the summary as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = main_args(argv)
    summary = run(args)
    print(report(summary))
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=2))
    failed = [name for name, row in summary["processes"].items() if row["exit_code"] != 0]
    if summary["ledger"]["lost"] or failed:
        print(f"soak: FAILED: {summary['ledger']['lost']} windows lost; exit codes {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
