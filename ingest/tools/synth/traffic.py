"""Vehicle simulation: arrivals, car following, the signal, lane changes and the injected events.

Longitudinal motion is the intelligent driver model (IDM): each vehicle accelerates towards its desired
speed and brakes for whatever is ahead of it in the lanes it occupies (a vehicle, an oncoming wrong-way
driver, or a red/yellow stop line). A hard constraint on top keeps vehicles that share a lane from ever
overlapping. Lane changes happen only to get round an obstacle (a stalled vehicle, an oncoming vehicle)
or for a wrong-way driver to get back to its side, and only into a gap that is large enough; while
changing, a vehicle occupies both lanes.

All randomness comes from the ``numpy.random.Generator`` passed in, in a fixed order, so a run is a pure
function of its inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ingest.tools.synth.events import EventSpec
from ingest.tools.synth.scene_layout import RoadLayout
from ingest.tools.synth.traffic_light import LightCycle
from ingest.tools.synth.vehicles import Driving, VehicleShape, sample_vehicle

S0 = 2.0  # IDM minimum gap, m
COMFORT_BRAKE = 2.5  # IDM comfortable deceleration, m/s^2
MAX_BRAKE = 8.0
FREE_ROAD_BRAKE = 4.0  # braking because the desired speed dropped (jam onset), m/s^2
STALL_BRAKE = 3.5
LANE_CHANGE_S = 2.6
EVASIVE_CHANGE_S = 1.6
EVADE_RANGE_M = 120.0
BASE_ARRIVALS_PER_S = 0.18  # per lane, at traffic_density 1.0
JAM_ARRIVAL_FACTOR = 3.0
JAM_SPEED_MPS = (0.6, 2.6)
JAM_TOWARDS_ZONE_Z = 230.0  # at jam onset, vehicles nearer than this (towards lanes) ...
JAM_AWAY_ZONE_Z = 15.0  # ... or farther than this (away lanes) slow down at once
WRONG_WAY_RETRY_S = 1.0
RETURNING_SPEED_MPS = 1.5  # crawl until the traffic on its own side leaves a gap
WRONG_WAY_PATIENCE_S = 1.2  # after this, a wrong-way driver enters at the far end instead
MAX_PENDING = 4
WARM_UP_S = 45.0


@dataclass(slots=True, eq=False)
class Vehicle:
    vid: int
    shape: VehicleShape
    driving: Driving
    lane: int
    x: float
    z_front: float  # z of the front bumper
    heading: int  # +1 moving away from the camera, -1 towards it
    v: float
    accel: float = 0.0
    vx: float = 0.0  # lateral speed while changing lanes
    wrong_way: bool = False
    returning: bool = False  # wrong-way driver heading back to its own side
    stalled: bool = False
    event_index: int | None = None
    from_lane: int | None = None  # set while changing lanes
    lc_x0: float = 0.0
    lc_x1: float = 0.0
    lc_t0: float = 0.0
    lc_duration: float = LANE_CHANGE_S
    light_cycle: int = -(10**9)  # signal cycle in which the stop/go decision below was made
    light_go: bool = False
    jammed: bool = False  # part of an injected jam: desired speed capped

    @property
    def length(self) -> float:
        return self.shape.length

    @property
    def z_lo(self) -> float:
        return self.z_front if self.heading < 0 else self.z_front - self.shape.length

    @property
    def z_hi(self) -> float:
        return self.z_front + self.shape.length if self.heading < 0 else self.z_front

    @property
    def braking(self) -> bool:
        return (self.accel < -1.0 and self.v > 0.1) or (self.v < 0.5 and not self.stalled)


@dataclass(frozen=True)
class _Lead:
    gap: float
    speed: float  # the obstacle's speed along the follower's heading (negative: oncoming)
    vehicle: Vehicle | None  # None: a stop line


def _smoothstep(u: float) -> float:
    u = min(1.0, max(0.0, u))
    return u * u * (3.0 - 2.0 * u)


def _idm(v: float, v0: float, lead: _Lead | None, d: Driving) -> float:
    free = 1.0 - (v / v0) ** 4 if v0 > 0.05 else -1e9
    free = max(free, -FREE_ROAD_BRAKE / d.a_max)
    interaction = 0.0
    if lead is not None:
        dv = v - lead.speed
        s_star = S0 + max(0.0, v * d.headway_s + v * dv / (2.0 * math.sqrt(d.a_max * COMFORT_BRAKE)))
        interaction = (s_star / max(lead.gap, 0.05)) ** 2
    return min(d.a_max, max(-MAX_BRAKE, d.a_max * (free - interaction)))


class TrafficSim:
    """The traffic on the road. Call ``warm_up`` once, then ``step(t, dt)`` once per frame."""

    def __init__(
        self,
        layout: RoadLayout,
        light: LightCycle,
        events: tuple[EventSpec, ...],
        rng: np.random.Generator,
        density: float = 1.0,
    ) -> None:
        self.layout = layout
        self.light = light
        self.events = events
        self.rng = rng
        self.density = density
        self.vehicles: list[Vehicle] = []
        self.event_lanes: list[int | None] = [None] * len(events)
        self._started = [False] * len(events)
        self._ended = [False] * len(events)
        self._retry_at = [0.0] * len(events)
        self._next_id = 0
        self._next_arrival = [0.0] * layout.lanes
        self._pending = [0] * layout.lanes
        self._time = 0.0

    # ----------------------------------------------------------------------------------------- running
    def warm_up(self, seconds: float = WARM_UP_S, dt: float = 0.1) -> None:
        """Fill the road by simulating ``seconds`` before t = 0 (no events can start before t = 0)."""
        t = -seconds
        self._next_arrival = [t + self._arrival_gap(False) for _ in range(self.layout.lanes)]
        while t < -1e-9:
            h = min(dt, -t)
            self.step(t, h)
            t += h

    def step(self, t: float, dt: float) -> None:
        """Advance the world from ``t`` to ``t + dt``."""
        t_next = t + dt
        self._time = t_next
        self._update_events(t_next)
        jam = self.jam_active(t_next)
        self._arrivals(t_next, jam)
        by_lane = self._occupancy()
        light_state = self.light.state_at(t)
        cycle = self.light.cycle_index(t)
        plans: list[tuple[Vehicle, float, _Lead | None]] = []
        for veh in self.vehicles:
            lead = self._vehicle_lead(veh, by_lane)
            self._maybe_change_lane(veh, lead, by_lane, t)
            line = self._line_lead(veh, light_state, cycle)
            target = lead if line is None or (lead is not None and lead.gap <= line.gap) else line
            v0 = veh.driving.v0
            if jam and not veh.jammed and lead is not None and lead.vehicle is not None:
                # Arrivals join the jam when they catch up with it, so it persists upstream.
                veh.jammed = lead.vehicle.jammed and lead.gap < 25.0
            if veh.jammed:
                v0 = min(v0, self._jam_speed(veh))
            if veh.returning:
                v0 = min(v0, RETURNING_SPEED_MPS)  # let the traffic on its own side open a gap
            a = _idm(veh.v, v0, target, veh.driving)
            if veh.stalled:
                a = min(a, -STALL_BRAKE if veh.v > 0 else 0.0)
            plans.append((veh, a, lead))
        for veh, a, lead in plans:
            self._integrate(veh, a, lead, dt, t_next)
        self._despawn()

    def jam_active(self, t: float) -> bool:
        return any(e.kind == "jam" and e.start_s <= t + 1e-9 < e.end_s for e in self.events)

    # ----------------------------------------------------------------------------------------- helpers
    def _arrival_gap(self, jam: bool) -> float:
        rate = BASE_ARRIVALS_PER_S * self.density * (JAM_ARRIVAL_FACTOR if jam else 1.0)
        return float(self.rng.exponential(1.0 / rate))

    def _jam_speed(self, veh: Vehicle) -> float:
        lo, hi = JAM_SPEED_MPS
        return lo + (hi - lo) * ((veh.vid * 0.6180339887) % 1.0)

    def _occupancy(self) -> list[list[Vehicle]]:
        by_lane: list[list[Vehicle]] = [[] for _ in range(self.layout.lanes)]
        for veh in self.vehicles:
            by_lane[veh.lane].append(veh)
            if veh.from_lane is not None:
                by_lane[veh.from_lane].append(veh)
        return by_lane

    def _vehicle_lead(self, veh: Vehicle, by_lane: list[list[Vehicle]]) -> _Lead | None:
        best: Vehicle | None = None
        best_gap = math.inf
        centre = veh.z_lo + veh.z_hi
        lanes = (veh.lane,) if veh.from_lane is None else (veh.lane, veh.from_lane)
        for lane in lanes:
            for other in by_lane[lane]:
                if other is veh or abs(other.x - veh.x) > (other.shape.width + veh.shape.width) / 2.0 + 0.3:
                    continue  # not in the same lane or, changing lanes, already clear of it
                if veh.heading > 0:
                    if other.z_lo + other.z_hi <= centre:
                        continue
                    gap = other.z_lo - veh.z_front
                else:
                    if other.z_lo + other.z_hi >= centre:
                        continue
                    gap = veh.z_front - other.z_hi
                if gap < best_gap:
                    best, best_gap = other, gap
        if best is None:
            return None
        return _Lead(best_gap, best.v * best.heading * veh.heading, best)

    def _line_lead(self, veh: Vehicle, state: str, cycle: int) -> _Lead | None:
        if state == "green" or veh.wrong_way or veh.heading != self.layout.lane_direction(veh.lane):
            return None
        dist = veh.heading * (self.layout.stop_line_z(veh.lane) - veh.z_front)
        if dist <= 0:
            return None  # already past the line
        if veh.light_cycle != cycle:
            veh.light_cycle = cycle
            veh.light_go = state == "yellow" and dist < veh.v**2 / (2.0 * 3.0) + 1.0
        return None if veh.light_go else _Lead(dist, 0.0, None)

    def _integrate(self, veh: Vehicle, a: float, lead: _Lead | None, dt: float, t_next: float) -> None:
        new_v = max(0.0, veh.v + a * dt)
        advance = 0.5 * (veh.v + new_v) * dt
        if lead is not None and lead.vehicle is not None:
            room = lead.gap - 0.5
            if lead.speed < 0:
                room *= 0.5  # both close the gap
            if advance > max(0.0, room):
                advance = max(0.0, room)
                new_v = min(new_v, max(0.0, lead.speed))
        veh.z_front += veh.heading * advance
        veh.v = new_v
        veh.accel = a
        if veh.from_lane is not None:
            u = (t_next - veh.lc_t0) / veh.lc_duration
            old_x = veh.x
            if u >= 1.0:
                veh.x = veh.lc_x1
                veh.from_lane = None
                if veh.returning:
                    veh.wrong_way = veh.returning = False
                    veh.event_index = None
            else:
                veh.x = veh.lc_x0 + (veh.lc_x1 - veh.lc_x0) * _smoothstep(u)
            veh.vx = (veh.x - old_x) / dt
        else:
            veh.vx = 0.0

    def _despawn(self) -> None:
        far = self.layout.far_z + 5.0
        self.vehicles = [v for v in self.vehicles if v.z_hi > 0.0 and v.z_lo < far]

    # ----------------------------------------------------------------------------------------- arrivals
    def _new_vehicle(self, lane: int, z_front: float, heading: int, v: float | None = None) -> Vehicle:
        shape, driving = sample_vehicle(self.rng)
        veh = Vehicle(
            vid=self._next_id,
            shape=shape,
            driving=driving,
            lane=lane,
            x=self.layout.lane_center(lane),
            z_front=z_front,
            heading=heading,
            v=driving.v0 if v is None else v,
        )
        self._next_id += 1
        self.vehicles.append(veh)
        return veh

    def _arrivals(self, t_next: float, jam: bool) -> None:
        for lane in range(self.layout.lanes):
            while self._next_arrival[lane] <= t_next:
                self._pending[lane] = min(MAX_PENDING, self._pending[lane] + 1)
                self._next_arrival[lane] += self._arrival_gap(jam)
        ww_lanes = {v.lane for v in self.vehicles if v.wrong_way} | {
            v.from_lane for v in self.vehicles if v.wrong_way and v.from_lane is not None
        }
        for lane in range(self.layout.lanes):
            if self._pending[lane] == 0 or lane in ww_lanes:
                continue
            direction = self.layout.lane_direction(lane)
            entry = self.layout.far_z if direction < 0 else 0.0
            gap = math.inf
            lead_speed = 0.0
            for other in self.vehicles:
                if other.lane != lane and other.from_lane != lane:
                    continue
                g = entry - other.z_hi if direction < 0 else other.z_lo - entry
                if g < gap:
                    gap, lead_speed = g, other.v * other.heading * direction
            if gap < S0 + 4.0:
                continue
            veh = self._new_vehicle(lane, entry, direction)
            speed = veh.driving.v0
            if gap < S0 + speed * veh.driving.headway_s * 2.0:
                speed = min(speed, max(0.0, lead_speed))
            veh.v = speed
            self._pending[lane] -= 1

    # ----------------------------------------------------------------------------------------- lanes
    def _gap_ok(self, veh: Vehicle, target: int, by_lane: list[list[Vehicle]], urgent: bool = False) -> bool:
        """Is there room in ``target`` beside ``veh``? ``urgent``: accept a tight gap (evasion: the
        vehicles behind in the target lane will have to brake)."""
        for other in by_lane[target]:
            if other is veh:
                continue
            if other.z_lo > veh.z_hi:
                sep, other_higher = other.z_lo - veh.z_hi, True
            elif veh.z_lo > other.z_hi:
                sep, other_higher = veh.z_lo - other.z_hi, False
            else:
                return False
            other_ahead = other_higher == (veh.heading > 0)
            if other.heading == veh.heading:
                if veh.returning:
                    need = 1.0
                elif urgent:
                    need = S0 + 0.5 + (veh.v * 0.3 if other_ahead else other.v * 0.5)
                else:
                    need = S0 + 2.0 + (veh.v * 1.0 if other_ahead else other.v * 1.2)
            elif other_ahead:  # coming at us
                need = S0 + (5.0 + 1.0 * (veh.v + other.v) if urgent else 10.0 + 2.0 * (veh.v + other.v))
            else:
                need = S0
            if sep < need:
                return False
        return True

    def _start_change(
        self, veh: Vehicle, target: int, by_lane: list[list[Vehicle]], t: float, duration: float = LANE_CHANGE_S
    ) -> None:
        veh.lc_duration = duration
        veh.from_lane = veh.lane
        veh.lane = target
        veh.lc_x0 = veh.x
        veh.lc_x1 = self.layout.lane_center(target)
        veh.lc_t0 = t
        by_lane[target].append(veh)

    def _maybe_change_lane(self, veh: Vehicle, lead: _Lead | None, by_lane: list[list[Vehicle]], t: float) -> None:
        if veh.from_lane is not None or veh.stalled:
            return
        if veh.wrong_way:
            if not veh.returning:
                return
            urgent = True
            targets = [lane for lane in (veh.lane - 1, veh.lane + 1) if 0 <= lane < self.layout.lanes]
        else:
            if lead is None or lead.vehicle is None:
                return
            blocker = lead.vehicle
            oncoming = blocker.heading != veh.heading
            if oncoming and lead.gap < EVADE_RANGE_M:
                urgent = True
            elif blocker.stalled and lead.gap < 70.0:
                urgent = lead.gap < 25.0 and veh.v < 3.0
            else:
                return
            targets = [veh.lane + 1, veh.lane - 1] if veh.heading > 0 else [veh.lane - 1, veh.lane + 1]
        for target in targets:
            if not 0 <= target < self.layout.lanes or self.layout.lane_direction(target) != veh.heading:
                continue
            if self._gap_ok(veh, target, by_lane, urgent):
                self._start_change(veh, target, by_lane, t, EVASIVE_CHANGE_S if urgent else LANE_CHANGE_S)
                return

    # ----------------------------------------------------------------------------------------- events
    def _update_events(self, t_next: float) -> None:
        for i, event in enumerate(self.events):
            if not self._started[i] and t_next >= event.start_s - 1e-9:
                self._started[i] = True
                self._start_event(i, t_next)
            if self._started[i] and not self._ended[i] and t_next >= event.end_s - 1e-9:
                self._ended[i] = True
                self._end_event(i)
            if event.kind != "wrong_way" or not self._started[i] or self._ended[i]:
                continue
            if t_next >= event.end_s - EVASIVE_CHANGE_S:
                # Head back now, so that in free traffic the driver is on its own side when the event ends.
                for veh in self.vehicles:
                    if veh.event_index == i and veh.wrong_way:
                        veh.returning = True
            elif t_next >= self._retry_at[i] and not any(v.event_index == i for v in self.vehicles):
                self._start_wrong_way(i, t_next)

    def _start_event(self, i: int, t: float) -> None:
        kind = self.events[i].kind
        if kind == "jam":
            # A downstream bottleneck: traffic towards the exit end collapses at once, arrivals keep coming
            # at speed and join the queue (see ``step``), so density rises upstream.
            for veh in self.vehicles:
                downstream = veh.z_front < JAM_TOWARDS_ZONE_Z if veh.heading < 0 else veh.z_front > JAM_AWAY_ZONE_Z
                veh.jammed = veh.jammed or downstream
            self._next_arrival = [min(due, t + self._arrival_gap(True)) for due in self._next_arrival]
        elif kind == "stalled":
            self._start_stalled(i)
        elif kind == "wrong_way":
            self._start_wrong_way(i, t)

    def _end_event(self, i: int) -> None:
        if self.events[i].kind == "jam" and not self.jam_active(self._time):
            for veh in self.vehicles:
                veh.jammed = False
        for veh in self.vehicles:
            if veh.event_index != i:
                continue
            if veh.stalled:
                veh.stalled = False
                veh.event_index = None
            elif veh.wrong_way:
                veh.returning = True

    def _normal(self, veh: Vehicle) -> bool:
        return (
            not veh.wrong_way
            and not veh.stalled
            and veh.from_lane is None
            and veh.heading == self.layout.lane_direction(veh.lane)
        )

    def _start_stalled(self, i: int) -> None:
        lay = self.layout
        candidates = [
            v
            for v in self.vehicles
            if self._normal(v) and 25.0 <= v.z_front <= 160.0 and abs(v.z_front - lay.stop_line_z(v.lane)) > 10.0
        ]
        if not candidates:
            candidates = [v for v in self.vehicles if self._normal(v) and 5.0 < v.z_front < lay.far_z - 10.0]
        if candidates:
            veh = min(candidates, key=lambda v: (abs(v.z_front - 70.0), v.vid))
        else:
            veh = self._new_vehicle(0, lay.far_z, lay.lane_direction(0), v=0.0)
        veh.stalled = True
        veh.event_index = i
        self.event_lanes[i] = veh.lane

    def _start_wrong_way(self, i: int, t: float) -> None:
        """A driver crosses the centre line into the nearest opposite lane and drives against the traffic
        (oncoming drivers get out of the way). Failing a suitable driver within ``WRONG_WAY_PATIENCE_S``,
        one enters that lane from the far end."""
        lay = self.layout
        ww_lane = lay.lanes // 2
        source = ww_lane - 1
        remaining = max(0.0, self.events[i].end_s - t)
        target_z = min(230.0, max(70.0, 30.0 + 11.0 * remaining))
        by_lane = self._occupancy()
        drivers = [v for v in self.vehicles if v.lane == source and self._normal(v) and 25.0 <= v.z_front <= 300.0]
        moving = [v for v in drivers if v.v > 4.0]  # not someone waiting in the queue at the signal
        candidates = [v for v in moving if self._gap_ok(v, ww_lane, by_lane)]
        if not candidates:  # oncoming traffic will have to get out of the way
            candidates = [v for v in moving if self._gap_ok(v, ww_lane, by_lane, urgent=True)]
        if not candidates:
            candidates = [v for v in drivers if self._gap_ok(v, ww_lane, by_lane, urgent=True)]
        self._retry_at[i] = t + WRONG_WAY_RETRY_S
        if candidates:
            veh = min(candidates, key=lambda v: (abs(v.z_front - target_z), v.vid))
            self._start_change(veh, ww_lane, by_lane, t)
        elif t < self.events[i].start_s + WRONG_WAY_PATIENCE_S:
            self._retry_at[i] = t + 0.2  # wait a moment for a driver in a suitable place
            return
        else:
            blocked = any(
                (v.lane == ww_lane or v.from_lane == ww_lane) and v.z_hi > lay.far_z - 40.0 for v in self.vehicles
            )
            if blocked:
                return
            veh = self._new_vehicle(ww_lane, lay.far_z, -1)
        veh.wrong_way = True
        veh.returning = False
        veh.event_index = i
        self.event_lanes[i] = ww_lane
