"""Test videos made with the real ffmpeg: constant and variable frame rate, corrupted bytes, timestamp jumps."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def ffmpeg(*args: str) -> None:
    executable = shutil.which("ffmpeg")
    if executable is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg); scripts/bootstrap.sh installs it")
    subprocess.run([executable, "-loglevel", "error", "-y", *args], check=True, timeout=120)


def constant_rate(path: Path, seconds: float = 6.0, rate: int = 30, size: str = "320x240") -> Path:
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={size}:rate={rate}",
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(rate),
        str(path),
    )
    return path


def variable_rate(path: Path, seconds: float = 8.0) -> Path:
    """Variable frame rate as cameras produce it: 30 fps in even seconds, 15 fps in odd ones."""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size=320x240:rate=30:duration={seconds}",
        "-vf",
        "select='lt(mod(t\\,2)\\,1)+not(mod(n\\,2))'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(path),
    )
    return path


def transport_stream(source: Path, path: Path) -> Path:
    ffmpeg("-i", str(source), "-c", "copy", "-f", "mpegts", str(path))
    return path


def corrupted(source_ts: Path, path: Path, at_fraction: float = 0.5, length: int = 4096) -> Path:
    """Overwrite ``length`` bytes in the middle of an MPEG-TS stream, as a flaky network link would."""
    data = bytearray(source_ts.read_bytes())
    start = int(len(data) * at_fraction)
    data[start : start + length] = bytes((index * 97 + 13) % 256 for index in range(length))
    path.write_bytes(bytes(data))
    return path


def forward_jump(path: Path, jump_at_s: float = 3.0, jump_s: float = 10.0, seconds: float = 6.0) -> Path:
    """Timestamps leap ``jump_s`` seconds forward at ``jump_at_s`` (frames lost in a network outage)."""
    # The duration goes on the source: an output -t would cut the clip at the jumped timestamps.
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size=320x240:rate=30:duration={seconds}",
        "-vf",
        f"setpts='PTS+gte(T\\,{jump_at_s})*{jump_s}/TB'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(path),
    )
    return path


def restarted_clock(first_ts: Path, second_ts: Path, path: Path) -> Path:
    """Two MPEG-TS recordings back to back: timestamps restart at zero, as when a camera reboots."""
    path.write_bytes(first_ts.read_bytes() + second_ts.read_bytes())
    return path
