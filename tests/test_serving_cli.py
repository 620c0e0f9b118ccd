"""The ``streamssl-serve`` command: it runs without torch (the serving extra has onnxruntime, not PyTorch), answers on
its port and on ``--metrics-port``, enforces ``--token-file``, and exits 0 on SIGTERM.

The child process installs an import hook first that refuses torch, torchvision, onnx, av and the trainer (none is in
the serving extra), imports every serving module, then runs the real command. A hook this test relies on must be
able to fail: one case plants an import of torch and expects the refusal.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.onnx_models import make_registry_version
from tests.serving_fixtures import MODEL, frames, infer_request

REPO = Path(__file__).resolve().parents[1]
NOT_IN_THE_SERVING_EXTRA = ("torch", "torchvision", "onnx", "av", "trainer")

CHILD = textwrap.dedent(
    f"""
    import importlib, importlib.abc, pkgutil, sys

    BLOCKED = {set(NOT_IN_THE_SERVING_EXTRA)!r}

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"the serving node imported {{name}}, which the serving extra does not install")
            return None

    sys.meta_path.insert(0, Refuse())
    import serving
    for module in pkgutil.iter_modules(serving.__path__):
        importlib.import_module(f"serving.{{module.name}}")
    if len(sys.argv) > 1 and sys.argv[1] == "--plant":
        import torch  # noqa: F401
    from serving.__main__ import main
    code = main(sys.argv[1:])
    loaded = BLOCKED & {{name.split(".")[0] for name in sys.modules}}
    assert not loaded, f"modules outside the serving extra were loaded: {{loaded}}"
    sys.exit(code)
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout_s: float = 60) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"the command did not exit within {timeout_s:.0f} s:\n{output[-3000:]}") from None
    return process.returncode, output


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry")
    make_registry_version(path, seed=51)
    return path


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("cli-token\n")
    return path


@pytest.fixture
def server(registry: Path, token_file: Path) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    port, metrics_port = free_port(), free_port()
    process = serve(
        "--registry", str(registry), "--model", MODEL, "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", str(metrics_port), "--token-file", str(token_file), "--threads", "1",
        "--instances", "2",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"streamssl-serve exited with {process.returncode}:\n{finish(process)[1][-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("streamssl-serve did not answer /v2/health/live within 60 s")
            time.sleep(0.1)
        yield process, port, metrics_port
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_the_command_serves_without_torch_and_stops_cleanly_on_sigterm(
    server: tuple[subprocess.Popen[str], int, int],
) -> None:
    process, port, metrics_port = server
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/v2/health/ready").json()["ready"] is True
    assert httpx.get(f"{url}/v2/models/{MODEL}").status_code == 401, "--token-file must be enforced"
    answer = httpx.post(
        f"{url}/v2/models/{MODEL}/infer", json=infer_request(frames(1)), headers={"Authorization": "Bearer cli-token"}
    )
    assert answer.status_code == 200, answer.text
    scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert scraped.status_code == 200, "--metrics-port serves metrics without the token"
    assert 'streamssl_serving_model_info{model="streamssl-encoder"' in scraped.text
    process.send_signal(signal.SIGTERM)
    code, output = finish(process)
    assert code == 0, f"SIGTERM must end streamssl-serve with 0, got {code}:\n{output[-3000:]}"
    assert "received SIGTERM" in output


def test_the_import_hook_would_catch_torch(registry: Path) -> None:
    code, output = finish(serve("--plant", "--registry", str(registry)))
    assert code != 0
    assert "the serving node imported torch" in output


@pytest.mark.parametrize(
    ("args", "code", "phrase"),
    [
        (["--model", MODEL], 2, "registry"),
        (["--version", "99", "--port", "0"], 1, "version 99 was never published"),
        (["--providers", "quantum", "--port", "0"], 2, "unknown execution provider"),
        (["--no-http"], 2, "--stream-topic"),
    ],
)
def test_bad_configuration_exits_with_a_clear_message(registry: Path, args: list[str], code: int, phrase: str) -> None:
    full = args if args[0] == "--model" else ["--registry", str(registry), *args]
    exit_code, output = finish(serve(*full))
    assert exit_code == code, output[-3000:]
    assert phrase in output, output[-3000:]
