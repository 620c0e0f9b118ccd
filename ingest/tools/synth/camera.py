"""Pinhole model of the fixed pole camera.

World coordinates in metres: ``x`` lateral (right positive), ``y`` up (ground is ``y = 0``), ``z`` distance
along the road away from the camera. The camera stands at ``x = position[0]`` beside the road, ``y = height``,
``z = 0``, turned (yaw) towards the road and pitched down so the horizon sits near the top of the image.
Image coordinates are pixels, ``u`` right and ``v`` down, pixel centres at integers.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ingest.tools.synth.scene_layout import RoadLayout

FloatArray = npt.NDArray[np.float64]


class Camera:
    def __init__(
        self,
        width: int,
        height: int,
        focal_px: float,
        cx: float,
        cy: float,
        position: tuple[float, float, float],
        yaw_rad: float,
        pitch_rad: float,
    ) -> None:
        self.width = width
        self.height = height
        self.focal_px = focal_px
        self.cx = cx
        self.cy = cy
        self.position = np.array(position, dtype=np.float64)
        self.yaw_rad = yaw_rad
        self.pitch_rad = pitch_rad
        sy, cyaw = math.sin(yaw_rad), math.cos(yaw_rad)
        sp, cp = math.sin(pitch_rad), math.cos(pitch_rad)
        forward = np.array([sy * cp, -sp, cyaw * cp])
        right = np.array([cyaw, 0.0, -sy])
        down = np.cross(right, forward)
        # Rows map a world offset to camera axes (right, down, forward).
        self.rotation: FloatArray = np.stack([right, down, forward])

    @classmethod
    def for_layout(
        cls,
        width: int,
        height: int,
        layout: RoadLayout,
        mount_height_m: float = 8.0,
        hfov_deg: float = 60.0,
        horizon_fraction: float = 0.13,
        aim_z_m: float = 40.0,
    ) -> Camera:
        """On an arm from a pole on the left verge, above the left shoulder, aimed at the road centre
        ``aim_z_m`` ahead, with the horizon at ``horizon_fraction`` of the image height."""
        focal = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        x = -(layout.half_width + layout.shoulder) + 2.0
        yaw = math.atan2(0.0 - x, aim_z_m)
        pitch = math.atan2(cy - horizon_fraction * height, focal)
        return cls(width, height, focal, cx, cy, (x, mount_height_m, 0.0), yaw, pitch)

    def scaled(self, factor: int) -> Camera:
        """The same view rendered ``factor`` times larger (for supersampling)."""
        return Camera(
            self.width * factor,
            self.height * factor,
            self.focal_px * factor,
            (self.cx + 0.5) * factor - 0.5,
            (self.cy + 0.5) * factor - 0.5,
            (float(self.position[0]), float(self.position[1]), float(self.position[2])),
            self.yaw_rad,
            self.pitch_rad,
        )

    @property
    def horizon_v(self) -> float:
        return self.cy - self.focal_px * math.tan(self.pitch_rad)

    def to_camera(self, points: FloatArray) -> FloatArray:
        """(N, 3) world points -> (N, 3) camera coordinates (right, down, depth)."""
        return (points - self.position) @ self.rotation.T

    def project(self, points: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(N, 3) world points -> ((N, 2) pixel coordinates, (N,) depth in metres). Depth is floored at 0.05 m."""
        cam = self.to_camera(points)
        depth = np.maximum(cam[:, 2], 0.05)
        uv = np.empty((points.shape[0], 2))
        uv[:, 0] = self.cx + self.focal_px * cam[:, 0] / depth
        uv[:, 1] = self.cy + self.focal_px * cam[:, 1] / depth
        return uv, depth

    def rays(self) -> FloatArray:
        """(H, W, 3) world-space direction of every pixel's ray (not normalised)."""
        u = (np.arange(self.width) - self.cx) / self.focal_px
        v = (np.arange(self.height) - self.cy) / self.focal_px
        right, down, forward = self.rotation
        out: FloatArray = (
            u[None, :, None] * right[None, None, :] + v[:, None, None] * down[None, None, :] + forward[None, None, :]
        )
        return out
