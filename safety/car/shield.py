"""The car's shield: every executed (speed, steering) command is filtered here.

The shield's model of the car: kinematic bicycle, steering takes effect at once, speed
moves toward the command, braking at `brake_decel` after `reaction_time`. A state is
*recoverable* along a steering angle when braking now stops the footprint before it comes
within `clearance` of a wall or obstacle on that arc:
    |v| t_r + v^2 / (2 b) <= free(arc)
A command (v_c, steer) is *accepted* when, after being held for one control period at up
to v_hi = max(|v|, |v_c|), the state is still recoverable along the same arc:
    v_hi (dt + t_r) + v_hi^2 / (2 b) <= free(arc)
Braking along an arc keeps a recoverable state recoverable (the distance braked equals the
drop in stopping distance), so the shield can always fall back on it. Free distance
comes from the track's clearance map and, when given, from lidar returns.

Order of preference, so the change is minimal: the command as it is; the same steering at
a lower speed; the nearest other steering angle that is accepted. If none is, the backup
controller brakes hard along the recoverable arc with the most room (or, if none is
recoverable, along the last accepted steering) and the verdict says 'backup'.

The filter runs in a control loop, so the search (the command's own steering, the candidates,
the backup's arcs) is one call of a numba kernel, `_search`. Its arc checks are scalar loops
that stop at the first sample without room: most arcs end long before the lookahead. Numba
rather than numpy: the arrays are short (tens to a few hundred samples), so numpy's per-call
overhead, and then the Python around it per candidate, was the cost, not the arithmetic. The
kernels compute what a plain numpy version does, bit for bit (same samples, same cell lookups,
same float32 comparison with the map); tests/safety/test_car_shield.py holds that version and
checks it. Compiled code is cached beside this file (cache=True): the first call after a change
compiles for a few seconds, later processes load it.
"""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np

from safety.car.clearance import ClearanceMap, clearance_at
from safety.car.spec import CarSafetySpec
from safety.verdict import BACKUP, MODIFIED, PASSED, Verdict
from twin.car.actuation import Command

ARC_STEP = 0.05
"""Spacing of the points checked along an arc (m). The map lookups and this sampling are both
conservative: the free distance the shield measures never exceeds the true one."""
EPS_V = 0.02


@dataclasses.dataclass(frozen=True)
class CarShieldState:
    """What the shield needs to know about the car now."""

    x: float
    y: float
    yaw: float
    v: float
    steer: float
    s: float
    """Arc length along the track (for speed zones)."""
    lidar_points: np.ndarray | None = None
    """Lidar returns in the car's frame (x forward, y left; m), shape (n, 2); None: map only."""


class CarShield:
    """Filters commands against a CarSafetySpec on one track."""

    def __init__(self, spec: CarSafetySpec, clearance: ClearanceMap) -> None:
        self.spec = spec
        self.map = clearance
        self.track_length = clearance.track.length
        half_len = spec.car_length / 4
        # Two circles cover the footprint: centres a quarter length ahead of and behind the middle.
        self.offset = half_len
        self.radius = math.hypot(half_len, spec.car_width / 2)
        self.sigma = np.arange(0.0, spec.lookahead + ARC_STEP, ARC_STEP)
        self.last_steer = 0.0
        self._candidates = np.linspace(-spec.steer_max, spec.steer_max, 9)
        # Between two samples a circle centre moves up to ~1.4 ARC_STEP; the clearance field is
        # 1-Lipschitz, so 0.75 ARC_STEP more at the samples bounds the dip in between. The map
        # holds float32, and the comparison is made in float32 (as numpy made it on the map's array).
        room_needed = np.float32(self.radius + spec.clearance + 0.75 * ARC_STEP)
        # What the kernels need, bundled once: see _free and _accept.
        # Floats throughout (a spec read from JSON may hold ints): one compiled version of each kernel.
        self._geometry = (clearance.grid, clearance.x0, clearance.y0, float(clearance.resolution), self.sigma,
                          float(self.offset), room_needed, float(spec.wheelbase),
                          float(spec.car_width / 2 + spec.clearance), float(spec.car_length / 2 + spec.clearance),
                          float(spec.car_length))
        self._model = tuple(float(p) for p in (spec.control_period, spec.reaction_time, spec.brake_decel,
                                               spec.a_lat_max, spec.wheelbase))

    def reset(self, steer: float = 0.0) -> None:
        self.last_steer = steer

    # -- geometry ------------------------------------------------------------------------
    def free_distance(self, st: CarShieldState, steer: float, direction: float, horizon: float | None = None) -> float:
        """Distance the car can travel along the arc of `steer` (forward: direction=+1) before
        its footprint comes within the clearance of a wall, obstacle or lidar return.

        Only the first `horizon` metres are checked (default: the spec's lookahead); a
        caller that needs no more than that saves the rest of the work."""
        n = len(self.sigma) if horizon is None else _samples(float(horizon), len(self.sigma))
        return _free(self._geometry, _points(st), float(st.x), float(st.y), float(st.yaw), float(steer),
                     float(direction), n)

    # -- the model's conditions ----------------------------------------------------------
    def _need_brake(self, v: float) -> float:
        return abs(v) * self.spec.reaction_time + v * v / (2 * self.spec.brake_decel)

    def _zone_cap(self, st: CarShieldState, direction: float, here: float) -> tuple[float, str]:
        """Speed limit in `direction` from the reverse limit or the zones, here (`here`: the forward
        limit at st.s) and ahead."""
        sp = self.spec
        if direction < 0:
            return sp.v_reverse_max, "speed: reverse limit"
        cap, why = here, "speed: zone limit"
        # Zones ahead: be able to slow to their limit by their start.
        for z in sp.zones:
            to_zone = (z.s_start - st.s) % self.track_length
            if z.v_max < cap and 0 < to_zone < sp.lookahead:
                # Aim to be at the zone's speed a reaction time early: the speed loop lags the command.
                ahead = max(0.0, to_zone - z.v_max * sp.reaction_time)
                t = sp.control_period + sp.reaction_time
                b = sp.brake_decel
                v_ok = b * (-t + math.sqrt(t * t + (2 * ahead + z.v_max**2 / b) / b))
                if v_ok < cap:
                    cap, why = max(z.v_max, v_ok), "speed: zone ahead"
        return cap, why

    def steer_limit(self, v: float) -> float:
        """Largest steering angle whose turn at speed v stays within the lateral acceleration limit."""
        sp = self.spec
        if abs(v) < 1e-3:
            return sp.steer_max
        return min(sp.steer_max, math.atan(sp.a_lat_max * sp.wheelbase / (v * v)))

    # -- the filter ------------------------------------------------------------------------
    def filter(self, st: CarShieldState, command: Command) -> Verdict:
        """The command to execute instead of `command`, with the reasons for any change."""
        sp = self.spec
        if not math.isfinite(st.v):
            raise ValueError(f"CarShieldState.v = {st.v}: the shield needs the car's measured speed as a finite number")
        proposed = {"speed": command.speed, "steer": command.steer}
        reasons: list[str] = []
        speed, steer = command.speed, command.steer
        if not (math.isfinite(speed) and math.isfinite(steer)):
            reasons.append("invalid command: not finite")
            speed, steer = 0.0, st.steer if math.isfinite(st.steer) else 0.0
        if abs(steer) > sp.steer_max:
            reasons.append("steering limit")
            steer = math.copysign(sp.steer_max, steer)
        # The car is at |v| now whatever speed is asked: at that speed the turn must stay within limits.
        steer_lat = self.steer_limit(st.v)
        if abs(steer) > steer_lat:
            reasons.append("lateral acceleration: steering")
            steer = math.copysign(steer_lat, steer)

        # Speed limit from zones, zones ahead and lateral acceleration.
        direction = math.copysign(1.0, speed) if abs(speed) > EPS_V else 1.0
        here = sp.speed_limit(st.s, self.track_length)
        zone_cap, cap_reason = self._zone_cap(st, direction, here)
        cap = zone_cap
        v_lat = _lateral_cap(steer, sp.a_lat_max, sp.wheelbase)
        if v_lat < cap:
            cap, cap_reason = v_lat, "lateral acceleration"
        if abs(speed) > cap:
            reasons.append(cap_reason)

        # The search, one kernel call: the command's own steering, else the nearest other accepted
        # one, else the backup's arc. A creep command (|speed| <= EPS_V) is checked in the direction
        # the car rolls.
        v = float(st.v)
        travel = _travel_direction(speed, v)
        if travel != direction:
            zone_cap, _ = self._zone_cap(st, travel, here)
        found, chosen, allowed, margin = _search(
            self._geometry, self._model, _points(st), float(st.x), float(st.y), float(st.yaw), v, float(speed), travel,
            float(zone_cap), float(steer), float(steer_lat), self._candidates, float(self.last_steer),
            _travel_direction(0.0, v))
        if found == 0:
            if abs(allowed) < min(abs(speed), cap):  # exact: any change is reported, however small
                reasons.append("stopping distance")
            self.last_steer = steer
            return self._verdict(PASSED if not reasons else MODIFIED, proposed, allowed, steer, reasons, margin, here)
        if found == 1:
            reasons.append(f"stopping distance: steering {steer:+.3f} -> {chosen:+.3f}")
            self.last_steer = chosen
            return self._verdict(MODIFIED, proposed, allowed, chosen, reasons, margin, here)
        # Backup controller: brake hard along the recoverable arc with the most room (`margin` holds that room).
        recoverable = self._need_brake(v) <= margin
        reasons.append("backup: emergency brake" + ("" if recoverable else " (not recoverable in the model)"))
        self.last_steer = chosen
        return self._verdict(BACKUP, proposed, 0.0, chosen, reasons, margin - self._need_brake(v), here)

    def _verdict(self, kind: str, proposed: dict, speed: float, steer: float, reasons: list[str],
                 clearance_margin: float, here: float) -> Verdict:
        sp = self.spec
        limit = sp.v_reverse_max if speed < 0 else here
        a_lat = speed * speed * abs(math.tan(steer)) / sp.wheelbase
        margins = {"clearance": clearance_margin, "speed": limit - abs(speed), "lateral_accel": sp.a_lat_max - a_lat}
        return Verdict(kind, proposed, {"speed": float(speed), "steer": float(steer)}, tuple(reasons), margins)


_NO_POINTS = np.empty((0, 2))


def _points(st: CarShieldState) -> np.ndarray:
    """The state's lidar returns as the kernels take them: float64, shape (n, 2); none: an empty array."""
    if st.lidar_points is None:
        return _NO_POINTS
    return np.ascontiguousarray(st.lidar_points, dtype=np.float64).reshape(-1, 2)


def _travel_direction(speed: float, v: float) -> float:
    """Direction (+1 forward, -1 back) in which a command moves the car: the command's own,
    or while it creeps (|speed| <= EPS_V), the way the car is rolling (forward at a standstill)."""
    if abs(speed) > EPS_V:
        return math.copysign(1.0, speed)
    return math.copysign(1.0, v) if abs(v) > EPS_V else 1.0


# -- kernels -------------------------------------------------------------------------------
# geometry = (grid, x0, y0, resolution, sigma, offset, room_needed, wheelbase, band_width, lead,
#             car_length): the clearance map's grid and where it lies; the arc's samples; the
#             footprint circles' offset and the room they need; the lidar band's half-width and
#             the footprint's reach ahead of its middle (both with the clearance).
# model = (control_period, reaction_time, brake_decel, a_lat_max, wheelbase): the spec's.


@numba.njit(cache=True)
def _need_accept(v_hi: float, model: tuple) -> float:
    """Room a command at up to v_hi needs to be accepted: held one control period, then braking."""
    control_period, reaction_time, brake_decel, _, _ = model
    return v_hi * (control_period + reaction_time) + v_hi * v_hi / (2 * brake_decel)


@numba.njit(cache=True)
def _v_accept(free: float, model: tuple) -> float:
    """Largest v_hi with need_accept(v_hi) <= free."""
    control_period, reaction_time, b, _, _ = model
    t = control_period + reaction_time
    return max(0.0, b * (-t + math.sqrt(t * t + 2 * max(free, 0.0) / b)))


def _lateral_cap(steer: float, a_lat_max: float, wheelbase: float) -> float:
    """Speed at which the turn of `steer` reaches the lateral acceleration limit (inf when straight)."""
    tan = abs(math.tan(steer))
    if tan > 1e-6:
        return math.sqrt(a_lat_max * wheelbase / tan)
    return math.inf


# The same function compiled for the kernels; the filter calls the plain one (no dispatch).
_lateral_cap_jit = numba.njit(cache=True)(_lateral_cap)


@numba.njit(cache=True)
def _samples(horizon: float, total: int) -> int:
    """Number of arc samples that cover `horizon` metres (at most `total`, at least the car's own place)."""
    if not horizon < total * ARC_STEP:  # also NaN, inf: no int() of them
        return total
    return max(1, min(total, int(horizon / ARC_STEP) + 2))


@numba.njit(cache=True)
def _search(geometry: tuple, model: tuple, points: np.ndarray, x: float, y: float, yaw: float, v: float, speed: float,
            direction: float, zone_cap: float, steer: float, steer_lat: float, candidates: np.ndarray,
            last_steer: float, back_direction: float) -> tuple[int, float, float, float]:
    """The shield's search for a command `speed` on `steer` (within `steer_lat`), moving the car in
    `direction`, where the speed limit (not counting lateral acceleration) is `zone_cap`.

    (0, steer, allowed speed, clearance margin) when some command on its own steering is accepted;
    else (1, candidate, allowed speed, clearance margin) for the nearest accepted candidate (ties:
    the first listed); else (-1, backup steering, 0, free distance) for the backup: braking in
    `back_direction` along the arc with the most room, among the last steering (clipped to
    steer_lat), the command's, the candidates and +-steer_lat; the first of equals."""
    # One call site per kernel below, in loops: every call site of a kernel is compiled into its caller.
    order = _nearest_first(candidates, steer)
    for i in range(-1, candidates.shape[0]):  # -1: the command's own steering
        cand = steer if i < 0 else candidates[order[i]]
        if i < 0 or abs(cand) <= steer_lat:
            ok, allowed, margin = _accept(geometry, model, points, x, y, yaw, v, speed, direction, zone_cap, cand)
            if ok:
                return (0 if i < 0 else 1), cand, allowed, margin
    n = candidates.shape[0]
    best_steer, best_free = max(-steer_lat, min(steer_lat, last_steer)), -1.0
    last = best_steer
    for i in range(n + 4):  # the last steering (clipped), the command's, the candidates, +-steer_lat
        cand = last if i == 0 else steer if i == 1 else candidates[i - 2] if i < n + 2 else steer_lat if i == n + 2 \
            else -steer_lat
        if abs(cand) <= steer_lat:
            free = _free(geometry, points, x, y, yaw, cand, back_direction, geometry[4].shape[0])
            if free > best_free:
                best_steer, best_free = cand, free
    return -1, best_steer, 0.0, best_free


@numba.njit(cache=True)
def _nearest_first(values: np.ndarray, to: float) -> np.ndarray:
    """Indices of `values` by distance to `to`, ties in listed order (a stable insertion sort: a few values)."""
    n = values.shape[0]
    dist, order = np.empty(n), np.empty(n, dtype=np.int64)
    for i in range(n):
        dist[i], order[i] = abs(values[i] - to), i
    for i in range(1, n):
        k, j = order[i], i - 1
        while j >= 0 and dist[order[j]] > dist[k]:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = k
    return order


@numba.njit(cache=True)
def _accept(geometry: tuple, model: tuple, points: np.ndarray, x: float, y: float, yaw: float, v: float,
            speed: float, direction: float, zone_cap: float, steer: float) -> tuple[bool, float, float]:
    """(accepted, allowed speed, clearance margin) of the command on this steering."""
    _, _, _, a_lat_max, wheelbase = model
    cap = zone_cap
    v_lat = _lateral_cap_jit(steer, a_lat_max, wheelbase)
    if v_lat < cap:
        cap = v_lat
    want = min(abs(speed), cap)
    total = geometry[4].shape[0]
    rolling_back = abs(v) > EPS_V and math.copysign(1.0, v) != direction
    if rolling_back:
        # Still rolling the other way: that motion must be stoppable on this arc too.
        back = _need_accept(abs(v), model)
        if back > _free(geometry, points, x, y, yaw, steer, math.copysign(1.0, v), _samples(back, total)):
            return False, 0.0, 0.0
        horizon = _need_accept(want, model)
    else:
        # Checking up to what the wanted speed needs is enough: past it, more room changes nothing.
        horizon = _need_accept(max(abs(v), want), model)
    free = _free(geometry, points, x, y, yaw, steer, direction, _samples(horizon, total))
    v_ok = _v_accept(free, model)
    if rolling_back:
        return True, math.copysign(min(want, v_ok), speed), free - _need_accept(min(want, v_ok), model)
    if abs(v) > v_ok + 1e-9:
        return False, 0.0, 0.0
    allowed = min(want, v_ok)
    # The command keeps its own sign (a creep command below EPS_V may oppose the motion).
    return True, math.copysign(allowed, speed), free - _need_accept(max(abs(v), allowed), model)


@numba.njit(cache=True)
def _free(geometry: tuple, points: np.ndarray, x: float, y: float, yaw: float, steer: float, direction: float,
          n: int) -> float:
    """Free distance along the arc of `steer` in `direction`, checked over its first n samples:
    on the clearance map, then among the lidar returns (car frame; may be none)."""
    grid, x0, y0, resolution, sigma, offset, room_needed, wheelbase, band_width, lead, car_length = geometry
    kappa = math.tan(steer) / wheelbase
    free = _arc_free(grid, x0, y0, resolution, sigma, n, x, y, yaw, kappa, direction, offset, room_needed)
    # No room on the map: lidar returns cannot add any (their free distance is >= 0).
    if free > 0.0 and points.shape[0] > 0:
        horizon = sigma[n - 1]
        reach2 = (horizon + car_length) ** 2
        radius, width = 0.0, band_width  # nearly straight: the band of a straight line
        if abs(kappa) >= 1e-4:
            # The footprint's corners swing out of the band of its centre line on a turn.
            radius, width = 1.0 / abs(kappa), band_width + 0.5 * offset**2 * abs(kappa)
        free = min(free, _band_free(points, reach2, direction, kappa < 0, radius, width, lead, horizon))
    return free


@numba.njit(cache=True)
def _arc_free(grid: np.ndarray, x0: float, y0: float, resolution: float, sigma: np.ndarray, n: int, x: float, y: float,
              yaw: float, kappa: float, direction: float, offset: float, room_needed: np.float32) -> float:
    """Arc length of the last of the first n samples `sigma` (from 0, ARC_STEP apart) before the
    first whose two footprint circles (centres `offset` ahead of and behind the middle) have less
    than `room_needed` on the clearance grid (ClearanceMap's grid, x0, y0, resolution); 0 when the
    first sample has not, sigma[n - 1] when every sample has. Exact arc for |kappa| > 1e-6."""
    s0, c0 = math.sin(yaw), math.cos(yaw)
    curved = abs(kappa) > 1e-6
    for i in range(n):
        sig = direction * sigma[i]
        yaw_i = yaw + kappa * sig
        if curved:
            cx = x + (math.sin(yaw_i) - s0) / kappa
            cy = y - (math.cos(yaw_i) - c0) / kappa
        else:
            cx = x + sig * c0
            cy = y + sig * s0
        ox, oy = offset * math.cos(yaw_i), offset * math.sin(yaw_i)
        room = min(clearance_at(grid, x0, y0, resolution, cx + ox, cy + oy),
                   clearance_at(grid, x0, y0, resolution, cx - ox, cy - oy))
        if room < room_needed:
            return 0.0 if i == 0 else sigma[i - 1]
    return sigma[n - 1]


@numba.njit(cache=True)
def _band_free(points: np.ndarray, reach2: float, direction: float, flip: bool, radius: float, width: float,
               lead: float, horizon: float) -> float:
    """Free distance along an arc left by lidar returns (car frame, shape (n, 2)): the nearest
    return, by arc length, inside the band of half-width `width` around the arc, less `lead`
    (at least 0); `horizon` when there is none. Only returns closer than sqrt(reach2) count.
    radius 0: straight ahead (direction=+1) or back; else the arc's radius, turning right when
    `flip` (the points are mirrored left-right so the arc turns left)."""
    nearest = math.inf
    if radius == 0.0:
        for i in range(points.shape[0]):
            px, py = points[i, 0], points[i, 1]
            bx = direction * px
            if px * px + py * py < reach2 and abs(py) <= width and bx > 0:
                nearest = min(nearest, bx)
    else:
        # Cheap squared-distance test first, widened by 1e-7 relative (far beyond rounding), so
        # hypot and atan2 run only for returns near the band; the exact test decides.
        lo = (radius - width) - 1e-7 * (radius + width)
        lo2 = lo * lo if lo > 0 else -1.0
        hi = (radius + width) * (1 + 1e-7)
        hi2 = hi * hi
        for i in range(points.shape[0]):
            px, py = points[i, 0], points[i, 1]
            bx = direction * px  # mirrored for reverse: the arc is the same circle
            # Behind the car (bx < 0) atan2 is negative: never inside. Exact, and the cheapest test.
            if bx < 0 or not px * px + py * py < reach2:
                continue
            by = -py if flip else py
            dy = by - radius
            d2 = bx * bx + dy * dy
            if d2 < lo2 or d2 > hi2:
                continue
            if abs(math.hypot(bx, dy) - radius) <= width:
                phi = math.atan2(bx, radius - by)
                if phi > 0:
                    nearest = min(nearest, phi * radius)
    if nearest == math.inf:
        return horizon
    return max(0.0, nearest - lead)


def lidar_points(cos_a: np.ndarray, sin_a: np.ndarray, ranges: np.ndarray, max_range: float) -> np.ndarray:
    """Lidar returns in the car's frame from beam directions and ranges, without beams that hit nothing.

    Ranges may be float32 (as a scan comes) or float64: either is compared and scaled in float64,
    with no converted copy of the scan."""
    if not len(cos_a) == len(sin_a) == len(ranges):
        raise ValueError(f"lidar_points: {len(cos_a)} cosines, {len(sin_a)} sines and {len(ranges)} ranges; "
                         "pass one of each per beam")
    ranges = np.asarray(ranges)
    if ranges.dtype != np.float32:
        ranges = np.asarray(ranges, dtype=np.float64)
    return _scan_points(np.asarray(cos_a, dtype=np.float64), np.asarray(sin_a, dtype=np.float64), ranges,
                        max_range - 1e-3)


@numba.njit(cache=True)
def _scan_points(cos_a: np.ndarray, sin_a: np.ndarray, ranges: np.ndarray, below: float) -> np.ndarray:
    out = np.empty((ranges.shape[0], 2))
    hits = 0
    for i in range(ranges.shape[0]):
        r = np.float64(ranges[i])
        if r < below:
            out[hits, 0] = r * cos_a[i]
            out[hits, 1] = r * sin_a[i]
            hits += 1
    return out[:hits]


def model_step(spec: CarSafetySpec, st: CarShieldState, speed: float, steer: float) -> CarShieldState:
    """One control period of the shield's model under an executed command.

    Steering takes effect at once; speed jumps up to a faster command, and toward a slower
    one (or zero, when the command reverses direction) at no more than `brake_decel`.
    The car moves along the arc of `steer`. Used to test that the shield's invariant holds.
    """
    dt, b = spec.control_period, spec.brake_decel
    v = st.v
    same_dir = abs(v) <= EPS_V or math.copysign(1.0, speed) == math.copysign(1.0, v) or abs(speed) <= EPS_V
    if same_dir and abs(speed) >= abs(v):
        v_new = speed
        travel = abs(speed) * dt
        direction = math.copysign(1.0, speed if abs(speed) > EPS_V else (v if abs(v) > EPS_V else 1.0))
    else:
        floor = abs(speed) if same_dir else 0.0
        mag = max(floor, abs(v) - b * dt)
        direction = math.copysign(1.0, v)
        v_new = direction * mag
        travel = (abs(v) + mag) / 2 * dt
    kappa = math.tan(steer) / spec.wheelbase
    sig = direction * travel
    yaw = st.yaw + kappa * sig
    if abs(kappa) > 1e-9:
        x = st.x + (math.sin(yaw) - math.sin(st.yaw)) / kappa
        y = st.y - (math.cos(yaw) - math.cos(st.yaw)) / kappa
    else:
        x, y = st.x + sig * math.cos(st.yaw), st.y + sig * math.sin(st.yaw)
    return dataclasses.replace(st, x=x, y=y, yaw=yaw, v=v_new, steer=steer, lidar_points=None)
