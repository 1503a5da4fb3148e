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
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from safety.car.clearance import ClearanceMap
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
        candidates = np.linspace(-spec.steer_max, spec.steer_max, 9)
        self._candidates = tuple(float(c) for c in candidates)

    def reset(self, steer: float = 0.0) -> None:
        self.last_steer = steer

    # -- geometry ------------------------------------------------------------------------
    def free_distance(self, st: CarShieldState, steer: float, direction: float, horizon: float | None = None) -> float:
        """Distance the car can travel along the arc of `steer` (forward: direction=+1) before
        its footprint comes within the clearance of a wall, obstacle or lidar return.

        Only the first `horizon` metres are checked (default: the spec's lookahead); a
        caller that needs no more than that saves the rest of the work."""
        kappa = math.tan(steer) / self.spec.wheelbase
        n = len(self.sigma) if horizon is None else min(len(self.sigma), int(horizon / ARC_STEP) + 2)
        sigma = self.sigma[:n]
        sig = direction * sigma
        yaw_i = st.yaw + kappa * sig
        if abs(kappa) > 1e-6:  # exact arc
            cx = st.x + (np.sin(yaw_i) - math.sin(st.yaw)) / kappa
            cy = st.y - (np.cos(yaw_i) - math.cos(st.yaw)) / kappa
        else:
            cx = st.x + sig * math.cos(st.yaw)
            cy = st.y + sig * math.sin(st.yaw)
        ox, oy = self.offset * np.cos(yaw_i), self.offset * np.sin(yaw_i)
        both = self.map.lookup(np.concatenate([cx + ox, cx - ox]), np.concatenate([cy + oy, cy - oy]))
        room = np.minimum(both[:n], both[n:])
        # Between two samples a circle centre moves up to ~1.4 ARC_STEP; the clearance field is
        # 1-Lipschitz, so 0.75 ARC_STEP more at the samples bounds the dip in between.
        bad = np.flatnonzero(room < self.radius + self.spec.clearance + 0.75 * ARC_STEP)
        free = float(sigma[-1]) if len(bad) == 0 else (0.0 if bad[0] == 0 else float(sigma[bad[0] - 1]))
        if st.lidar_points is not None and len(st.lidar_points):
            free = min(free, self._lidar_free(st, kappa, direction, float(sigma[-1])))
        return free

    def _lidar_free(self, st: CarShieldState, kappa: float, direction: float, horizon: float) -> float:
        px, py = st.lidar_points[:, 0], st.lidar_points[:, 1]
        near = px * px + py * py < (horizon + self.spec.car_length) ** 2
        if not near.any():
            return horizon
        bx = direction * px[near]  # mirrored for reverse: the arc is the same circle
        by = py[near]
        width = self.spec.car_width / 2 + self.spec.clearance
        lead = self.spec.car_length / 2 + self.spec.clearance
        if abs(kappa) < 1e-4:
            inside = (np.abs(by) <= width) & (bx > 0)
            along = bx
        else:
            if kappa < 0:
                by, kappa = -by, -kappa
            r = 1.0 / kappa
            rho = np.hypot(bx, by - r)
            width += 0.5 * self.offset**2 * kappa
            phi = np.arctan2(bx, r - by)
            inside = (np.abs(rho - r) <= width) & (phi > 0)
            along = phi * r
        if not inside.any():
            return horizon
        return max(0.0, float(along[inside].min()) - lead)

    # -- the model's conditions ----------------------------------------------------------
    def _need_accept(self, v_hi: float) -> float:
        sp = self.spec
        return v_hi * (sp.control_period + sp.reaction_time) + v_hi * v_hi / (2 * sp.brake_decel)

    def _need_brake(self, v: float) -> float:
        return abs(v) * self.spec.reaction_time + v * v / (2 * self.spec.brake_decel)

    def _v_accept(self, free: float) -> float:
        """Largest v_hi with need_accept(v_hi) <= free."""
        sp = self.spec
        t = sp.control_period + sp.reaction_time
        b = sp.brake_decel
        return max(0.0, b * (-t + math.sqrt(t * t + 2 * max(free, 0.0) / b)))

    def _speed_cap(self, st: CarShieldState, steer: float, direction: float) -> tuple[float, str]:
        """Speed limit for a command from zones, lateral acceleration and zones ahead."""
        sp = self.spec
        if direction < 0:
            cap, why = sp.v_reverse_max, "speed: reverse limit"
        else:
            cap, why = sp.speed_limit(st.s, self.track_length), "speed: zone limit"
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
        tan = abs(math.tan(steer))
        if tan > 1e-6:
            v_lat = math.sqrt(sp.a_lat_max * sp.wheelbase / tan)
            if v_lat < cap:
                cap, why = v_lat, "lateral acceleration"
        return cap, why

    def steer_limit(self, v: float) -> float:
        """Largest steering angle whose turn at speed v stays within the lateral acceleration limit."""
        sp = self.spec
        if abs(v) < 1e-3:
            return sp.steer_max
        return min(sp.steer_max, math.atan(sp.a_lat_max * sp.wheelbase / (v * v)))

    def _try(self, st: CarShieldState, speed: float, steer: float) -> tuple[float, float] | None:
        """(allowed speed, clearance margin) if some command on this steering is accepted, else None."""
        direction = math.copysign(1.0, speed) if abs(speed) > EPS_V else (math.copysign(1.0, st.v) if abs(st.v) > EPS_V else 1.0)
        cap, _ = self._speed_cap(st, steer, direction)
        want = min(abs(speed), cap)
        if abs(st.v) > EPS_V and math.copysign(1.0, st.v) != direction:
            # Still rolling the other way: that motion must be stoppable on this arc too.
            back = self._need_accept(abs(st.v))
            if back > self.free_distance(st, steer, math.copysign(1.0, st.v), back):
                return None
            free = self.free_distance(st, steer, direction, self._need_accept(want))
            v_ok = self._v_accept(free)
            return math.copysign(min(want, v_ok), speed), free - self._need_accept(min(want, v_ok))
        # Checking up to what the wanted speed needs is enough: past it, more room changes nothing.
        free = self.free_distance(st, steer, direction, self._need_accept(max(abs(st.v), want)))
        v_ok = self._v_accept(free)
        if abs(st.v) > v_ok + 1e-9:
            return None
        allowed = min(want, v_ok)
        # The command keeps its own sign (a creep command below EPS_V may oppose the motion).
        return math.copysign(allowed, speed), free - self._need_accept(max(abs(st.v), allowed))

    # -- the filter ------------------------------------------------------------------------
    def filter(self, st: CarShieldState, command: Command) -> Verdict:
        """The command to execute instead of `command`, with the reasons for any change."""
        sp = self.spec
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

        direction = math.copysign(1.0, speed) if abs(speed) > EPS_V else 1.0
        cap, cap_reason = self._speed_cap(st, steer, direction)
        if abs(speed) > cap:
            reasons.append(cap_reason)

        ok = self._try(st, speed, steer)
        if ok is not None:
            allowed, margin = ok
            if abs(allowed) < min(abs(speed), cap):  # exact: any change is reported, however small
                reasons.append("stopping distance")
            self.last_steer = steer
            return self._verdict(PASSED if not reasons else MODIFIED, proposed, allowed, steer, reasons, margin, st)

        # Nearest other steering angle that is accepted.
        for cand in sorted(self._candidates, key=lambda c: abs(c - steer)):
            if abs(cand) > steer_lat:
                continue
            ok = self._try(st, speed, cand)
            if ok is not None:
                allowed, margin = ok
                reasons.append(f"stopping distance: steering {steer:+.3f} -> {cand:+.3f}")
                self.last_steer = cand
                return self._verdict(MODIFIED, proposed, allowed, cand, reasons, margin, st)

        # Backup controller: brake hard along the recoverable arc with the most room.
        direction = math.copysign(1.0, st.v) if abs(st.v) > EPS_V else 1.0
        best_steer, best_free = max(-steer_lat, min(steer_lat, self.last_steer)), -1.0
        for cand in (best_steer, steer, *self._candidates, steer_lat, -steer_lat):
            if abs(cand) > steer_lat:
                continue
            free = self.free_distance(st, cand, direction)
            if free > best_free:
                best_steer, best_free = cand, free
        recoverable = self._need_brake(st.v) <= best_free
        reasons.append("backup: emergency brake" + ("" if recoverable else " (not recoverable in the model)"))
        self.last_steer = best_steer
        return self._verdict(BACKUP, proposed, 0.0, best_steer, reasons, best_free - self._need_brake(st.v), st)

    def _verdict(self, kind: str, proposed: dict, speed: float, steer: float, reasons: list[str],
                 clearance_margin: float, st: CarShieldState) -> Verdict:
        sp = self.spec
        limit = sp.v_reverse_max if speed < 0 else sp.speed_limit(st.s, self.track_length)
        a_lat = speed * speed * abs(math.tan(steer)) / sp.wheelbase
        margins = {"clearance": clearance_margin, "speed": limit - abs(speed), "lateral_accel": sp.a_lat_max - a_lat}
        return Verdict(kind, proposed, {"speed": float(speed), "steer": float(steer)}, tuple(reasons), margins)


def lidar_points(cos_a: np.ndarray, sin_a: np.ndarray, ranges: np.ndarray, max_range: float) -> np.ndarray:
    """Lidar returns in the car's frame from beam directions and ranges, without beams that hit nothing."""
    hit = ranges < max_range - 1e-3
    r = ranges[hit]
    return np.stack([r * cos_a[hit], r * sin_a[hit]], axis=1)


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
