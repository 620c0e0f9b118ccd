"""Serving throughput and latency against a bare ``InferenceSession.run`` loop, in the same run.

    python bench/serving_bench.py [--seconds 9] [--rounds 3] [--concurrency 1,8,32] [--payload json,binary]
        [--server-threads 1 --instances 2] [--no-adaptive-threads] [--widths 64,128,256,512]

The model is a stand-in of ResNet-18's cost at 128×128 (bench/onnx_models.py: a 4-stage conv net, two 3×3
convolutions per stage, widths 64-128-256-512 by default: ~12 ms per image on one core, as ResNet-18 is on our
machines; ``--widths 48,96,192,384`` gives a ~7 ms one), FP32 and static INT8 (QOperator, random calibration).

* Server: ``streamssl-serve`` in its own process; the load generator in another (asyncio, raw keep-alive HTTP/1.1,
  pre-encoded OIP bodies of one 128×128×3 UINT8 image each: ``json`` as ``json.dumps`` writes the data array,
  ``binary`` in the binary tensor data extension, embeddings back as binary too), C connections
  sending back to back. Throughput, p50/p99 latency, the mean batch size the server formed (from its
  ``streamssl_serving_batch_size`` histogram) and the server process's CPU time per image.
* Bare: ``InferenceSession.run`` in a loop in this process at that batch size, with onnxruntime's default threads
  and with one thread (on a loaded box one thread can be faster); the ratio is taken against the better of the two.
* Server and bare slices alternate (``--rounds``), so both see the same load from other processes; the CPU time per
  image (server process vs bare loop) is the comparison that such load disturbs least.
* FP32 vs INT8: bare throughput at batch 1 and 32, and the cosine similarity of their embeddings, raw and centred
  (each model's mean embedding subtracted: random-weight encoders map all inputs close together, so raw cosine is
  near 1 whatever the quantisation does).

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.onnx_models import make_registry_version  # noqa: E402
from ingest.registry import DEFAULT_MODEL_NAME  # noqa: E402

SIZE = 128
WIDTHS = (64, 128, 256, 512)
BLOCKS = 1
DIM = 128


def images(count: int, seed: int = 0) -> np.ndarray:
    """Smooth random images (upsampled noise), so JPEG-like content rather than white noise."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(count, 16, 16, 3), dtype=np.uint8)
    return np.stack([cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC) for image in small])


# --- load generator (runs in its own process) -------------------------------------------------------------------
async def _client(host: str, port: int, requests: list[bytes], until: float, warm_until: float) -> list[float]:
    reader, writer = await asyncio.open_connection(host, port)
    latencies: list[float] = []
    index = 0
    while True:
        started = time.perf_counter()
        if started >= until:
            break
        writer.write(requests[index % len(requests)])
        index += 1
        head = await reader.readuntil(b"\r\n\r\n")
        status = head[9:12]
        length = int(re.search(rb"(?im)^content-length: *(\d+)", head)[1])  # type: ignore[index]
        await reader.readexactly(length)
        if status != b"200":
            raise RuntimeError(f"server answered {status.decode()}: {head.decode(errors='replace')}")
        if started >= warm_until:
            latencies.append(time.perf_counter() - started)
    writer.close()
    return latencies


def request_body(image: np.ndarray, payload: str) -> tuple[bytes, str]:
    """One OIP infer request for one image: JSON ``data``, or the binary tensor data extension; body and headers."""
    tensor: dict[str, Any] = {"name": "frames", "shape": [1, *image.shape], "datatype": "UINT8"}
    if payload == "json":
        tensor["data"] = image.ravel().tolist()
        return json.dumps({"inputs": [tensor]}).encode(), "Content-Type: application/json\r\n"
    tensor["parameters"] = {"binary_data_size": image.nbytes}
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    extra = f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {len(header)}\r\n"
    return header + image.tobytes(), extra


async def _load(url: str, concurrency: int, seconds: float, warmup: float, payload: str) -> dict[str, Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = []
    for image in images(16, seed=1):
        body, extra = request_body(image, payload)
        head = f"POST {parts.path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
        requests.append(head.encode() + body)
    start = time.perf_counter()
    warm_until, until = start + warmup, start + warmup + seconds

    async def mark(at: float, text: str) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        print(text, flush=True)

    clients = [_client(host, port, requests, until, warm_until) for _ in range(concurrency)]
    results, *_ = await asyncio.gather(asyncio.gather(*clients), mark(warm_until, "measuring"), mark(until, "measured"))
    latencies = [round(latency, 6) for result in results for latency in result]
    return {"requests": len(latencies), "latencies": latencies}


def load_worker(url: str, concurrency: int, seconds: float, warmup: float, payload: str) -> None:
    print(json.dumps(asyncio.run(_load(url, concurrency, seconds, warmup, payload))))


def run_load(
    url: str, concurrency: int, seconds: float, warmup: float, payload: str, cpu: Any = lambda: 0.0
) -> dict[str, Any]:
    """Run the load generator process; ``cpu()`` (the server's CPU seconds) is read at the measured window's ends."""
    command = [sys.executable, __file__, "--load-worker", url, "--concurrency", str(concurrency), "--payload", payload]
    command += ["--seconds", str(seconds), "--warmup", str(warmup)]
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert worker.stdout is not None
    marks = []
    for line in worker.stdout:  # "measuring" and "measured" lines bracket the window
        if line.startswith("measur"):
            marks.append(cpu())
        elif line.strip():
            output = line
    if worker.wait(seconds + warmup + 60) != 0 or len(marks) != 2:
        raise RuntimeError(f"load generator failed: {(worker.stderr.read() if worker.stderr else '')[-2000:]}")
    result: dict[str, Any] = json.loads(output)
    result["cpu_s"] = marks[1] - marks[0]
    return result


# --- server -----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def batch_totals(base: str) -> tuple[float, float]:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    values = {}
    for suffix in ("sum", "count"):
        match = re.search(rf'streamssl_serving_batch_size_{suffix}{{kind="frames"}} ([0-9.e+]+)', text)
        values[suffix] = float(match[1]) if match else 0.0
    return values["sum"], values["count"]


def start_server(registry: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "serving", "--registry", str(registry), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--max-batch-size", str(args.max_batch_size)]
    command += ["--max-queue-delay-ms", str(args.max_queue_delay_ms), "--log-level", "WARNING"]
    command += ["--threads", str(args.server_threads), "--instances", str(args.instances)]
    if args.no_adaptive_threads:
        command.append("--no-adaptive-threads")
    server = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            urllib.request.urlopen(f"{base}/v2/health/ready", timeout=1)
            return server, base
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not become ready in 60 s")


# --- bare onnxruntime -----------------------------------------------------------------------------------------------
def session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def bare_throughput(sess: Any, batch: int, seconds: float, cpu: list[float] | None = None) -> float:
    """Images per second of a bare run loop; appends the CPU seconds per image to ``cpu`` if given."""
    x = images(batch, seed=2)
    sess.run(None, {"frames": x})
    done, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        sess.run(None, {"frames": x})
        done += batch
    if cpu is not None:
        cpu.append((time.process_time() - cpu_start) / done)
    return done / (time.perf_counter() - start)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    result: np.ndarray = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return result


def measure_level(
    base: str, pid: int, fp32: Any, fp32_single: Any, concurrency: int, payload: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One concurrency level: calibrate the batch size, then alternate server and bare slices (same machine load)."""
    url = f"{base}/v2/models/{DEFAULT_MODEL_NAME}/infer"
    before = batch_totals(base)
    run_load(url, concurrency, 2.0, args.warmup, payload)
    after = batch_totals(base)
    slice_s = args.seconds / args.rounds
    served, server_cpu = 0, 0.0
    latencies: list[float] = []
    bare: list[float] = []
    bare_single: list[float] = []
    bare_cpu: list[float] = []
    single_cpu: list[float] = []
    batch = max(1, round((after[0] - before[0]) / max(1.0, after[1] - before[1])))
    batch_sum = batch_count = 0.0
    for _ in range(args.rounds):
        before = batch_totals(base)
        result = run_load(url, concurrency, slice_s, args.warmup, payload, lambda: process_cpu_s(pid))
        after = batch_totals(base)
        server_cpu += result["cpu_s"]
        batch_sum += after[0] - before[0]
        batch_count += after[1] - before[1]
        served += result["requests"]
        latencies += result["latencies"]
        bare.append(bare_throughput(fp32, batch, slice_s, bare_cpu))
        bare_single.append(bare_throughput(fp32_single, batch, slice_s, single_cpu))
    latencies.sort()
    return {
        "payload": payload,
        "concurrency": concurrency,
        "throughput": served / args.seconds,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "mean_batch": batch_sum / max(1.0, batch_count),
        "batch": batch,
        "bare": statistics.mean(bare),
        "bare_single": statistics.mean(bare_single),
        "server_cpu_ms": 1000 * server_cpu / served,
        "bare_cpu_ms": 1000 * min(statistics.mean(bare_cpu), statistics.mean(single_cpu)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=9.0, help="measured seconds per level, server and bare each")
    parser.add_argument("--rounds", type=int, default=3, help="server/bare alternations per level")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument(
        "--payload", default="json,binary", help="request formats: json (OIP data arrays), binary (binary extension)"
    )
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    parser.add_argument("--server-threads", type=int, default=0, help="the server's --threads (0: all cores)")
    parser.add_argument("--instances", type=int, default=1, help="the server's --instances")
    parser.add_argument("--no-adaptive-threads", action="store_true", help="the server's --no-adaptive-threads")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="conv widths of the 4 stages")
    parser.add_argument("--load-worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_worker:
        load_worker(args.load_worker, int(args.concurrency), args.seconds, args.warmup, args.payload)
        return 0

    levels = [int(c) for c in args.concurrency.split(",")]
    widths = tuple(int(w) for w in args.widths.split(","))
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as scratch:
        registry = Path(scratch)
        print("building the models (FP32 and static INT8)…", file=sys.stderr)
        version = make_registry_version(
            registry, 7, size=SIZE, window=4, dim=DIM, widths=widths, blocks=BLOCKS, int8=True
        )
        directory = registry / DEFAULT_MODEL_NAME / version
        fp32, int8 = session(directory / "frame_encoder.onnx"), session(directory / "frame_encoder.int8.onnx")
        fp32_single = session_single(directory / "frame_encoder.onnx")
        single = bare_throughput(fp32_single, 1, 2.0)
        print(f"model cost: {1000 / single:.1f} ms per image on one core", file=sys.stderr)

        server, base = start_server(registry, args)
        rows = []
        try:
            for payload in args.payload.split(","):
                for concurrency in levels:
                    rows.append(measure_level(base, server.pid, fp32, fp32_single, concurrency, payload, args))
                    print(rows[-1], file=sys.stderr)
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(60)
        if code != 0:
            print(f"warning: the server exited with {code} on SIGTERM", file=sys.stderr)

        precision = []
        for batch in (1, 32):  # alternate, for the same reason as above
            f32, q8 = [], []
            for _ in range(args.rounds):
                f32.append(bare_throughput(fp32, batch, 1.5))
                q8.append(bare_throughput(int8, batch, 1.5))
            precision.append((batch, statistics.mean(f32), statistics.mean(q8)))
        sample = images(256, seed=3)
        e32 = np.concatenate([fp32.run(None, {"frames": sample[i : i + 32]})[0] for i in range(0, 256, 32)])
        e8 = np.concatenate([int8.run(None, {"frames": sample[i : i + 32]})[0] for i in range(0, 256, 32)])
        raw = cosines(e32, e8)
        centred = cosines(e32 - e32.mean(0), e8 - e8.mean(0))
        between = cosines(e32[:-1], e32[1:])

    print(f"\nServing bench: OIP infer, one {SIZE}×{SIZE}×3 UINT8 image per request; conv widths {args.widths},")
    print(
        f"{1000 / single:.1f} ms per image on one core; {os.cpu_count()} CPUs; server --threads {args.server_threads} "
        f"--instances {args.instances}{' --no-adaptive-threads' if args.no_adaptive_threads else ''}, max batch "
        f"{args.max_batch_size}, queue delay {args.max_queue_delay_ms} ms; load average at the end "
        f"{os.getloadavg()[0]:.2f}\n"
    )
    print(
        "| payload | concurrency | server img/s | p50 ms | p99 ms | mean batch | bare img/s, default threads | "
        "bare img/s, 1 thread | server / best bare | CPU ms/img server / bare | CPU efficiency |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        best = max(row["bare"], row["bare_single"])
        print(
            f"| {row['payload']} | {row['concurrency']} | {row['throughput']:.0f} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | "
            f"{row['mean_batch']:.1f} | {row['bare']:.0f} (batch {row['batch']}) | {row['bare_single']:.0f} | "
            f"{row['throughput'] / best:.2f}× | {row['server_cpu_ms']:.1f} / {row['bare_cpu_ms']:.1f} | "
            f"{row['bare_cpu_ms'] / row['server_cpu_ms']:.2f}× |"
        )
    print("\n| batch | FP32 img/s | INT8 img/s | INT8 / FP32 |")
    print("|---:|---:|---:|---:|")
    for batch, f, q in precision:
        print(f"| {batch} | {f:.0f} | {q:.0f} | {q / f:.2f}× |")
    print(
        f"\nFP32 vs INT8 embeddings (256 images): raw cosine mean {raw.mean():.4f} (min {raw.min():.4f}); "
        f"centred cosine mean {centred.mean():.4f} (min {centred.min():.4f}); for scale, raw cosine between "
        f"different images under FP32: {statistics.mean(between.tolist()):.4f}"
    )
    return 0


def session_single(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


if __name__ == "__main__":
    sys.exit(main())
