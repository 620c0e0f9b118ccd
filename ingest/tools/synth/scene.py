"""The static world as the camera sees it: ground, road markings, sky, poles and the signal housings.

Everything static is ray-cast once (supersampled 2x, then area-downsampled) into float maps: albedo, haze,
sky coverage, street-lamp light pools and emissive lamp heads. ``Background.image(level)`` composes those
maps for one quantised illumination level into a uint8 RGB frame and caches it, so per frame the
background costs one copy. Poles and signal structures are also kept as *occluders* (a mask in a bounding
box) so the renderer can paint them back over vehicles that are farther away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from ingest.tools.synth.camera import Camera
from ingest.tools.synth.lighting import NIGHT_LEVEL, ambient_rgb, haze_rgb, sky_rgb, street_lamps
from ingest.tools.synth.scene_layout import RoadLayout

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
BoolArray = npt.NDArray[np.bool_]

HAZE_DISTANCE_M = 800.0
GRASS = (72.0, 104.0, 50.0)
VERGE = (112.0, 110.0, 86.0)
ASPHALT = (88.0, 88.0, 92.0)
SHOULDER = (100.0, 98.0, 96.0)
WHITE_PAINT = (222.0, 222.0, 216.0)
YELLOW_PAINT = (214.0, 176.0, 62.0)
TREES = (36.0, 56.0, 36.0)
METAL = (92.0, 94.0, 100.0)
HOUSING = (26.0, 27.0, 24.0)
DARK_LENS = (50.0, 50.0, 44.0)
LAMP_POOL_RGB = np.array([1.0, 0.80, 0.52], dtype=np.float32)  # sodium-ish street lighting
LAMP_POOL_GAIN = 0.55
LAMP_HEAD_RGB = np.array([255.0, 214.0, 150.0], dtype=np.float32)
DASH_M, DASH_PERIOD_M = 3.0, 12.0


def haze_amount(distance_m: float | F32) -> float | F32:
    return 1.0 - np.exp(-np.asarray(distance_m) / HAZE_DISTANCE_M)  # type: ignore[return-value]


@dataclass(frozen=True)
class Occluder:
    """A static structure: paint ``mask`` (inside box ``x0:x1, y0:y1``) from the background over anything
    farther than ``distance_m`` from the camera."""

    x0: int
    y0: int
    x1: int
    y1: int
    mask: BoolArray
    distance_m: float


@dataclass(frozen=True)
class SignalLamps:
    """Pixel centres and radius of the red / yellow / green lamps of one signal head facing the camera."""

    red: tuple[float, float]
    yellow: tuple[float, float]
    green: tuple[float, float]
    radius_px: float


def _tileable_noise(rng: np.random.Generator, size: int, sigma: float) -> F32:
    raw = rng.random((size, size), dtype=np.float32)
    pad = int(3 * sigma) + 1
    padded = np.pad(raw, pad, mode="wrap")
    blurred = cv2.GaussianBlur(padded, (0, 0), sigma)[pad:-pad, pad:-pad]
    lo, hi = float(blurred.min()), float(blurred.max())
    return np.asarray((blurred - lo) / max(hi - lo, 1e-6), dtype=np.float32)


def _sample(tex: F32, x: F32, z: F32, metres_per_texel: float) -> F32:
    size = tex.shape[0]
    map_x = np.mod(x / metres_per_texel, size).astype(np.float32)
    map_z = np.mod(z / metres_per_texel, size).astype(np.float32)
    return np.asarray(cv2.remap(tex, map_x, map_z, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP), np.float32)


class _Canvas:
    """Supersampled float maps being built, plus helpers that paint projected structures into them."""

    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        h, w = camera.height, camera.width
        self.albedo = np.zeros((h, w, 3), np.float32)
        self.haze = np.zeros((h, w), np.float32)
        self.sky = np.zeros((h, w), np.float32)
        self.pool = np.zeros((h, w), np.float32)
        self.emissive = np.zeros((h, w), np.float32)

    def px(self, metres: float, depth: float) -> float:
        return metres * self.camera.focal_px / depth

    def fixed(self, uv: npt.NDArray[np.float64]) -> npt.NDArray[np.int32]:
        out: npt.NDArray[np.int32] = np.round(np.clip(uv, -1e5, 1e5) * 4).astype(np.int32)
        return out

    def line_mask(self, a: tuple[float, float, float], b: tuple[float, float, float], width_m: float) -> U8:
        uv, depth = self.camera.project(np.array([a, b], dtype=np.float64))
        thickness = max(1, round(self.px(width_m, float(depth.mean()))))
        mask = np.zeros((self.camera.height, self.camera.width), np.uint8)
        p = self.fixed(uv)
        cv2.line(mask, (int(p[0, 0]), int(p[0, 1])), (int(p[1, 0]), int(p[1, 1])), 255, thickness, cv2.LINE_AA, 2)
        return mask

    def quad_mask(self, corners: list[tuple[float, float, float]]) -> U8:
        uv, _ = self.camera.project(np.array(corners, dtype=np.float64))
        mask = np.zeros((self.camera.height, self.camera.width), np.uint8)
        cv2.fillConvexPoly(mask, self.fixed(uv), 255, cv2.LINE_AA, 2)
        return mask

    def disc_mask(self, centre: tuple[float, float, float], radius_m: float) -> tuple[U8, float, float, float]:
        uv, depth = self.camera.project(np.array([centre], dtype=np.float64))
        radius = max(0.6, self.px(radius_m, float(depth[0])))
        mask = np.zeros((self.camera.height, self.camera.width), np.uint8)
        cv2.circle(mask, (round(uv[0, 0] * 4), round(uv[0, 1] * 4)), round(radius * 4), 255, -1, cv2.LINE_AA, 2)
        return mask, float(uv[0, 0]), float(uv[0, 1]), radius

    def paint(self, mask: U8, colour: tuple[float, float, float], distance_m: float) -> None:
        """Composite a solid structure (coverage ``mask``) over the maps."""
        x, y, w, h = cv2.boundingRect(mask)
        if w == 0 or h == 0:
            return
        a = mask[y : y + h, x : x + w].astype(np.float32) / 255.0
        a3 = a[..., None]
        region = self.albedo[y : y + h, x : x + w]
        region *= 1.0 - a3
        region += a3 * np.array(colour, np.float32)
        hz = self.haze[y : y + h, x : x + w]
        hz *= 1.0 - a
        hz += a * float(haze_amount(distance_m))
        sky = self.sky[y : y + h, x : x + w]
        sky *= 1.0 - a
        pool = self.pool[y : y + h, x : x + w]
        pool *= 1.0 - a


def _paint_ground(canvas: _Canvas, layout: RoadLayout, rng: np.random.Generator) -> None:
    """Ray-cast every pixel to the ground plane and colour it: grass, verge, shoulder, asphalt, paint."""
    cam = canvas.camera
    rays = cam.rays().astype(np.float32)
    dy = rays[..., 1]
    ground = dy < -1e-6
    t = np.where(ground, -float(cam.position[1]) / np.where(ground, dy, -1.0), 0.0).astype(np.float32)
    x = (float(cam.position[0]) + t * rays[..., 0]).astype(np.float32)
    z = (float(cam.position[2]) + t * rays[..., 2]).astype(np.float32)
    z = np.where(ground, z, 1e5).astype(np.float32)

    fine = _tileable_noise(rng, 256, 1.2)
    coarse = _tileable_noise(rng, 128, 5.0)
    near = (1.0 / (1.0 + z / 45.0)).astype(np.float32)  # fade texture with distance: it would only alias
    tex_fine = 1.0 + (_sample(fine, x, z, 0.06) - 0.5) * 0.35 * near
    tex_grass = 1.0 + (_sample(fine, x, z, 0.12) - 0.5) * 0.55 * near
    tex_patch = 0.82 + 0.36 * _sample(coarse, x, z, 1.5)

    ax = np.abs(x)
    half = layout.half_width
    road = ax <= half
    shoulder = (ax > half) & (ax <= half + layout.shoulder)
    verge = (ax > half + layout.shoulder) & (ax <= half + layout.shoulder + 1.6)

    albedo = canvas.albedo
    albedo[:] = np.array(GRASS, np.float32) * (tex_grass * tex_patch)[..., None]
    albedo[verge] = np.array(VERGE, np.float32) * (tex_grass * tex_patch)[verge][:, None]
    albedo[shoulder] = np.array(SHOULDER, np.float32) * tex_fine[shoulder][:, None]
    asphalt = np.array(ASPHALT, np.float32) * (tex_fine * (0.94 + 0.12 * tex_patch - 0.06))[..., None]
    # Darker tyre tracks either side of each lane centre.
    for lane in range(layout.lanes):
        off = np.abs(np.abs(x - layout.lane_center(lane)) - 0.85)
        asphalt *= np.where(off < 0.35, 0.93 + 0.07 * off / 0.35, 1.0).astype(np.float32)[..., None]
    albedo[road] = asphalt[road]

    def paint(mask: BoolArray, colour: tuple[float, float, float]) -> None:
        mask = mask & ground
        wear = 0.82 + 0.18 * tex_patch[mask] * tex_fine[mask]
        albedo[mask] = np.array(colour, np.float32) * wear[:, None]

    edge = np.abs(ax - (half - 0.15)) < 0.075
    centre = (np.abs(x - 0.16) < 0.06) | (np.abs(x + 0.16) < 0.06)
    paint(edge, WHITE_PAINT)
    paint(centre, YELLOW_PAINT)
    dashes = np.zeros_like(ground)
    for lane in range(layout.lanes - 1):
        boundary = layout.lane_center(lane) + layout.lane_width / 2.0
        if abs(boundary) < 1e-6:
            continue  # the centre line, painted above
        dashes |= (np.abs(x - boundary) < 0.075) & (np.mod(z, DASH_PERIOD_M) < DASH_M)
    z0, z1 = layout.crossing_z
    dashes &= (z < z0 - 1.0) | (z > z1 + 1.0)  # no lane dashes across the crossing
    paint(dashes, WHITE_PAINT)
    paint((x < 0) & (x > -half) & (np.abs(z - layout.stop_towards_z) < 0.3), WHITE_PAINT)
    paint((x > 0) & (x < half) & (np.abs(z - layout.stop_away_z) < 0.3), WHITE_PAINT)
    zebra = road & (z > z0) & (z < z1) & (np.mod(x + half, 1.2) < 0.6)
    paint(zebra, WHITE_PAINT)

    canvas.haze[:] = np.where(ground, haze_amount(z), 0.0)
    canvas.sky[:] = np.where(ground, 0.0, 1.0)

    # Street-lamp light pools on the ground (used at dusk/night).
    for lx, lz in layout.lamp_posts():
        hx = lx - math.copysign(1.8, lx)
        d2 = (x - hx) ** 2 + ((z - lz) / 1.3) ** 2
        canvas.pool += np.where(ground, np.exp(-d2 / (2.0 * 6.0**2)), 0.0).astype(np.float32)
    np.minimum(canvas.pool, 1.2, out=canvas.pool)

    # Treeline on the horizon with a gap where the road runs into it.
    horizon = cam.horizon_v
    knots = rng.random(24)
    detail = rng.random(160)
    cols = np.arange(cam.width, dtype=np.float64) / max(cam.width - 1, 1)
    profile = 0.7 * np.interp(cols, np.linspace(0, 1, knots.size), knots) + 0.3 * np.interp(
        cols, np.linspace(0, 1, detail.size), detail
    )
    vp, _ = cam.project(np.array([[0.0, 0.0, 1e5]]))
    gap = np.clip(np.abs(np.arange(cam.width) - vp[0, 0]) / (0.05 * cam.width), 0.0, 1.0)
    tree_px = cam.height * (0.010 + 0.032 * profile) * (0.25 + 0.75 * gap)
    rows = np.arange(cam.height, dtype=np.float64)[:, None]
    trees = (~ground) & (rows >= horizon - tree_px[None, :])
    tree_albedo = (
        np.array(TREES, np.float32)
        * (
            0.8
            + 0.4
            * _tileable_noise(rng, 64, 1.0)[
                (np.arange(cam.height) // 2 % 64)[:, None], (np.arange(cam.width) // 2 % 64)[None, :]
            ]
        )[..., None]
    )
    albedo[trees] = tree_albedo[trees]
    canvas.haze[trees] = 0.55
    canvas.sky[trees] = 0.0


def _lamp_post(canvas: _Canvas, x: float, z: float) -> U8:
    """Paint one street lamp; returns its coverage mask."""
    arm = -math.copysign(1.8, x)
    top = 8.6
    parts = [
        canvas.line_mask((x, 0.0, z), (x, top, z), 0.2),
        canvas.line_mask((x, top, z), (x + arm, top, z), 0.12),
        canvas.quad_mask(
            [
                (x + arm - 0.35, top, z),
                (x + arm + 0.35, top, z),
                (x + arm + 0.3, top - 0.22, z),
                (x + arm - 0.3, top - 0.22, z),
            ]
        ),
    ]
    cover = np.maximum.reduce(parts)
    canvas.paint(cover, METAL, z)
    head, _, _, _ = canvas.disc_mask((x + arm, top - 0.25, z), 0.22)
    canvas.emissive += head.astype(np.float32) / 255.0
    return cover


def _signal(canvas: _Canvas, layout: RoadLayout, facing_camera: bool) -> tuple[U8, list[SignalLamps]]:
    """Paint a signal pole with a mast arm over its lanes. Heads facing the camera show their lenses."""
    side = 1.0 if facing_camera else -1.0
    x = side * layout.verge_x
    z = layout.stop_towards_z + 0.6 if facing_camera else layout.stop_away_z - 0.6
    arm_y = 6.4
    head_x = side * layout.half_width / 2.0
    face_z = z - 0.3 if facing_camera else z + 0.3
    cover = np.maximum.reduce(
        [
            canvas.line_mask((x, 0.0, z), (x, arm_y + 0.3, z), 0.24),
            canvas.line_mask((x, arm_y, z), (head_x, arm_y, z), 0.16),
        ]
    )
    canvas.paint(cover, METAL, z)
    lamps: list[SignalLamps] = []
    for hx, top in ((head_x, arm_y - 0.1), (x - side * 0.4, 4.0)):
        housing = canvas.quad_mask(
            [
                (hx - 0.3, top, face_z),
                (hx + 0.3, top, face_z),
                (hx + 0.3, top - 1.3, face_z),
                (hx - 0.3, top - 1.3, face_z),
            ]
        )
        canvas.paint(housing, HOUSING, z)
        cover = np.maximum(cover, housing)
        if facing_camera:
            centres = []
            for k in range(3):
                lens, u, v, r = canvas.disc_mask((hx, top - 0.27 - 0.38 * k, face_z - 0.02), 0.15)
                canvas.paint(lens, DARK_LENS, z)
                centres.append((u, v, r))
            lamps.append(SignalLamps(centres[0][:2], centres[1][:2], centres[2][:2], centres[0][2]))
    return cover, lamps


class Background:
    """Static scene for one camera; ``image(level)`` is the uint8 RGB background at that illumination."""

    LEVELS = 64

    def __init__(self, camera: Camera, layout: RoadLayout, rng: np.random.Generator) -> None:
        self.camera = camera
        self.layout = layout
        factor = 2 if camera.width * camera.height <= 1280 * 720 else 1
        big = camera.scaled(factor)
        canvas = _Canvas(big)
        _paint_ground(canvas, layout, rng)

        structures: list[tuple[U8, float]] = []
        cam_x = float(camera.position[0])
        posts = sorted(layout.lamp_posts(), key=lambda p: -p[1])
        for x, z in posts:
            structures.append((_lamp_post(canvas, x, z), math.hypot(x - cam_x, z)))
        signal_lamps: list[SignalLamps] = []
        for facing in (False, True):
            cover, lamps = _signal(canvas, layout, facing)
            sx = layout.verge_x * (1.0 if facing else -1.0)
            sz = layout.stop_towards_z + 0.6 if facing else layout.stop_away_z - 0.6
            structures.append((cover, math.hypot(sx - cam_x, sz)))
            signal_lamps.extend(lamps)

        w, h = camera.width, camera.height

        def down(a: F32) -> F32:
            return a if factor == 1 else np.asarray(cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA), np.float32)

        self._albedo = down(canvas.albedo)
        self._haze = down(canvas.haze)[..., None]
        self._sky = down(canvas.sky)[..., None]
        self._pool = down(canvas.pool)[..., None]
        emissive = down(np.clip(canvas.emissive, 0.0, 1.0))
        glow = cv2.GaussianBlur(emissive, (0, 0), max(1.0, w / 320.0))
        self._emissive = np.clip(emissive + 3.0 * glow, 0.0, 1.0)[..., None]
        rows = (np.arange(h, dtype=np.float32) - 0.0)[:, None]
        horizon = camera.horizon_v
        g = np.clip((horizon - rows) / max(horizon, 1.0), 0.0, 1.0) ** 0.7
        self._sky_grad = np.broadcast_to(g, (h, w)).astype(np.float32)[..., None]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - camera.cx) / (w / 2.0)) ** 2 + ((yy - camera.cy) / (h / 2.0)) ** 2
        self._vignette = (1.0 - 0.16 * r2 / 2.0).astype(np.float32)[..., None]

        self.signal_lamps = tuple(
            SignalLamps(
                ((s.red[0] + 0.5) / factor - 0.5, (s.red[1] + 0.5) / factor - 0.5),
                ((s.yellow[0] + 0.5) / factor - 0.5, (s.yellow[1] + 0.5) / factor - 0.5),
                ((s.green[0] + 0.5) / factor - 0.5, (s.green[1] + 0.5) / factor - 0.5),
                s.radius_px / factor,
            )
            for s in signal_lamps
        )
        occluders = []
        for cover, distance in structures:
            small = cover if factor == 1 else cv2.resize(cover, (w, h), interpolation=cv2.INTER_AREA)
            x, y, bw, bh = cv2.boundingRect((small > 90).astype(np.uint8))
            if bw and bh:
                mask = small[y : y + bh, x : x + bw] > 90
                occluders.append(Occluder(x, y, x + bw, y + bh, mask, distance))
        self.occluders = tuple(occluders)
        self._cache: dict[int, U8] = {}

    @classmethod
    def level_index(cls, level: float) -> int:
        q = (level - NIGHT_LEVEL) / (1.0 - NIGHT_LEVEL)
        return round(min(1.0, max(0.0, q)) * (cls.LEVELS - 1))

    def image(self, level: float) -> U8:
        """Background at the quantised ``level`` (cached; do not modify the returned array)."""
        idx = self.level_index(level)
        cached = self._cache.get(idx)
        if cached is None:
            cached = self._compose(NIGHT_LEVEL + (1.0 - NIGHT_LEVEL) * idx / (self.LEVELS - 1))
            cached.setflags(write=False)
            self._cache[idx] = cached
        return cached

    def _compose(self, level: float) -> U8:
        amb = ambient_rgb(level).astype(np.float32)
        lamps = street_lamps(level)
        light = amb + (lamps * LAMP_POOL_GAIN) * self._pool * LAMP_POOL_RGB
        img = self._albedo * light
        haze = haze_rgb(level).astype(np.float32)
        img += (haze - img) * self._haze
        zenith, horizon = sky_rgb(level)
        sky = horizon.astype(np.float32) + (zenith - horizon).astype(np.float32) * self._sky_grad
        img += (sky - img) * self._sky
        if lamps > 0:
            img += (lamps * self._emissive) * LAMP_HEAD_RGB
        img *= self._vignette
        out: U8 = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        return out
