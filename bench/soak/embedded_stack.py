"""The soak's embedded-bus variant: ingest, the trainer and serving stream mode in ONE process, on one embedded bus.

    python -m bench.soak.embedded_stack SPEC.json

bench/soak/run.py ``--bus embedded`` starts it (the embedded bus is in-process only, so the three services share a
process). SPEC (JSON) names the bus URL, the two topics, the three command lines (exactly the arguments the soak
gives ``streamssl-ingest``, ``streamssl-train`` and ``streamssl-serve``) and the files written below. Each service
runs through its CLI's own code: the CLI's parser, then its run function (``run_ingest``, ``run_trainer``,
``run_serving`` in the service's ``__main__``: settings, bus, service, metrics, exit status) inside the same
``run_command``. What differs: each service runs on its own root thread, and its stop request goes to this
process's control instead of the stop signals (a CLI installs signal handlers, which only a main thread can). The
trainer serves its metrics on ``--metrics-port`` as its CLI does (the soak gives it a free port and reads its replay
buffer there); each service has its own metrics registry, so three in one process do not clash. Ingest and serving
serve none (off by default, and the soak sets no port for them).

The trainer's root thread gets its nice value raised by 10, as ``nice -n 10`` does to the trainer's process
(``os.setpriority`` on its native thread id) before it starts anything: every thread it starts — window source,
decode and collate pools, torch's native threads — and its export child processes inherit that nice value from
the thread that creates them (Linux). What is not lowered: library thread pools started at import time by the main
thread (they are shared), and the GIL: a niced thread that holds it still holds up the others, so the trainer
yields the CPU but not the interpreter.

Threads are named by stage for the parent's accounting (:func:`read_threads`): each root thread sets its Linux
name (``/proc/self/task/TID/comm``) to its stage — ``ingest``, ``trainer``, ``serving`` — and every thread it starts,
Python or native (onnxruntime's and torch's pools among them), inherits the name of the thread that created it.
The main thread is ``harness``: the two topic tails and this control loop, the soak's own work (in the Kafka soak
it runs in the parent). A thread whose name is none of these (a library pool started at import time, a thread a
library renamed) is ``other``, unless its nice value is above the process's (then only the trainer can have
started it) or it is a library's own thread that one stage alone uses (:data:`LIBRARY_THREADS`).

Control, for the soak's drain: the first SIGTERM stops ingest (it flushes, as ``streamssl-ingest`` does on SIGTERM)
and, once it has stopped, the event ``ingest_stopped`` gives its exit status. A second SIGTERM, or SIGINT at any
time, stops what is left: ingest if still running, then serving and the trainer together (as the soak signals
both); once the tails hold every record of both topics, the event ``stopped`` gives every exit status (None: still
running after STOP_TIMEOUT_S) and the process exits 0 when all are 0, else 1. A service that ends on its own stops
the rest the same way, so the parent sees the process end where it would have seen a CLI exit.

Files: ``events`` (JSON lines, ``{"event": ...}``), ``windows`` and ``scores`` (JSON lines, bench/soak/run.py's
``window_row`` / ``result_row`` of every record on the two topics, in the order the tails read them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ingest.runtime.commands import OnStop

log = logging.getLogger("stack")

SERVICES = ("ingest", "trainer", "serving")  # started in this order, as the soak starts its processes
PROGRAMS = {"ingest": "streamssl-ingest", "trainer": "streamssl-train", "serving": "streamssl-serve"}
HARNESS, OTHER = "harness", "other"
STAGES = (*SERVICES, HARNESS, OTHER)
TRAINER_NICE = 10  # as ``nice -n 10``
# Threads libraries name themselves, by the one stage that uses the library: FFmpeg's codec threads (only ingest
# decodes video) and uvloop's thread pool (only serving's HTTP server runs an event loop).
LIBRARY_THREADS = {"av:": "ingest", "libuv-worker": "serving"}
STOP_TIMEOUT_S = 100.0  # per step of the stop; the soak kills the process after 120 s
TAIL_CATCH_UP_S = 15.0  # with the stop of serving and the trainer, within the soak's 120 s
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --- the stack process ------------------------------------------------------------------------------------------
def name_thread(stage: str) -> None:
    """Set the calling thread's Linux name; the threads it starts from now on inherit it (Linux only)."""
    try:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(stage[:15])
    except OSError:
        log.warning("cannot name thread %s: stage accounting will count it as %r", stage, OTHER)


class Stopper:
    """A stop request that reaches a service built later: hooks registered after the request run at once."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: a signal handler may request while the main thread holds it
        self._hooks: list[Callable[[], None]] = []
        self.requested = False

    def on_stop(self, hook: Callable[[], None]) -> None:
        with self._lock:
            self._hooks.append(hook)
            if self.requested:
                hook()

    def stop(self) -> None:
        with self._lock:
            self.requested = True
            for hook in self._hooks:
                hook()


def service_action(name: str, argv: list[str], stopper: Stopper) -> Callable[[], int]:
    """The CLI's run function (``run_ingest``, ``run_trainer``, ``run_serving`` in each service's ``__main__``) on
    ``argv`` parsed by the CLI's own parser, with the stop signals replaced by ``stopper``."""
    import importlib

    cli = importlib.import_module(f"{name}.__main__")
    args = cli.build_parser().parse_args(argv)
    run: Callable[[Any, OnStop], int] = getattr(cli, f"run_{name}")
    return lambda: run(args, stopper.on_stop)


@dataclass
class Runner:
    """One service on its own root thread, named after it; ``code`` is its CLI's exit status once it has ended."""

    name: str
    argv: list[str]
    nice: int = 0  # added to the root thread's nice value before the service starts anything
    stopper: Stopper = field(default_factory=Stopper)
    code: int | None = None
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        # Parse here: a bad flag fails before any service starts.
        self._action = service_action(self.name, self.argv, self.stopper)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from ingest.runtime.commands import run_command

        name_thread(self.name)
        if self.nice:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self.nice))
        try:
            self.code = run_command(PROGRAMS[self.name], self._action)
        except BaseException:  # what an uncaught exception does to a CLI: a traceback and exit status 1
            log.exception("%s failed", PROGRAMS[self.name])
            self.code = 1

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)


@dataclass
class TailFile:
    """Appends the rows a topic tail has read to a JSON-lines file, from where the last call left off."""

    tail: Any  # bench.soak.run.TopicTail
    path: Path
    written: int = 0

    def __post_init__(self) -> None:
        self._stream: TextIO = self.path.open("a", encoding="utf-8")

    def flush(self) -> None:
        rows = self.tail.rows[self.written :]
        if rows:
            self._stream.write("".join(json.dumps(row) + "\n" for row in rows))
            self._stream.flush()
            self.written += len(rows)

    def topic_size(self) -> int:
        """Records on the tail's topic now (every partition's end offset)."""
        from ingest.bus import TopicPartition, open_bus

        with open_bus(self.tail.bus_url) as bus:
            partitions = [TopicPartition(self.tail.topic, index) for index in range(bus.partitions(self.tail.topic))]
            with bus.consumer([self.tail.topic], group_id=None) as consumer:
                return sum(consumer.end_offsets(partitions).values())

    def finish(self) -> None:
        """Once the tail has read every record on its topic (nothing is produced any more): stop it, write the rest."""
        deadline = time.monotonic() + TAIL_CATCH_UP_S
        while self.tail.error is None and len(self.tail.rows) < self.topic_size() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.tail.stop()
        self.flush()


@dataclass
class Control:
    """What the signals asked for: first SIGTERM → stop ingest; a second SIGTERM, or SIGINT → stop everything."""

    ingest: Runner
    stop_all: threading.Event = field(default_factory=threading.Event)

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGTERM and not self.ingest.stopper.requested:
            log.info("SIGTERM: stopping ingest")
            self.ingest.stopper.stop()
        else:
            log.info("%s: stopping serving and the trainer", signal.Signals(signum).name)
            self.stop_all.set()


class Events:
    def __init__(self, path: Path) -> None:
        self._stream = path.open("a", encoding="utf-8")

    def write(self, event: str, **fields: Any) -> None:
        self._stream.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
        self._stream.flush()


def supervise(runners: dict[str, Runner], control: Control, tails: list[TailFile], events: Events) -> None:
    """Until everything is to stop: write the tails' rows out, report ingest's stop, notice a service that ended
    or a tail that failed (it would fake lost windows)."""
    ingest, reported = runners["ingest"], False
    while not control.stop_all.wait(0.2):
        for tail in tails:
            tail.flush()
            if tail.tail.error is not None:
                log.error("the tail of %s failed: %r; stopping the stack", tail.tail.topic, tail.tail.error)
                return
        if not reported and ingest.stopper.requested and not ingest.alive:
            events.write("ingest_stopped", code=ingest.code)
            reported = True
        ended = [name for name, runner in runners.items() if not runner.alive and not runner.stopper.requested]
        if ended:
            log.error("%s ended on its own: stopping the stack", ", ".join(ended))
            return


def stop_everything(runners: dict[str, Runner], tails: list[TailFile], events: Events) -> dict[str, int | None]:
    """Ingest first, then serving and the trainer together; then the tails' last rows; every exit status."""
    runners["ingest"].stopper.stop()
    runners["ingest"].join(STOP_TIMEOUT_S)
    for name in ("serving", "trainer"):
        runners[name].stopper.stop()
    for name in ("serving", "trainer"):
        runners[name].join(STOP_TIMEOUT_S)
    for tail in tails:
        tail.finish()
    codes = {name: None if runner.alive else runner.code for name, runner in runners.items()}
    errors = {tail.tail.topic: repr(tail.tail.error) for tail in tails if tail.tail.error is not None}
    events.write("stopped", codes=codes, tail_errors=errors)
    return codes


def run_stack(spec: dict[str, Any]) -> int:
    from bench.soak.run import TopicTail, result_row, window_row

    # Building the runners imports the services' libraries on the main thread before it is named: pools they start
    # at import time are then "other", not charged to whichever stage happened to import them first.
    runners = {name: Runner(name, spec["argv"][name], TRAINER_NICE if name == "trainer" else 0) for name in SERVICES}
    control = Control(runners["ingest"])
    signal.signal(signal.SIGTERM, control.on_signal)
    signal.signal(signal.SIGINT, control.on_signal)
    name_thread(HARNESS)  # the tail threads started below inherit it
    files = spec["files"]
    events = Events(Path(files["events"]))
    tails = [
        TailFile(TopicTail(spec["bus"], spec["topics"][kind], parse), Path(files[kind]))
        for kind, parse in (("windows", window_row), ("scores", result_row))
    ]
    for tail in tails:
        tail.tail.start()
    for runner in runners.values():
        runner.start()
    events.write("started", pid=os.getpid())
    supervise(runners, control, tails, events)
    codes = stop_everything(runners, tails, events)
    if any(code is None for code in codes.values()):
        logging.shutdown()
        os._exit(1)  # a service is stuck: do not wait for its threads at interpreter exit
    return 0 if all(code == 0 for code in codes.values()) and not any(t.tail.error for t in tails) else 1


def main(argv: list[str] | None = None) -> int:
    from ingest.runtime.logs import configure_logging

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="the run's JSON spec (written by bench/soak/run.py)")
    args = parser.parse_args(argv)
    configure_logging()
    return run_stack(json.loads(args.spec.read_text(encoding="utf-8")))


# --- the parent's view of the stack's threads ------------------------------------------------------------------
@dataclass(frozen=True)
class ThreadStat:
    key: tuple[int, int]  # (tid, start time): a tid the kernel reuses is another thread
    stage: str
    cpu_s: float
    nice: int


def stage_of(comm: str, nice: int, process_nice: int) -> str:
    if comm in STAGES:
        return comm
    if nice > process_nice:  # only the trainer's threads run at a higher nice value
        return "trainer"
    return next((stage for prefix, stage in LIBRARY_THREADS.items() if comm.startswith(prefix)), OTHER)


def read_threads(pid: int) -> list[ThreadStat]:
    """Every live thread of process ``pid``, its stage (see the module docstring), CPU seconds and nice value."""
    raw = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()  # fields[0] is stat's field 3 (state)
        raw.append((int(task.name), comm, fields))
    process_nice = next((int(fields[16]) for tid, _, fields in raw if tid == pid), 0)
    return [
        ThreadStat((tid, int(fields[19])), stage_of(comm, int(fields[16]), process_nice),
                   (int(fields[11]) + int(fields[12])) / TICKS_PER_S, int(fields[16]))
        for tid, comm, fields in raw
    ]  # fmt: skip


class ThreadLedger:
    """CPU seconds per stage of the stack, from its threads sampled every second in a thread of the parent.

    A thread that ends keeps the CPU time of its last sample; what threads used after their last sample, or in a
    life shorter than a sample, is in the process's total but in no thread's: it is counted as ``other``. The CPU
    of child processes (the trainer's exports: the only children the stack starts) is the trainer's."""

    def __init__(self, pid: int, every_s: float = 1.0) -> None:
        self.pid = pid
        self._last: dict[tuple[int, int], ThreadStat] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._every_s = every_s
        self._thread = threading.Thread(target=self._run, name="thread-ledger", daemon=True)

    def start(self) -> ThreadLedger:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self.sample()

    def sample(self) -> list[ThreadStat]:
        try:
            stats = read_threads(self.pid)
        except OSError:  # the process has ended: keep the last samples
            return []
        with self._lock:
            self._last.update((stat.key, stat) for stat in stats)
        return stats

    def by_stage(self, live: list[ThreadStat], own_cpu_s: float, children_cpu_s: float) -> dict[str, dict[str, Any]]:
        """Per stage: CPU seconds so far, its ``live`` threads (a fresh :meth:`sample`) and their nice values;
        ``own_cpu_s``: the process's CPU seconds without its children, read after ``live``."""
        cpu = dict.fromkeys(STAGES, 0.0)
        with self._lock:
            for stat in self._last.values():
                cpu[stat.stage] += stat.cpu_s
        cpu[OTHER] += max(0.0, own_cpu_s - sum(cpu.values()))
        cpu["trainer"] += children_cpu_s
        nice: dict[str, list[int]] = defaultdict(list)
        for stat in live:
            nice[stat.stage].append(stat.nice)
        return {
            stage: {"cpu_s": seconds, "threads": len(nice[stage]), "nice": sorted(set(nice[stage]))}
            for stage, seconds in cpu.items()
        }


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events the stack has written so far (a line still being written is left for the next read)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1] if line]


if __name__ == "__main__":
    sys.exit(main())
