"""What happens where in a window: per-cell motion, direction and "something stands still here" maps.

Events on a road are local and defined by motion: a vehicle driving the wrong way moves against its lane's flow, a
stalled vehicle stands where vehicles pass, a jam is many standing vehicles for longer than a red light lasts. The
window's frames (brought to a fixed 64×64 analysis size by the shared preprocessing contract, so any window size
works) are cut into a ``GRID``×``GRID`` grid; per cell:

* ``u``, ``v``: the cell's flow (Lucas–Kanade over the whole cell, summed over the window's frame pairs), squashed
  and weighted by how much the cell changes, so still cells carry no direction noise;
* ``stopped``: how different the cell is from the camera's background (a median of recent frames, each divided
  by its own mean brightness, so dusk and night do not read as occupancy) times how still it is;
* ``stopped`` averaged over the last ``CONTEXT_S`` seconds of the camera (the window alone is 0.8 s: too short to
  tell a queue at a red light from a jam).

These maps depend on pixels only, not on a model version: a camera's memory of them survives a new model.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ingest.contract.model_input import centre_crop_box, model_input

GRID = 8
SIZE = 64  # analysis frames are SIZE×SIZE; a cell is SIZE // GRID pixels wide
CONTEXT_S = (8.0, 30.0)  # seconds of history the "stood still" maps are averaged over
FEATURES = 2 + 1 + len(CONTEXT_S)  # u, v, stopped, stopped over each context span
STILL_SCALE = 0.005  # mean absolute frame change (0..1) at which a cell counts as moving (e^-1)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

Maps = npt.NDArray[np.float32]


def analysis_frames(frames: npt.NDArray[np.uint8]) -> Maps:
    """``[T, H, W, C]`` uint8 → ``[T, SIZE, SIZE, 3]`` float32 in [0, 1] (centre crop, area resize)."""
    clip = model_input(frames, SIZE, SIZE, 3, frames.shape[0])
    return clip.astype(np.float32) / 255.0


def cells(values: Maps) -> Maps:
    """``[..., SIZE, SIZE]`` → ``[..., GRID, GRID]`` cell means."""
    side = SIZE // GRID
    shape = values.shape[:-2]
    result: Maps = values.reshape(*shape, GRID, side, GRID, side).mean(axis=(-1, -3))
    return result


def flow_and_motion(gray: Maps) -> tuple[Maps, Maps, Maps]:
    """``[T, SIZE, SIZE]`` gray frames → per-cell ``(u, v, motion)``: flow solved per cell over all frame pairs, and
    the mean absolute frame-to-frame change."""
    change = np.diff(gray, axis=0)
    middle = 0.5 * (gray[1:] + gray[:-1])
    dy = np.gradient(middle, axis=1)
    dx = np.gradient(middle, axis=2)
    # Summed over the frame pairs before the cell means: the same sums, a sixth of the strided reductions.
    sxx, syy, sxy = cells((dx * dx).sum(0)), cells((dy * dy).sum(0)), cells((dx * dy).sum(0))
    sxt, syt = cells((dx * change).sum(0)), cells((dy * change).sum(0))
    det = sxx * syy - sxy * sxy + 1e-6
    u = -(syy * sxt - sxy * syt) / det
    v = -(sxx * syt - sxy * sxt) / det
    motion = cells(np.abs(change).mean(0))
    return u.astype(np.float32), v.astype(np.float32), motion.astype(np.float32)


def brightness_normalised(mean_frame: Maps) -> Maps:
    """A ``[SIZE, SIZE, 3]`` frame divided by its mean brightness (what stays when the whole scene dims), at half
    resolution: the background median over it is the costliest step, and occupancy is a per-cell mean anyway."""
    half = mean_frame.reshape(SIZE // 2, 2, SIZE // 2, 2, 3).mean(axis=(1, 3))
    result: Maps = half / (float(half.mean()) + 1e-3)
    return result


def occupancy(normalised: Maps, background: Maps) -> Maps:
    """Per-cell mean absolute difference between a normalised frame and the normalised background (both from
    :func:`brightness_normalised`)."""
    side = SIZE // 2 // GRID
    difference = np.abs(normalised - background).mean(axis=-1)
    result: Maps = difference.reshape(GRID, side, GRID, side).mean(axis=(1, 3))
    return result


def window_maps(frames: Maps, background: Maps | None) -> tuple[Maps, Maps, Maps]:
    """Analysis frames → ``(u, v, stopped)`` per cell (``stopped`` is zero without a background yet) and the
    window's normalised mean frame, which the caller may add to the background."""
    gray = frames @ _LUMA
    u, v, motion = flow_and_motion(gray)
    weight = np.minimum(motion / STILL_SCALE, 10.0)
    mean = brightness_normalised(frames.mean(axis=0))
    occupied = occupancy(mean, background) if background is not None else np.zeros_like(motion)
    stopped = occupied * np.exp(-motion / STILL_SCALE)
    flow = np.stack([np.tanh(u) * weight, np.tanh(v) * weight], axis=-1)
    return flow.astype(np.float32), stopped.astype(np.float32), mean.astype(np.float32)


def cell_box(row: int, col: int, height: int, width: int) -> list[int]:
    """The ``[x0, y0, x1, y1]`` pixels of a grid cell in a frame of ``height``×``width`` (the analysis crop is the
    frame's largest centred square, as :func:`ingest.contract.model_input.model_input` takes it)."""
    y0, x0, h, w = centre_crop_box(height, width, 1.0)
    return [
        x0 + col * w // GRID,
        y0 + row * h // GRID,
        x0 + (col + 1) * w // GRID,
        y0 + (row + 1) * h // GRID,
    ]
