"""Draw one frame: cached background, then vehicles painted far to near, static occluders, lights, noise.

Vehicles are boxes (see ``vehicles.Box``) projected through the pinhole camera and filled with cv2 on the
uint8 frame; only the faces that can face the camera are drawn (top, near end, one side), so the faces of
one box never overlap. Shadows (day) and headlight beams (night) are saturating subtract/add inside a
polygon mask, restricted to the polygon's bounding box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from ingest.tools.synth.camera import Camera
from ingest.tools.synth.lighting import ambient_rgb, daylight, haze_rgb, vehicle_lights
from ingest.tools.synth.noise import NoiseBank
from ingest.tools.synth.scene import Background, Occluder, haze_amount
from ingest.tools.synth.scene_layout import RoadLayout
from ingest.tools.synth.traffic import Vehicle
from ingest.tools.synth.traffic_light import LightState
from ingest.tools.synth.vehicles import GLASS, RGB, Box

U8 = npt.NDArray[np.uint8]
I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]

SHIFT = 3  # cv2 fixed-point bits for sub-pixel drawing
ONE = 1 << SHIFT
SHADE_TOP, SHADE_END, SHADE_SIDE = 1.0, 0.84, 0.68
LIGHT_RADIUS_M = 0.11
BEAM_LENGTH_M, BEAM_SPREAD_M = 30.0, 2.6
BEAM_LAYERS = ((1.0, 7.0), (0.65, 7.0), (0.35, 8.0))  # (fraction of the beam length, brightness added)
HAZARD_HZ = 1.5
LAMP_RGB: dict[str, RGB] = {"red": (255.0, 40.0, 30.0), "yellow": (255.0, 190.0, 20.0), "green": (40.0, 255.0, 120.0)}


@dataclass(frozen=True)
class VisibleVehicle:
    """A vehicle that is (at least partly) in the image, with what the labels need."""

    vehicle: Vehicle
    bbox: tuple[float, float, float, float]  # u0, v0, u1, v1 in pixels, clipped to the image
    speed_mps: float
    direction_deg: float | None  # image-plane motion direction, 0 = right, 90 = up; None when not moving


@dataclass
class _Projected:
    vehicle: Vehicle
    uv: F64
    depth: F64
    bbox: tuple[float, float, float, float]
    distance: float  # painter's-algorithm key: distance from the camera to the nearest point


def _fixed(uv: F64) -> I32:
    out: I32 = np.round(uv * ONE).astype(np.int32)
    return out


def _masked(img: U8, pts: I32, rgb: tuple[float, float, float], add: bool) -> None:
    """Saturating add (or subtract) ``rgb`` inside the convex polygon ``pts`` (fixed point)."""
    h, w = img.shape[:2]
    x0 = max(0, int(pts[:, 0].min()) >> SHIFT)
    y0 = max(0, int(pts[:, 1].min()) >> SHIFT)
    x1 = min(w, (int(pts[:, 0].max()) >> SHIFT) + 2)
    y1 = min(h, (int(pts[:, 1].max()) >> SHIFT) + 2)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(mask, pts - np.array([x0 << SHIFT, y0 << SHIFT], np.int32), 255, cv2.LINE_8, SHIFT)
    roi = img[y0:y1, x0:x1]
    # OpenCV's stubs reject a 4-tuple scalar with a mask in some releases and accept it in others (5.1).
    scalar = (rgb[0], rgb[1], rgb[2], 0.0)
    if add:
        cv2.add(roi, scalar, dst=roi, mask=mask)  # type: ignore[call-overload, unused-ignore]
    else:
        cv2.subtract(roi, scalar, dst=roi, mask=mask)  # type: ignore[call-overload, unused-ignore]


def _glow(img: U8, u: float, v: float, radius: float, rgb: tuple[float, float, float]) -> None:
    """Saturating add of a disc (a cheap light bloom)."""
    h, w = img.shape[:2]
    r = math.ceil(radius) + 1
    cu, cv = round(u), round(v)
    x0, y0, x1, y1 = max(0, cu - r), max(0, cv - r), min(w, cu + r + 1), min(h, cv + r + 1)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.circle(mask, (round((u - x0) * ONE), round((v - y0) * ONE)), round(radius * ONE), 255, -1, cv2.LINE_8, SHIFT)
    roi = img[y0:y1, x0:x1]
    cv2.add(roi, (rgb[0], rgb[1], rgb[2], 0.0), dst=roi, mask=mask)  # type: ignore[call-overload, unused-ignore]


def _disc(img: U8, u: float, v: float, radius: float, rgb: tuple[float, float, float]) -> None:
    cv2.circle(img, (round(u * ONE), round(v * ONE)), max(1, round(radius * ONE)), rgb, -1, cv2.LINE_AA, SHIFT)


def _box_order(boxes: tuple[Box, ...], heading: int) -> list[int]:
    """Draw order: underbody, then the boxes standing on the ground far to near, then boxes on top."""
    ground = [k for k in range(1, len(boxes)) if not boxes[k].on_top]
    ground.sort(key=lambda k: -boxes[k].l0 if heading < 0 else boxes[k].l1)
    on_top = [k for k in range(1, len(boxes)) if boxes[k].on_top]
    return [0, *ground, *on_top]


class Renderer:
    def __init__(self, camera: Camera, layout: RoadLayout, background: Background, noise: NoiseBank | None) -> None:
        self.camera = camera
        self.layout = layout
        self.background = background
        self.noise = noise
        self._cam_x = float(camera.position[0])

    # ------------------------------------------------------------------------------------------ frame
    def render(
        self, vehicles: list[Vehicle], t: float, frame_index: int, level: float, light: LightState
    ) -> tuple[U8, list[VisibleVehicle]]:
        base = self.background.image(level).copy()
        lights_k = vehicle_lights(level)
        self._draw_signal(base, light, lights_k)
        img = base.copy()

        projected = [p for p in (self._project(v) for v in vehicles) if p is not None]
        sun = daylight(level)
        amb = ambient_rgb(level)
        for p in projected:
            self._draw_ground_effects(img, p, sun, lights_k, amb)

        items: list[tuple[float, int, _Projected | Occluder]] = [(p.distance, p.vehicle.vid, p) for p in projected]
        items += [(o.distance_m, -1 - k, o) for k, o in enumerate(self.background.occluders)]
        items.sort(key=lambda it: (-it[0], it[1]))
        drawn: list[tuple[float, float, float, float]] = []
        haze = haze_rgb(level)
        for _, _, item in items:
            if isinstance(item, Occluder):
                if any(b[0] < item.x1 and b[2] >= item.x0 and b[1] < item.y1 and b[3] >= item.y0 for b in drawn):
                    roi = img[item.y0 : item.y1, item.x0 : item.x1]
                    np.copyto(roi, base[item.y0 : item.y1, item.x0 : item.x1], where=item.mask[..., None])
                continue
            self._draw_vehicle(img, item, amb, haze, lights_k, t)
            drawn.append(item.bbox)

        if self.noise is not None:
            self.noise.apply(img, frame_index, level)
        return img, [self._visible(p) for p in projected]

    # ------------------------------------------------------------------------------------------ geometry
    def _project(self, veh: Vehicle) -> _Projected | None:
        near = self.layout.near_z
        if veh.z_hi < near + 0.3 or veh.z_lo > self.layout.far_z + 40.0:
            return None
        shape = veh.shape
        c = shape.corners.reshape(-1, 3)
        h = veh.heading
        hw = shape.width / 2.0
        z_back = veh.z_front - h * shape.length
        light_y = shape.head_y if h < 0 else shape.tail_y
        light_z = veh.z_front if h < 0 else z_back
        centre_z = veh.z_front - h * shape.length / 2.0
        extra = np.array(
            [
                [veh.x - hw + 0.28, light_y, light_z],
                [veh.x + hw - 0.28, light_y, light_z],
                [veh.x, 0.0, centre_z],
                [veh.x + veh.vx * 0.2, 0.0, centre_z + h * veh.v * 0.2],
            ]
        )
        pts = np.empty((c.shape[0] + 4, 3))
        pts[: c.shape[0], 0] = veh.x + c[:, 0]
        pts[: c.shape[0], 1] = c[:, 1]
        pts[: c.shape[0], 2] = veh.z_front - h * c[:, 2]
        pts[c.shape[0] :] = extra
        np.maximum(pts[:, 2], near, out=pts[:, 2])
        uv, depth = self.camera.project(pts)
        body = uv[: c.shape[0]]
        u0, v0 = float(body[:, 0].min()), float(body[:, 1].min())
        u1, v1 = float(body[:, 0].max()), float(body[:, 1].max())
        w, hgt = self.camera.width, self.camera.height
        if u1 < 0 or v1 < 0 or u0 > w - 1 or v0 > hgt - 1:
            return None
        dx = max(0.0, abs(veh.x - self._cam_x) - hw)
        distance = math.hypot(dx, max(veh.z_lo, near))
        bbox = (max(0.0, u0), max(0.0, v0), min(w - 1.0, u1), min(hgt - 1.0, v1))
        return _Projected(veh, uv, depth, bbox, distance)

    def _visible(self, p: _Projected) -> VisibleVehicle:
        veh = p.vehicle
        n = veh.shape.corners.shape[0] * 8
        speed = math.hypot(veh.v, veh.vx)
        direction: float | None = None
        if speed > 0.3:
            du = float(p.uv[n + 3, 0] - p.uv[n + 2, 0])
            dv = float(p.uv[n + 3, 1] - p.uv[n + 2, 1])
            if abs(du) + abs(dv) > 1e-9:
                direction = math.degrees(math.atan2(-dv, du)) % 360.0
        return VisibleVehicle(veh, p.bbox, speed, direction)

    # ------------------------------------------------------------------------------------------ drawing
    def _draw_signal(self, img: U8, light: LightState, lights_k: float) -> None:
        rgb = LAMP_RGB[light]
        for head in self.background.signal_lamps:
            u, v = getattr(head, light)
            r = max(0.8, head.radius_px)
            if lights_k > 0.05:
                k = 0.45 * lights_k
                _glow(img, u, v, r * 3.2, (rgb[0] * k, rgb[1] * k, rgb[2] * k))
            _disc(img, u, v, r, rgb)

    def _draw_ground_effects(self, img: U8, p: _Projected, sun: float, lights_k: float, amb: F64) -> None:
        veh = p.vehicle
        near = self.layout.near_z
        hw = veh.shape.width / 2.0
        if sun > 0.02:
            x = veh.x + 0.55
            z0, z1 = max(veh.z_lo - 0.2, near), max(veh.z_hi + 0.5, near)
            ground = np.array(
                [[x - hw - 0.1, 0, z0], [x + hw + 0.15, 0, z0], [x + hw + 0.15, 0, z1], [x - hw - 0.1, 0, z1]]
            )
            uv, _ = self.camera.project(ground)
            k = 46.0 * sun
            _masked(img, _fixed(uv), (k * amb[0], k * amb[1], k * amb[2]), add=False)
        if lights_k > 0.05 and not veh.stalled:
            h = veh.heading
            zf = veh.z_front
            z_end = zf + h * BEAM_LENGTH_M
            if max(zf, z_end) <= near:
                return
            for frac, strength in BEAM_LAYERS:
                ze = zf + h * BEAM_LENGTH_M * frac
                spread = hw + BEAM_SPREAD_M * frac
                beam = np.array(
                    [
                        [veh.x - hw, 0, max(zf, near)],
                        [veh.x + hw, 0, max(zf, near)],
                        [veh.x + spread, 0, max(ze, near)],
                        [veh.x - spread, 0, max(ze, near)],
                    ]
                )
                uv, depth = self.camera.project(beam)
                k = strength * lights_k * min(1.0, 40.0 / max(float(depth[0]), 1.0)) ** 0.5
                _masked(img, _fixed(uv), (k, 0.93 * k, 0.78 * k), add=True)

    def _draw_vehicle(self, img: U8, p: _Projected, amb: F64, haze: F64, lights_k: float, t: float) -> None:
        veh = p.vehicle
        shape = veh.shape
        h = veh.heading
        fixed = _fixed(p.uv)
        hz = float(haze_amount(max(veh.z_lo, 1.0)))
        end = 0 if h < 0 else 1  # l-index of the end face nearest the camera
        sky_glint = 0.12 * haze

        def lit(rgb: RGB, shade: float) -> tuple[float, float, float]:
            return (
                (rgb[0] * shade * amb[0]) * (1 - hz) + haze[0] * hz,
                (rgb[1] * shade * amb[1]) * (1 - hz) + haze[1] * hz,
                (rgb[2] * shade * amb[2]) * (1 - hz) + haze[2] * hz,
            )

        glass = tuple(GLASS[i] * amb[i] + sky_glint[i] for i in range(3))
        glass_rgb = (
            glass[0] * (1 - hz) + haze[0] * hz,
            glass[1] * (1 - hz) + haze[1] * hz,
            glass[2] * (1 - hz) + haze[2] * hz,
        )
        for k in _box_order(shape.boxes, h):
            box = shape.boxes[k]
            base = 8 * k
            faces: list[tuple[list[int], float, float]] = []
            x_min, x_max = veh.x - box.half_w, veh.x + box.half_w
            if self._cam_x < x_min:
                faces.append(([base + 0, base + 1, base + 3, base + 2], SHADE_SIDE, box.glass_side))
            elif self._cam_x > x_max:
                faces.append(([base + 4, base + 5, base + 7, base + 6], SHADE_SIDE, box.glass_side))
            end_glass = box.glass_front if h < 0 else box.glass_rear
            faces.append(([base + end, base + 4 + end, base + 6 + end, base + 2 + end], SHADE_END, end_glass))
            faces.append(([base + 2, base + 6, base + 7, base + 3], SHADE_TOP, 0.0))
            for idx, shade, glass_frac in faces:
                quad = fixed[idx]
                cv2.fillConvexPoly(img, quad, lit(box.colour, shade), cv2.LINE_AA, SHIFT)
                if glass_frac > 0:
                    self._glass(img, p.uv[idx], glass_frac, glass_rgb)
        self._draw_lights(img, p, lights_k, t)

    @staticmethod
    def _glass(img: U8, quad: F64, frac: float, rgb: tuple[float, float, float]) -> None:
        # quad = bottom-a, bottom-b (or top), ... in the corner order used above; vertical edges are at
        # constant depth, so interpolating along them in the image is exact.
        # Face corner orders: side (y0 l0, y0 l1, y1 l1, y1 l0); end (-lat y0, +lat y0, +lat y1, -lat y1).
        b0, b1, t1, t0 = quad[0], quad[1], quad[2], quad[3]
        top_in = 0.06
        g0 = t0 + (b0 - t0) * frac * (1 - top_in)
        g1 = t1 + (b1 - t1) * frac * (1 - top_in)
        a0 = t0 + (b0 - t0) * top_in * frac
        a1 = t1 + (b1 - t1) * top_in * frac
        inset = 0.06
        pts = np.array([a0 + (a1 - a0) * inset, a1 + (a0 - a1) * inset, g1 + (g0 - g1) * inset, g0 + (g1 - g0) * inset])
        cv2.fillConvexPoly(img, _fixed(pts), rgb, cv2.LINE_AA, SHIFT)

    def _draw_lights(self, img: U8, p: _Projected, lights_k: float, t: float) -> None:
        veh = p.vehicle
        n = veh.shape.corners.shape[0] * 8
        f = self.camera.focal_px
        front = veh.heading < 0  # the face towards the camera is the front
        hazard_on = veh.stalled and (t * HAZARD_HZ) % 1.0 < 0.5
        for j in (n, n + 1):
            u, v = float(p.uv[j, 0]), float(p.uv[j, 1])
            if not (-20 < u < self.camera.width + 20 and -20 < v < self.camera.height + 20):
                continue
            r = max(0.55, LIGHT_RADIUS_M * f / float(p.depth[j]))
            if hazard_on:
                _glow(img, u, v, r * 3.0, (150.0, 90.0, 10.0))
                _disc(img, u, v, r * 1.2, (255.0, 170.0, 30.0))
                continue
            if front:
                if lights_k > 0.05:
                    k = lights_k
                    _glow(img, u, v, r * 4.5, (70 * k, 66 * k, 52 * k))
                    _glow(img, u, v, r * 2.2, (110 * k, 105 * k, 90 * k))
                _disc(img, u, v, r, (255.0, 252.0, 236.0) if lights_k > 0.05 else (235.0, 238.0, 236.0))
            else:
                braking = veh.braking
                if lights_k > 0.05 or braking:
                    k = max(lights_k, 0.6 if braking else 0.0)
                    _glow(img, u, v, r * (3.5 if braking else 2.5), (110 * k, 8 * k, 6 * k))
                    _disc(img, u, v, r, (255.0, 50.0, 40.0) if braking else (215.0, 30.0, 26.0))
                else:
                    _disc(img, u, v, r * 0.9, (120.0, 24.0, 22.0))
