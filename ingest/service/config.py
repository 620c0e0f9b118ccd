"""Settings of the ingest service: the shared ones plus a list of cameras, each isolated from the others."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ingest.contract import DEFAULT_JPEG_QUALITY, DEFAULT_MAX_MESSAGE_BYTES, FrameCodec
from ingest.contract.topics import validate_topic
from ingest.runtime.settings import CommonSettings
from ingest.sources import SourceSpec

_SIZE = re.compile(r"(\d+)x(\d+)")


def parse_size(text: str) -> tuple[int, int]:
    """``"128x128"`` → (128, 128); ValueError with the expected form otherwise."""
    match = _SIZE.fullmatch(text.strip().lower())
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(f"size {text!r} must be WIDTHxHEIGHT, e.g. 128x128")
    return int(match[1]), int(match[2])


class CameraConfig(BaseModel):
    """One camera. Defaults: 8-frame windows, stride 8, 128×128, 10 fps, JPEG quality 90."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    camera_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")
    url: str = Field(min_length=1)
    topic: str | None = Field(None, description="defaults to the service's --topic")
    fps: float = Field(10.0, gt=0, le=120, description="sampling rate, by presentation time")
    size: str = Field("128x128", description="window frame size WxH")
    resize: Literal["crop", "letterbox"] = Field("crop", description="centre crop or letterbox to the size")
    color: Literal["rgb", "gray"] = Field("rgb", description="colour of the window frames")
    window: int = Field(8, ge=1, le=256, description="frames per window")
    stride: int = Field(8, ge=1, le=4096, description="frames between window starts")
    codec: FrameCodec = Field(FrameCodec.JPEG, description="frame codec")
    quality: int = Field(DEFAULT_JPEG_QUALITY, ge=0, le=100, description="JPEG quality (png, raw-zlib: level)")
    min_quality: int = Field(50, ge=1, le=100, description="JPEG quality floor when fitting the message size")
    quality_step: int = Field(10, ge=1, le=50)
    loop: bool = Field(False, description="replay a file forever")
    realtime: bool = Field(False, description="pace a file at its frame rate")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP over TCP or UDP")
    backend: Literal["auto", "pyav", "opencv"] = "auto"
    decode_threads: int = Field(0, ge=0, le=64)
    read_ahead_frames: int = Field(
        4, ge=0, le=64, description="frames decoded ahead on a thread of their own while the last is converted "
        "(0: decode on the camera's thread)",
    )  # fmt: skip
    skip_loop_filter: bool = Field(
        True, description="decode without H.264/HEVC deblocking: ~10-35 % less decoder CPU, and at window size the "
        "frames differ from a full decode less than JPEG at quality 90 changes them (false: full decode)",
    )  # fmt: skip
    open_timeout_s: float = Field(10.0, gt=0)
    # Frigate's fixed 20 s killed slow cameras and its users asked for a knob: this is it.
    stall_timeout_s: float = Field(20.0, gt=0, description="reconnect when no frame came for this many seconds")
    reconnect_initial_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    max_gap_s: float | None = Field(None, gt=0, description="timestamp gap that starts a new segment")
    motion_threshold: float = Field(0.0, ge=0, description="skip windows below this motion energy; 0 = off")
    queue_windows: int = Field(32, ge=1, le=100_000)
    allow_down: bool = Field(False, description="readiness does not wait for this camera")

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: str) -> str:
        parse_size(value)
        return value

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str | None) -> str | None:
        return None if value is None else validate_topic(value)

    @model_validator(mode="after")
    def _check_quality(self) -> CameraConfig:
        low, high = (1, 100) if self.codec is FrameCodec.JPEG else (0, 9)
        if not low <= self.quality <= high:
            raise ValueError(f"quality for {self.codec.value} must be in [{low}, {high}], got {self.quality}")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be at least reconnect_initial_s")
        return self

    @property
    def width(self) -> int:
        return parse_size(self.size)[0]

    @property
    def height(self) -> int:
        return parse_size(self.size)[1]

    @property
    def gap_tolerance_s(self) -> float:
        """Default: two and a half sample intervals, at least half a second."""
        return self.max_gap_s if self.max_gap_s is not None else max(0.5, 2.5 / self.fps)

    def source_spec(self) -> SourceSpec:
        return SourceSpec(
            url=self.url,
            rtsp_transport=self.rtsp_transport,
            open_timeout_s=self.open_timeout_s,
            read_timeout_s=self.stall_timeout_s,
            realtime=self.realtime,
            decode_threads=self.decode_threads,
            read_ahead_frames=self.read_ahead_frames,
            skip_loop_filter=self.skip_loop_filter,
            backend=self.backend,
        )


class IngestSettings(CommonSettings):
    cameras: list[CameraConfig] = Field(default_factory=list)
    max_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, ge=1024)
    partitions: int = Field(8, ge=1, le=10_000, description="partitions of a topic the service creates")
    drain_timeout_s: float = Field(30.0, gt=0, description="on shutdown, how long to publish what is queued")

    @model_validator(mode="after")
    def _unique_cameras(self) -> IngestSettings:
        ids = [camera.camera_id for camera in self.cameras]
        duplicates = sorted({camera for camera in ids if ids.count(camera) > 1})
        if duplicates:
            raise ValueError(f"camera ids must be unique, repeated: {', '.join(duplicates)}")
        return self
