"""Where things are on the road: lanes, stop lines, crossing, lamp posts and the traffic signal."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoadLayout:
    """A straight road along ``z``; lanes are numbered left to right as the camera sees them.

    The left half of the lanes carries traffic towards the camera (decreasing ``z``), the right half away
    from it (right-hand traffic). A signalised pedestrian crossing lies between the two stop lines.
    """

    lanes: int = 4
    lane_width: float = 3.5
    shoulder: float = 1.2
    stop_away_z: float = 44.0  # vehicles driving away stop before this line
    stop_towards_z: float = 53.0  # vehicles driving towards the camera stop before this line
    far_z: float = 320.0  # vehicles enter/leave here (a few pixels wide)
    near_z: float = 1.0  # geometry nearer than this is cut off (it is below the image anyway)
    lamp_spacing: float = 36.0

    @property
    def half_width(self) -> float:
        return self.lanes * self.lane_width / 2.0

    def lane_center(self, lane: int) -> float:
        return (lane - (self.lanes - 1) / 2.0) * self.lane_width

    def lane_direction(self, lane: int) -> int:
        """+1: traffic moves away from the camera (+z); -1: towards it."""
        return -1 if lane < self.lanes // 2 else 1

    def stop_line_z(self, lane: int) -> float:
        return self.stop_away_z if self.lane_direction(lane) > 0 else self.stop_towards_z

    @property
    def crossing_z(self) -> tuple[float, float]:
        return self.stop_away_z + 1.8, self.stop_towards_z - 1.8

    @property
    def verge_x(self) -> float:
        """|x| of the poles on either verge."""
        return self.half_width + self.shoulder + 0.9

    def lamp_posts(self) -> tuple[tuple[float, float], ...]:
        """(x, z) of street-lamp posts, staggered on both verges."""
        posts = []
        z = 22.0
        side = -1.0
        while z < 300.0:
            posts.append((side * self.verge_x, z))
            z += self.lamp_spacing / 2.0
            side = -side
        return tuple(posts)
