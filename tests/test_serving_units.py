"""Units of the serving node: running statistics, score normalisation, the batcher's batching rules, tensor parsing."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.onnx_models import make_registry_version
from ingest.registry import TensorSpec
from serving.anomaly import RunningStats, ScoreNormaliser, prediction_error
from serving.batcher import Batcher
from serving.errors import InvalidInputError, QueueFullError
from serving.fast_tensors import parse_uint8, split_data
from serving.metrics import ServingMetrics
from serving.model import LoadedModel
from serving.model_loader import ModelLoader, SessionConfig
from serving.tensors import header_length, parse_infer_request
from tests.serving_fixtures import MODEL, frames
from tests.waiting import wait_until

FRAMES_SPEC = TensorSpec.model_validate({"name": "frames", "shape": ["batch", 16, 16, 3], "dtype": "uint8"})


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=200))
def test_running_stats_equal_numpy_while_under_the_memory(values: list[float]) -> None:
    stats = RunningStats(memory=1000)
    for value in values:
        stats.add(value)
    assert stats.count == len(values)
    assert stats.mean == pytest.approx(np.mean(values), abs=1e-6)
    assert stats.std == pytest.approx(np.std(values), abs=1e-5, rel=1e-5)


def test_running_stats_forget_beyond_the_memory() -> None:
    stats = RunningStats(memory=50)
    for _ in range(500):
        stats.add(1.0)
    for _ in range(500):
        stats.add(5.0)
    assert stats.mean == pytest.approx(5.0, abs=1e-3), "an old regime is forgotten after many memories"


def test_normaliser_warms_up_resets_per_version_and_bounds_cameras() -> None:
    normaliser = ScoreNormaliser(warmup=3, memory=100, max_cameras=2)
    scores = [normaliser.observe("cam", "1", value) for value in (1.0, 2.0, 3.0, 10.0)]
    assert [score.z for score in scores[:3]] == [None, None, None]
    assert scores[3].z == pytest.approx((10.0 - 2.0) / np.std([1.0, 2.0, 3.0]))
    assert normaliser.observe("cam", "2", 10.0).count == 0, "a new model version starts the statistics anew"
    assert normaliser.observe("cam", "2", float("nan")).z is None
    assert normaliser.observe("cam", "2", 1.0).count == 1, "a non-finite score is not added to the statistics"
    normaliser.observe("other", "2", 1.0)
    normaliser.observe("third", "2", 1.0)
    assert len(normaliser) == 2, "least recently used cameras are dropped"


def test_prediction_error_is_one_minus_cosine() -> None:
    actual = np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32)
    assert prediction_error(actual, actual)[0] == pytest.approx(0.0, abs=1e-7)
    assert prediction_error(-actual, actual)[0] == pytest.approx(2.0)
    assert prediction_error(actual[:, ::-1], actual)[0] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    registry: Path = tmp_path_factory.mktemp("registry")
    make_registry_version(registry, seed=71)
    return ModelLoader(registry, MODEL, SessionConfig(providers=["CPUExecutionProvider"], intra_op_threads=1)).load("1")


class Recorder:
    """Wraps the frame encoder to record the batch sizes it is run with, and to hold the worker on demand."""

    def __init__(self, model: LoadedModel) -> None:
        self.inner = model.sessions["frame_encoder"]
        self.sizes: list[int] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        model.sessions["frame_encoder"] = self

    def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.entered.set()
        self.hold.wait(30)
        self.sizes.append(len(next(iter(feeds.values()))))
        return self.inner.run(outputs, feeds)


def test_batcher_batches_queued_requests_up_to_the_maximum(model: LoadedModel) -> None:
    recorder = Recorder(model)
    batcher = Batcher(max_batch_size=4, max_queue_delay_s=0.0, max_queue=100, metrics=ServingMetrics())
    batcher.start()
    try:
        recorder.hold.clear()
        first = batcher.submit_frames(model, frames(1, seed=0))
        assert recorder.entered.wait(10)
        futures = [batcher.submit_frames(model, frames(1, seed=i)) for i in range(1, 10)]
        big = batcher.submit_frames(model, frames(6, seed=99))
        recorder.hold.set()
        results = [future.result(10) for future in [first, *futures, big]]
    finally:
        batcher.stop()
        model.sessions["frame_encoder"] = recorder.inner
    assert recorder.sizes == [1, 4, 4, 1, 6], "FIFO batches of at most 4; a request larger than that runs alone"
    direct = model.embed_frames(np.concatenate([frames(1, seed=i) for i in range(10)]))
    np.testing.assert_allclose(np.concatenate(results[:10]), direct, rtol=1e-5, atol=1e-6)
    assert results[10].shape == (6, 8)


def test_batcher_waits_for_announced_requests_only(model: LoadedModel) -> None:
    batcher = Batcher(max_batch_size=8, max_queue_delay_s=0.5, max_queue=100, metrics=ServingMetrics())
    batcher.start()
    try:
        started = time.monotonic()
        batcher.submit_frames(model, frames(1)).result(10)
        assert time.monotonic() - started < 0.4, "a lone request must not sit out the queue delay"
        batcher.announce()
        started = time.monotonic()
        pending = batcher.submit_frames(model, frames(1))
        time.sleep(0.1)
        assert not pending.done(), "with another request on its way, the batch waits for it"
        batcher.withdraw()
        pending.result(10)
        assert time.monotonic() - started < 0.4
    finally:
        batcher.stop()


class Barrier:
    """Wraps the frame encoder so each run waits until ``parties`` runs are in progress at once (or times out)."""

    def __init__(self, model: LoadedModel, parties: int) -> None:
        self.inner = model.sessions["frame_encoder"]
        self.barrier = threading.Barrier(parties, timeout=10)
        model.sessions["frame_encoder"] = self

    def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.barrier.wait()  # BrokenBarrierError unless the other worker is running a batch at the same time
        return self.inner.run(outputs, feeds)


def test_batcher_instances_run_batches_at_the_same_time(model: LoadedModel) -> None:
    barrier = Barrier(model, parties=2)
    batcher = Batcher(max_batch_size=1, max_queue_delay_s=0.0, max_queue=100, metrics=ServingMetrics(), workers=2)
    batcher.start()
    try:
        futures = [batcher.submit_frames(model, frames(1, seed=i)) for i in range(4)]
        results = [future.result(20) for future in futures]
    finally:
        batcher.stop()
        model.sessions["frame_encoder"] = barrier.inner
    direct = model.embed_frames(np.concatenate([frames(1, seed=i) for i in range(4)]))
    np.testing.assert_allclose(np.concatenate(results), direct, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="workers"):
        Batcher(max_batch_size=1, max_queue_delay_s=0.0, max_queue=1, metrics=ServingMetrics(), workers=0)


class Lane:
    """A frame-encoder session that records which lane ran it and how many runs were in progress at once."""

    def __init__(self, inner: Any, name: str, log: list[tuple[str, int]], lock: threading.Lock) -> None:
        self.inner, self.name, self.log, self.lock = inner, name, log, lock
        self.hold = threading.Event()
        self.hold.set()
        self.running = [0]

    def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        with self.lock:
            self.running[0] += 1
            self.log.append((self.name, self.running[0]))
        try:
            self.hold.wait(30)
            time.sleep(0.05)  # long enough for a second worker to start beside it, if it may
            return self.inner.run(outputs, feeds)
        finally:
            with self.lock:
                self.running[0] -= 1


def test_adaptive_batcher_gives_a_lone_batch_every_core_and_a_queue_one_core_per_batch(model: LoadedModel) -> None:
    log: list[tuple[str, int]] = []
    lock = threading.Lock()
    every = Lane(model.sessions["frame_encoder"], "all", log, lock)
    one = Lane(model.sessions["frame_encoder"], "one", log, lock)
    one.running = every.running  # one count of runs in progress across both lanes
    lanes = dataclasses.replace(model, sessions={**model.sessions, "frame_encoder": every},
                                single_thread_sessions={**model.sessions, "frame_encoder": one})  # fmt: skip
    batcher = Batcher(max_batch_size=1, max_queue_delay_s=0.0, max_queue=100, metrics=ServingMetrics(), workers=2,
                      adaptive=True)  # fmt: skip
    batcher.start()
    try:
        batcher.submit_frames(lanes, frames(1)).result(10)
        assert log == [("all", 1)], "a lone request runs on the all-core session"
        log.clear()
        every.hold.clear()
        first = batcher.submit_frames(lanes, frames(1, seed=1))
        wait_until(lambda: bool(log), "the first batch started")
        queued = [batcher.submit_frames(lanes, frames(1, seed=i)) for i in range(2, 6)]
        time.sleep(0.2)
        assert log == [("all", 1)], "nothing starts beside a batch that has every core"
        every.hold.set()
        results = [future.result(20) for future in [first, *queued]]
    finally:
        batcher.stop()
    assert [name for name, _ in log[1:4]] == ["one"] * 3, "with work queued behind them, batches run on one core"
    assert max(count for name, count in log if name == "one") == 2, "two one-core batches ran side by side"
    assert all(count == 1 for name, count in log if name == "all"), "an all-core batch never shares the cores"
    direct = model.embed_frames(np.concatenate([frames(1, seed=i) for i in range(1, 6)]))
    np.testing.assert_allclose(np.concatenate(results), direct, rtol=1e-5, atol=1e-6)


def test_the_loader_builds_one_thread_sessions_that_agree(tmp_path: Path) -> None:
    make_registry_version(tmp_path, seed=72)
    config = SessionConfig(providers=["CPUExecutionProvider"], single_thread_sessions=True)
    loaded = ModelLoader(tmp_path, MODEL, config).load("1")
    assert loaded.single_thread_sessions is not None
    pixels = frames(3)
    np.testing.assert_allclose(loaded.embed_frames(pixels, single_thread=True), loaded.embed_frames(pixels), atol=1e-5)


@pytest.mark.parametrize("legacy", [False, True], ids=["current", "frames-only"])
def test_the_pixel_head_takes_the_predictors_output_and_old_versions_still_load(tmp_path: Path, legacy: bool) -> None:
    """Current versions feed ``predicted[:, 0]`` to the pixel predictor; versions published before that input take the
    context frames alone. Both load, and the node's pixel error is the file's own next frame against frame K."""
    import onnxruntime as ort

    make_registry_version(tmp_path, seed=73, pixel=True, legacy_pixel=legacy)
    loaded = ModelLoader(tmp_path, MODEL, SessionConfig(providers=["CPUExecutionProvider"])).load("1")
    assert [spec.name for spec in loaded.files["pixel_predictor"].inputs] == (
        ["frames"] if legacy else ["frames", "future_embedding"]
    )
    windows = np.stack([frames(4, seed=seed) for seed in (1, 2, 3)])  # [3, T=4, 16, 16, 3]; K = 2
    outputs = loaded.run_windows(windows)
    assert outputs.pixel_errors is not None
    predicted = loaded.run("predictor", np.ascontiguousarray(outputs.frame_embeddings[:, :2]))[0]
    feed: dict[str, np.ndarray] = {"frames": np.ascontiguousarray(windows[:, :2])}
    if not legacy:
        feed["future_embedding"] = np.ascontiguousarray(predicted[:, 0])
    session = ort.InferenceSession(str(tmp_path / MODEL / "1" / "pixel_predictor.onnx"))
    next_frame = session.run(None, feed)[0]  # [3, 8, 8, 3]
    target = np.stack([cv2.resize(frame, (8, 8), interpolation=cv2.INTER_AREA) for frame in windows[:, 2]]) / 255.0
    np.testing.assert_allclose(outputs.pixel_errors, ((next_frame - target) ** 2).mean(axis=(1, 2, 3)), rtol=1e-4)
    if not legacy:  # the embedding reaches the output: a different one moves the predicted frame
        moved = session.run(None, {**feed, "future_embedding": -feed["future_embedding"]})[0]
        assert not np.allclose(moved, next_frame)


def test_batcher_queue_is_bounded(model: LoadedModel) -> None:
    recorder = Recorder(model)
    batcher = Batcher(max_batch_size=1, max_queue_delay_s=0.0, max_queue=2, metrics=ServingMetrics())
    batcher.start()
    try:
        recorder.hold.clear()
        running = batcher.submit_frames(model, frames(1))
        assert recorder.entered.wait(10)
        queued = [batcher.submit_frames(model, frames(1)) for _ in range(2)]
        with pytest.raises(QueueFullError, match="queue is full"):
            batcher.submit_frames(model, frames(1))
        recorder.hold.set()
        for future in [running, *queued]:
            future.result(10)
    finally:
        batcher.stop()
        model.sessions["frame_encoder"] = recorder.inner
    with pytest.raises(QueueFullError, match="shutting down"):
        batcher.submit_frames(model, frames(1))


def test_the_binary_header_length_is_a_plain_decimal_within_the_body() -> None:
    assert header_length(None, 10) is None
    assert header_length(" 7 ", 10) == 7
    for bad in ("0", "11", "-1", "+5", "5_0", "\u00b2", "\u0663", "1e3", ""):  # superscript two, Arabic-Indic three
        with pytest.raises(InvalidInputError, match="Inference-Header-Content-Length"):
            header_length(bad, 10)


def test_parse_accepts_flat_and_nested_data() -> None:
    pixels = frames(2)
    flat = {
        "inputs": [{"name": "frames", "shape": [2, 16, 16, 3], "datatype": "UINT8", "data": pixels.ravel().tolist()}]
    }
    nested = {"inputs": [{**flat["inputs"][0], "data": pixels.tolist()}]}
    for body in (flat, nested):
        parsed = parse_infer_request(orjson.dumps(body), FRAMES_SPEC, ["embedding"])
        assert parsed.tensor.dtype == np.uint8
        np.testing.assert_array_equal(parsed.tensor, pixels)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(), st.lists, max_leaves=20))
def test_parse_never_fails_other_than_invalid_input(data: Any) -> None:
    body = {"inputs": [{"name": "frames", "shape": [1, 16, 16, 3], "datatype": "UINT8", "data": data}]}
    try:
        raw = orjson.dumps(body)
    except orjson.JSONEncodeError:
        return  # not representable as JSON (NaN is, as null; huge ints are not): nothing a client could send
    with pytest.raises(InvalidInputError):
        parse_infer_request(raw, FRAMES_SPEC, ["embedding"])


def _generic(body: bytes) -> np.ndarray:
    """The general path alone: orjson, then one np.array call."""
    from serving.tensors import decode_tensor, load_json

    return decode_tensor(load_json(body)["inputs"][0], SMALL_SPEC)


SMALL_SPEC = TensorSpec.model_validate({"name": "frames", "shape": ["batch", 2, 2, 3], "dtype": "uint8"})
_VALUES = st.one_of(st.integers(0, 255), st.integers(-300, 1500), st.floats(-1, 300, allow_nan=False), st.just("7"))


@settings(max_examples=300, deadline=None)
@given(st.lists(_VALUES, min_size=11, max_size=13), st.booleans(), st.booleans())
def test_fast_and_general_paths_agree(values: list[Any], spaced: bool, nested: bool) -> None:
    data: Any = [values[:6], values[6:12]] if nested and len(values) >= 12 else values
    request = {"id": "x", "inputs": [{"name": "frames", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": data}]}
    body = json.dumps(request).encode() if spaced else orjson.dumps(request)
    try:
        expected: np.ndarray | str = _generic(body)
    except InvalidInputError as error:
        expected = str(error)
    try:
        got: np.ndarray | str = parse_infer_request(body, SMALL_SPEC, ["embedding"]).tensor
    except InvalidInputError as error:
        got = str(error)
    if isinstance(expected, str):
        assert isinstance(got, str), f"the fast path accepted what the general path refuses: {expected}"
    else:
        assert isinstance(got, np.ndarray), got
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == np.uint8


@pytest.mark.parametrize(
    "text",
    [b"1,2,", b"1,,2", b",1", b"1 2", b"300,1", b"007,1", b"1.5,2", b"-1,2", b"1234", b" ", b"1, ,2", b"[1]", b"1e2"],
)
def test_fast_parser_refuses_anything_but_plain_uint8_lists(text: bytes) -> None:
    assert parse_uint8(text) is None


def test_fast_parser_reads_plain_lists_with_or_without_spaces() -> None:
    np.testing.assert_array_equal(parse_uint8(b"0,0,10,100,255"), [0, 0, 10, 100, 255])
    np.testing.assert_array_equal(parse_uint8(b" 1 , 2 "), [1, 2])
    assert split_data(b'{"inputs": [{"data": [1, 2]}], "x": {"data": 1}}') is None, "two data keys: general path"
    assert split_data(b'{"inputs": [{"data": [1, 2]}]}') == (b'{"inputs": [{"data": []}]}', b"1, 2")


def test_adaptive_threads_apply_to_the_default_cpu_node_only(tmp_path: Path) -> None:
    from serving.config import ServingSettings

    cores = len(os.sched_getaffinity(0))
    default = ServingSettings(registry=tmp_path)
    assert default.adaptive_workers == (cores if cores > 1 else None)
    assert ServingSettings(registry=tmp_path, threads=1).adaptive_workers is None, "threads set by hand"
    assert ServingSettings(registry=tmp_path, providers="cuda,cpu").adaptive_workers is None, "a GPU asked for"
    assert ServingSettings(registry=tmp_path, adaptive_threads=False).adaptive_workers is None
    assert ServingSettings(registry=tmp_path, instances=cores + 2).adaptive_workers in (None, cores + 2)
