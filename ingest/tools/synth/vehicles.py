"""Vehicle types (car, van, truck, bus): sizes, box geometry, colours, driving parameters, and sampling."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

RGB = tuple[float, float, float]
GLASS: RGB = (34.0, 42.0, 52.0)
UNDERBODY: RGB = (22.0, 22.0, 24.0)


@dataclass(frozen=True)
class Box:
    """An axis-aligned part of a vehicle in its own frame.

    ``half_w``: lateral half width; ``y0..y1``: height above ground; ``l0..l1``: distance back from the front
    bumper (0 = front, vehicle length = rear). ``glass_*``: fraction of that face (from its top) that is glazed.
    """

    half_w: float
    y0: float
    y1: float
    l0: float
    l1: float
    colour: RGB
    glass_front: float = 0.0
    glass_rear: float = 0.0
    glass_side: float = 0.0
    on_top: bool = False  # stands on the previous box (drawn after it)


@dataclass(frozen=True)
class VehicleShape:
    kind: str
    length: float
    width: float
    boxes: tuple[Box, ...]
    head_y: float  # height of the headlights
    tail_y: float  # height of the tail lights
    # (K, 8, 3) corner table of the boxes in (lateral, y, l); built once per shape.
    corners: npt.NDArray[np.float64] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Driving:
    """Intelligent-driver-model parameters."""

    v0: float  # desired speed, m/s
    a_max: float  # m/s^2
    headway_s: float


def _corners(boxes: tuple[Box, ...]) -> npt.NDArray[np.float64]:
    out = np.empty((len(boxes), 8, 3))
    for k, b in enumerate(boxes):
        for i in range(8):
            lat_i, y_i, l_i = (i >> 2) & 1, (i >> 1) & 1, i & 1
            out[k, i] = (b.half_w if lat_i else -b.half_w, b.y1 if y_i else b.y0, b.l1 if l_i else b.l0)
    return out


def _shape(
    kind: str, length: float, width: float, boxes: tuple[Box, ...], head_y: float, tail_y: float
) -> VehicleShape:
    return VehicleShape(kind, length, width, boxes, head_y, tail_y, _corners(boxes))


_CAR_COLOURS: tuple[tuple[RGB, float], ...] = (
    ((226, 226, 222), 0.22),
    ((26, 27, 30), 0.17),
    ((170, 172, 176), 0.16),
    ((100, 103, 108), 0.13),
    ((156, 28, 30), 0.09),
    ((34, 60, 122), 0.09),
    ((30, 70, 46), 0.04),
    ((190, 174, 140), 0.04),
    ((222, 180, 40), 0.03),
    ((200, 98, 30), 0.03),
)
_VAN_COLOURS: tuple[tuple[RGB, float], ...] = (
    ((232, 232, 228), 0.55),
    ((170, 172, 176), 0.2),
    ((26, 27, 30), 0.1),
    ((34, 60, 122), 0.08),
    ((156, 28, 30), 0.07),
)
_CAB_COLOURS: tuple[tuple[RGB, float], ...] = (
    ((232, 232, 228), 0.4),
    ((170, 30, 30), 0.2),
    ((34, 70, 140), 0.2),
    ((40, 90, 50), 0.1),
    ((26, 27, 30), 0.1),
)
_CARGO_COLOURS: tuple[tuple[RGB, float], ...] = (
    ((236, 236, 232), 0.5),
    ((180, 182, 186), 0.2),
    ((60, 110, 170), 0.1),
    ((200, 150, 40), 0.1),
    ((150, 40, 36), 0.1),
)
_BUS_COLOURS: tuple[tuple[RGB, float], ...] = (
    ((226, 182, 30), 0.3),
    ((232, 232, 228), 0.3),
    ((176, 34, 34), 0.2),
    ((40, 84, 160), 0.2),
)

KIND_WEIGHTS: tuple[tuple[str, float], ...] = (("car", 0.64), ("van", 0.18), ("truck", 0.1), ("bus", 0.08))


def _pick(rng: np.random.Generator, table: tuple[tuple[RGB, float], ...]) -> RGB:
    weights = np.array([w for _, w in table])
    base = table[int(rng.choice(len(table), p=weights / weights.sum()))][0]
    jitter = rng.uniform(0.93, 1.07, 3)
    r, g, b = (min(255.0, float(c) * float(j)) for c, j in zip(base, jitter, strict=True))
    return (r, g, b)


def sample_vehicle(rng: np.random.Generator) -> tuple[VehicleShape, Driving]:
    """Draw a random vehicle shape and driver."""
    names = [k for k, _ in KIND_WEIGHTS]
    weights = np.array([w for _, w in KIND_WEIGHTS])
    kind = names[int(rng.choice(len(names), p=weights))]
    boxes: tuple[Box, ...]
    if kind == "car":
        length = float(rng.uniform(4.1, 4.9))
        width = float(rng.uniform(1.74, 1.9))
        hw = width / 2.0
        colour = _pick(rng, _CAR_COLOURS)
        roof = float(rng.uniform(1.38, 1.55))
        boxes = (
            Box(hw - 0.1, 0.12, 0.34, 0.55, length - 0.55, UNDERBODY),
            Box(hw, 0.32, 0.92, 0.0, length, colour),
            Box(hw - 0.12, 0.92, roof, 0.30 * length, 0.80 * length, colour, 1.0, 1.0, 0.85, on_top=True),
        )
        shape = _shape("car", length, width, boxes, 0.68, 0.86)
        driving = Driving(float(np.clip(rng.normal(14.0, 1.8), 9.0, 17.0)), 1.6, 1.2)
    elif kind == "van":
        length = float(rng.uniform(4.8, 5.7))
        width = float(rng.uniform(1.95, 2.05))
        hw = width / 2.0
        colour = _pick(rng, _VAN_COLOURS)
        boxes = (
            Box(hw - 0.1, 0.12, 0.36, 0.6, length - 0.6, UNDERBODY),
            Box(hw, 0.34, 1.0, 0.0, length, colour),
            Box(
                hw - 0.04,
                1.0,
                float(rng.uniform(1.95, 2.3)),
                0.16 * length,
                length,
                colour,
                0.8,
                0.45,
                0.5,
                on_top=True,
            ),
        )
        shape = _shape("van", length, width, boxes, 0.78, 0.95)
        driving = Driving(float(np.clip(rng.normal(13.0, 1.5), 9.0, 16.0)), 1.3, 1.3)
    elif kind == "truck":
        length = float(rng.uniform(7.5, 11.0))
        width = 2.45
        hw = width / 2.0
        cab = _pick(rng, _CAB_COLOURS)
        cargo = _pick(rng, _CARGO_COLOURS)
        boxes = (
            Box(hw - 0.15, 0.18, 0.95, 0.4, length - 0.3, UNDERBODY),
            Box(hw, 0.5, 2.9, 0.0, 2.2, cab, 0.38, 0.0, 0.3),
            Box(hw, 0.95, float(rng.uniform(3.3, 3.8)), 2.5, length, cargo),
        )
        shape = _shape("truck", length, width, boxes, 0.95, 1.05)
        driving = Driving(float(np.clip(rng.normal(11.0, 1.2), 8.0, 13.0)), 0.9, 1.6)
    else:
        length = float(rng.uniform(10.5, 12.5))
        width = 2.55
        hw = width / 2.0
        colour = _pick(rng, _BUS_COLOURS)
        boxes = (
            Box(hw - 0.12, 0.1, 0.4, 0.8, length - 0.8, UNDERBODY),
            Box(hw, 0.38, float(rng.uniform(3.0, 3.2)), 0.0, length, colour, 0.5, 0.3, 0.42),
        )
        shape = _shape("bus", length, width, boxes, 0.7, 1.0)
        driving = Driving(float(np.clip(rng.normal(11.5, 1.2), 8.0, 13.5)), 1.0, 1.5)
    return shape, driving
