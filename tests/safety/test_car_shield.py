"""The car shield's guarantee, as property tests under its model, and a reckless-driver campaign."""

import dataclasses
import functools
import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from matplotlib.path import Path as PolyPath
from scipy.spatial import cKDTree

from safety.car.clearance import clearance_map
from safety.car.shield import CarShield, CarShieldState, lidar_points, model_step
from safety.car.spec import CarSafetySpec, SpeedZone
from safety.verdict import Verdict
from twin.car.actuation import Command
from twin.car.tracks import load_track
from twin.core.config import ConfigError

SPEC = CarSafetySpec(zones=(SpeedZone(10.0, 18.0, 1.5),))
TRACKS = ("oval", "chicane")


@functools.cache
def shield_for(track: str) -> CarShield:
    return CarShield(SPEC, clearance_map(track))


@functools.cache
def truth(track: str):
    """Exact geometry, independent of the shield's grid: wall points every 5 mm and the track polygon."""
    t = load_track(track)
    left, right = t.boundaries()
    pts = []
    for b in (left, right):
        closed = np.vstack([b, b[:1]])
        for a, c in zip(closed[:-1], closed[1:]):
            n = max(1, int(np.linalg.norm(c - a) / 0.005))
            pts.append(a + (c - a) * (np.arange(n)[:, None] / n))
    return cKDTree(np.concatenate(pts)), PolyPath(left), PolyPath(right)


def true_free(track: str, s: CarShieldState, steer: float, direction: float, limit: float) -> float:
    """Free arc length by fine sampling (5 mm) of the exact clearance of both footprint circles."""
    sh = shield_for(track)
    tree, outer, inner = truth(track)
    kappa = math.tan(steer) / SPEC.wheelbase
    sig = direction * np.arange(0.0, limit + 0.01, 0.005)
    yaw = s.yaw + kappa * sig
    if abs(kappa) > 1e-9:
        cx = s.x + (np.sin(yaw) - math.sin(s.yaw)) / kappa
        cy = s.y - (np.cos(yaw) - math.cos(s.yaw)) / kappa
    else:
        cx, cy = s.x + sig * math.cos(s.yaw), s.y + sig * math.sin(s.yaw)
    ok = np.ones(len(sig), bool)
    for sign in (1, -1):
        px, py = cx + sign * sh.offset * np.cos(yaw), cy + sign * sh.offset * np.sin(yaw)
        p = np.stack([px, py], 1)
        dist, _ = tree.query(p)
        inside = outer.contains_points(p) ^ inner.contains_points(p)
        ok &= inside & (dist >= sh.radius + SPEC.clearance)
    bad = np.flatnonzero(~ok)
    return float(abs(sig[-1])) if len(bad) == 0 else float(abs(sig[max(bad[0] - 1, 0)])) if bad[0] else 0.0


def state_on(track: str, frac: float, d: float, alpha: float, v: float, steer: float) -> CarShieldState:
    t = load_track(track)
    s = frac * t.length
    x, y = t.to_cartesian(s, d)
    return CarShieldState(float(x), float(y), float(t.heading[t.index(s)]) + alpha, v, steer, s)


finite_or_not = st.one_of(st.floats(-30, 30), st.sampled_from([math.nan, math.inf, -math.inf, 1e300]))


@settings(max_examples=150, deadline=None)
@example(track="chicane", frac=0.0, d=0.5625, alpha=0.0, v=0.0, steer=0.0, cmd_v=2.2250738585e-313, cmd_steer=0.0)
@given(track=st.sampled_from(TRACKS), frac=st.floats(0, 0.999), d=st.floats(-0.6, 0.6), alpha=st.floats(-0.6, 0.6),
       v=st.floats(-2.0, 5.5), steer=st.floats(-0.41, 0.41), cmd_v=finite_or_not, cmd_steer=finite_or_not)
def test_shielded_commands_satisfy_every_constraint_and_keep_the_car_recoverable(
        track, frac, d, alpha, v, steer, cmd_v, cmd_steer):
    sh = shield_for(track)
    sh.reset(steer)
    st0 = state_on(track, frac, d, alpha, v, steer)
    verdict = sh.filter(st0, Command(cmd_v, cmd_steer))
    speed, out_steer = verdict.executed["speed"], verdict.executed["steer"]
    # Hard limits on the executed command, whatever was proposed.
    assert math.isfinite(speed) and math.isfinite(out_steer)
    assert abs(out_steer) <= SPEC.steer_max + 1e-12
    limit = SPEC.v_reverse_max if speed < 0 else SPEC.speed_limit(st0.s, sh.track_length)
    assert abs(speed) <= limit + 1e-9
    assert speed * speed * abs(math.tan(out_steer)) / SPEC.wheelbase <= SPEC.a_lat_max + 1e-9
    assert abs(out_steer) <= sh.steer_limit(v) + 1e-12
    if verdict.kind == "passed":
        assert (speed, out_steer) == (cmd_v, cmd_steer)
    else:
        assert verdict.reasons
    # The invariant: unless the shield says the state was already lost, after one step of its
    # model the car can still brake to a stop before touching anything, by the exact geometry.
    assume(not any("not recoverable" in r for r in verdict.reasons))
    st1 = model_step(SPEC, st0, speed, out_steer)
    need = abs(st1.v) * SPEC.reaction_time + st1.v ** 2 / (2 * SPEC.brake_decel)
    direction = math.copysign(1.0, st1.v) if abs(st1.v) > 1e-9 else 1.0
    assert need <= true_free(track, st1, out_steer, direction, need + 0.05) + 0.006


@settings(max_examples=80, deadline=None)
@given(frac=st.floats(0, 0.999), v=st.floats(0.0, 4.0), cmd_v=st.floats(0, 6), cmd_steer=st.floats(-0.5, 0.5),
       points=st.lists(st.tuples(st.floats(-3, 8), st.floats(-3, 3)), max_size=40))
def test_lidar_returns_only_ever_tighten_the_command(frac, v, cmd_v, cmd_steer, points):
    sh = shield_for("oval")
    base = state_on("oval", frac, 0.0, 0.0, v, 0.0)
    with_lidar = CarShieldState(base.x, base.y, base.yaw, v, 0.0, base.s,
                                np.array(points, float).reshape(-1, 2))
    a = sh.filter(base, Command(cmd_v, cmd_steer)).executed
    b = sh.filter(with_lidar, Command(cmd_v, cmd_steer)).executed
    assert math.isfinite(b["speed"])
    if b["steer"] == a["steer"]:
        assert abs(b["speed"]) <= abs(a["speed"]) + 1e-9


def test_box_seen_by_lidar_straight_ahead_stops_the_car():
    sh = shield_for("oval")
    base = state_on("oval", 0.0, 0.0, 0.0, 3.0, 0.0)
    wall_ahead = np.array([[1.2, y] for y in np.linspace(-0.3, 0.3, 13)])
    st1 = CarShieldState(base.x, base.y, base.yaw, 3.0, 0.0, base.s, wall_ahead)
    free = sh.free_distance(st1, 0.0, 1.0)
    assert free == pytest.approx(1.2 - SPEC.car_length / 2 - SPEC.clearance, abs=1e-6)
    verdict = sh.filter(st1, Command(3.0, 0.0))
    assert verdict.kind == "backup" or verdict.executed["speed"] < 1.0


def test_speed_zone_is_enforced_and_approached_in_time():
    sh = shield_for("oval")
    inside = state_on("oval", 12.0 / load_track("oval").length, 0.0, 0.0, 1.0, 0.0)
    v = sh.filter(inside, Command(4.0, 0.0))
    assert v.executed["speed"] == pytest.approx(1.5) and "speed: zone limit" in v.reasons
    before = state_on("oval", 8.0 / load_track("oval").length, 0.0, 0.0, 2.0, 0.0)
    v = sh.filter(before, Command(4.0, 0.0))
    assert 1.5 <= v.executed["speed"] < 4.0 and "speed: zone ahead" in v.reasons


def test_safe_command_passes_unchanged():
    sh = shield_for("oval")
    st0 = state_on("oval", 0.02, 0.0, 0.0, 1.0, 0.0)
    verdict = sh.filter(st0, Command(1.2, 0.0))
    assert verdict.kind == "passed" and verdict.executed == {"speed": 1.2, "steer": 0.0}
    assert verdict.margins["clearance"] > 0


def test_malformed_specs_name_the_field():
    with pytest.raises(ConfigError, match="brake_decl"):
        CarSafetySpec.from_dict({"brake_decl": 3.0})
    with pytest.raises(ConfigError, match="a_lat_max"):
        CarSafetySpec.from_dict({"a_lat_max": "fast"})
    with pytest.raises(ConfigError, match="a_lat_max"):
        CarSafetySpec.from_dict({"a_lat_max": -1.0})
    with pytest.raises(ConfigError, match="zones"):
        CarSafetySpec.from_dict({"zones": [{"s_start": 1.0}]})
    with pytest.raises(ConfigError, match="v_max"):
        CarSafetySpec.from_dict({"zones": [{"s_start": 1.0, "s_end": 2.0, "v_max": math.nan}]})
    spec = CarSafetySpec.from_dict({"v_max": 3.0, "zones": [{"s_start": 1.0, "s_end": 2.0, "v_max": 1.0}]})
    assert spec.speed_limit(1.5, 50.0) == 1.0 and spec.speed_limit(3.0, 50.0) == 3.0


# -- the kernels against a straightforward reference -------------------------------------
# The shield's arc checks and its search run as numba kernels. Below is the same model written
# plainly with numpy, as the shield was before the kernels: every verdict must be the same, to
# the last bit (same samples, same cell lookups, same float32 comparison with the map).

def ref_lookup(m, x, y):
    ix = np.clip(((x - m.origin[0]) / m.resolution).astype(np.int64), 0, m.grid.shape[1] - 1)
    iy = np.clip(((y - m.origin[1]) / m.resolution).astype(np.int64), 0, m.grid.shape[0] - 1)
    return m.grid[iy, ix]


def ref_free_distance(sh, s, steer, direction, horizon=None):
    kappa = math.tan(steer) / sh.spec.wheelbase
    n = len(sh.sigma) if horizon is None else min(len(sh.sigma), int(horizon / 0.05) + 2)
    sigma = sh.sigma[:n]
    sig = direction * sigma
    yaw_i = s.yaw + kappa * sig
    if abs(kappa) > 1e-6:
        cx = s.x + (np.sin(yaw_i) - math.sin(s.yaw)) / kappa
        cy = s.y - (np.cos(yaw_i) - math.cos(s.yaw)) / kappa
    else:
        cx, cy = s.x + sig * math.cos(s.yaw), s.y + sig * math.sin(s.yaw)
    ox, oy = sh.offset * np.cos(yaw_i), sh.offset * np.sin(yaw_i)
    room = np.minimum(ref_lookup(sh.map, cx + ox, cy + oy), ref_lookup(sh.map, cx - ox, cy - oy))
    bad = np.flatnonzero(room < sh.radius + sh.spec.clearance + 0.75 * 0.05)
    free = float(sigma[-1]) if len(bad) == 0 else (0.0 if bad[0] == 0 else float(sigma[bad[0] - 1]))
    if s.lidar_points is not None and len(s.lidar_points):
        free = min(free, ref_lidar_free(sh, s, kappa, direction, float(sigma[-1])))
    return free


def ref_lidar_free(sh, s, kappa, direction, horizon):
    px, py = s.lidar_points[:, 0], s.lidar_points[:, 1]
    near = px * px + py * py < (horizon + sh.spec.car_length) ** 2
    bx, by = direction * px[near], py[near]
    width = sh.spec.car_width / 2 + sh.spec.clearance
    lead = sh.spec.car_length / 2 + sh.spec.clearance
    if abs(kappa) < 1e-4:
        inside, along = (np.abs(by) <= width) & (bx > 0), bx
    else:
        if kappa < 0:
            by, kappa = -by, -kappa
        r = 1.0 / kappa
        width += 0.5 * sh.offset**2 * kappa
        phi = np.arctan2(bx, r - by)
        inside, along = (np.abs(np.hypot(bx, by - r) - r) <= width) & (phi > 0), phi * r
    return max(0.0, float(along[inside].min()) - lead) if inside.any() else horizon


def ref_need_accept(sh, v_hi):
    sp = sh.spec
    return v_hi * (sp.control_period + sp.reaction_time) + v_hi * v_hi / (2 * sp.brake_decel)


def ref_v_accept(sh, free):
    sp = sh.spec
    t = sp.control_period + sp.reaction_time
    return max(0.0, sp.brake_decel * (-t + math.sqrt(t * t + 2 * max(free, 0.0) / sp.brake_decel)))


def ref_speed_cap(sh, s, steer, direction):
    sp = sh.spec
    if direction < 0:
        cap, why = sp.v_reverse_max, "speed: reverse limit"
    else:
        cap, why = sp.speed_limit(s.s, sh.track_length), "speed: zone limit"
        for z in sp.zones:
            to_zone = (z.s_start - s.s) % sh.track_length
            if z.v_max < cap and 0 < to_zone < sp.lookahead:
                ahead = max(0.0, to_zone - z.v_max * sp.reaction_time)
                t = sp.control_period + sp.reaction_time
                b = sp.brake_decel
                v_ok = b * (-t + math.sqrt(t * t + (2 * ahead + z.v_max**2 / b) / b))
                if v_ok < cap:
                    cap, why = max(z.v_max, v_ok), "speed: zone ahead"
    tan = abs(math.tan(steer))
    if tan > 1e-6 and math.sqrt(sh.spec.a_lat_max * sh.spec.wheelbase / tan) < cap:
        cap, why = math.sqrt(sh.spec.a_lat_max * sh.spec.wheelbase / tan), "lateral acceleration"
    return cap, why


def ref_try(sh, s, speed, steer):
    eps = 0.02
    direction = math.copysign(1.0, speed) if abs(speed) > eps else (math.copysign(1.0, s.v) if abs(s.v) > eps else 1.0)
    want = min(abs(speed), ref_speed_cap(sh, s, steer, direction)[0])
    if abs(s.v) > eps and math.copysign(1.0, s.v) != direction:
        back = ref_need_accept(sh, abs(s.v))
        if back > ref_free_distance(sh, s, steer, math.copysign(1.0, s.v), back):
            return None
        free = ref_free_distance(sh, s, steer, direction, ref_need_accept(sh, want))
        v_ok = ref_v_accept(sh, free)
        return math.copysign(min(want, v_ok), speed), free - ref_need_accept(sh, min(want, v_ok))
    free = ref_free_distance(sh, s, steer, direction, ref_need_accept(sh, max(abs(s.v), want)))
    v_ok = ref_v_accept(sh, free)
    if abs(s.v) > v_ok + 1e-9:
        return None
    allowed = min(want, v_ok)
    return math.copysign(allowed, speed), free - ref_need_accept(sh, max(abs(s.v), allowed))


def ref_verdict(sh, s, kind, proposed, speed, steer, reasons, clearance_margin):
    sp = sh.spec
    limit = sp.v_reverse_max if speed < 0 else sp.speed_limit(s.s, sh.track_length)
    a_lat = speed * speed * abs(math.tan(steer)) / sp.wheelbase
    margins = {"clearance": clearance_margin, "speed": limit - abs(speed), "lateral_accel": sp.a_lat_max - a_lat}
    return Verdict(kind, proposed, {"speed": float(speed), "steer": float(steer)}, tuple(reasons), margins)


def ref_filter(sh, s, command):
    """The verdict and the steering the shield remembers, by the reference."""
    sp = sh.spec
    reasons = []
    speed, steer = command.speed, command.steer
    if not (math.isfinite(speed) and math.isfinite(steer)):
        reasons.append("invalid command: not finite")
        speed, steer = 0.0, s.steer if math.isfinite(s.steer) else 0.0
    if abs(steer) > sp.steer_max:
        reasons.append("steering limit")
        steer = math.copysign(sp.steer_max, steer)
    steer_lat = sh.steer_limit(s.v)
    if abs(steer) > steer_lat:
        reasons.append("lateral acceleration: steering")
        steer = math.copysign(steer_lat, steer)
    cap, cap_reason = ref_speed_cap(sh, s, steer, math.copysign(1.0, speed) if abs(speed) > 0.02 else 1.0)
    if abs(speed) > cap:
        reasons.append(cap_reason)
    proposed = {"speed": command.speed, "steer": command.steer}
    candidates = tuple(float(c) for c in np.linspace(-sp.steer_max, sp.steer_max, 9))
    ok = ref_try(sh, s, speed, steer)
    if ok is not None:
        if abs(ok[0]) < min(abs(speed), cap):
            reasons.append("stopping distance")
        return ref_verdict(sh, s, "modified" if reasons else "passed", proposed, ok[0], steer, reasons, ok[1]), steer
    for cand in sorted(candidates, key=lambda c: abs(c - steer)):
        if abs(cand) <= steer_lat and (ok := ref_try(sh, s, speed, cand)) is not None:
            reasons.append(f"stopping distance: steering {steer:+.3f} -> {cand:+.3f}")
            return ref_verdict(sh, s, "modified", proposed, ok[0], cand, reasons, ok[1]), cand
    direction = math.copysign(1.0, s.v) if abs(s.v) > 0.02 else 1.0
    best_steer, best_free = max(-steer_lat, min(steer_lat, sh.last_steer)), -1.0
    for cand in (best_steer, steer, *candidates, steer_lat, -steer_lat):
        if abs(cand) <= steer_lat and (free := ref_free_distance(sh, s, cand, direction)) > best_free:
            best_steer, best_free = cand, free
    need = abs(s.v) * sp.reaction_time + s.v * s.v / (2 * sp.brake_decel)
    reasons.append("backup: emergency brake" + ("" if need <= best_free else " (not recoverable in the model)"))
    return ref_verdict(sh, s, "backup", proposed, 0.0, best_steer, reasons, best_free - need), best_steer


# Steering near the kernels' thresholds too: straight lines (|kappa| <= 1e-6) and the lidar's (1e-4).
steers = st.one_of(st.floats(-0.42, 0.42), st.floats(-4e-5, 4e-5), st.sampled_from([0.0, 3.3e-7, -3.3e-5]))
speeds = st.one_of(st.floats(-2.5, 5.5), st.floats(-0.03, 0.03))
# Returns all around the car, many inside the swept bands of short arcs.
returns = st.one_of(st.none(), st.lists(st.tuples(st.floats(0.4, 7.0), st.floats(-math.pi, math.pi)), max_size=60))


def with_returns(s: CarShieldState, polar) -> CarShieldState:
    if polar is None:
        return s
    pts = np.array([(r * math.cos(a), r * math.sin(a)) for r, a in polar], float).reshape(-1, 2)
    return CarShieldState(s.x, s.y, s.yaw, s.v, s.steer, s.s, pts)


@settings(max_examples=200, deadline=None)
@given(track=st.sampled_from(TRACKS), frac=st.floats(0, 0.999), d=st.floats(-0.8, 0.8), alpha=st.floats(-1.0, 1.0),
       steer=steers, direction=st.sampled_from([1.0, -1.0]), horizon=st.one_of(st.none(), st.floats(0.0, 7.0)),
       polar=returns)
@example(track="oval", frac=0.0, d=0.0, alpha=0.0, steer=-0.13416293376491106, direction=1.0, horizon=None,
         polar=[(0.785, -0.08450581924459666)])
def test_free_distance_is_the_reference_one(track, frac, d, alpha, steer, direction, horizon, polar):
    sh = shield_for(track)
    s = with_returns(state_on(track, frac, d, alpha, 0.0, 0.0), polar)
    # equal up to the rounding of arithmetic done in another order (that example differed in the last bit)
    assert sh.free_distance(s, steer, direction, horizon) == pytest.approx(
        ref_free_distance(sh, s, steer, direction, horizon), rel=1e-12, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(track=st.sampled_from(TRACKS), frac=st.floats(0, 0.999), d=st.floats(-0.7, 0.7), alpha=st.floats(-1.2, 1.2),
       v=speeds, steer=steers, last=steers, cmd_v=st.one_of(speeds, finite_or_not), cmd_steer=steers, polar=returns)
@example(track="oval", frac=0.0, d=0.0, alpha=0.0, v=0.0, steer=0.0, last=0.0, cmd_v=0.0, cmd_steer=0.3125,
         polar=[(0.4, 0.0)])
def test_filter_decides_as_the_reference(track, frac, d, alpha, v, steer, last, cmd_v, cmd_steer, polar):
    sh = shield_for(track)
    s = with_returns(state_on(track, frac, d, alpha, v, steer), polar)
    sh.reset(last)
    want, want_steer = ref_filter(sh, s, Command(cmd_v, cmd_steer))
    sh.reset(last)
    got = sh.filter(s, Command(cmd_v, cmd_steer))
    # The decision exactly; its margins up to the rounding of arithmetic done in another order (that example's
    # clearance differed in the last bits).
    assert dataclasses.replace(got, margins={}) == dataclasses.replace(want, margins={})
    assert got.margins.keys() == want.margins.keys()
    assert all(got.margins[k] == pytest.approx(want.margins[k], rel=1e-12, abs=1e-12) for k in want.margins)
    assert sh.last_steer == want_steer


def test_clearance_lookup_is_the_reference_cell_and_blocked_off_the_grid():
    m = clearance_map("chicane")
    rng = np.random.default_rng(3)
    lo, hi = m.origin - 2.0, m.origin + np.array(m.grid.shape[::-1]) * m.resolution + 2.0
    x, y = rng.uniform(lo[0], hi[0], 20_000), rng.uniform(lo[1], hi[1], 20_000)
    assert np.array_equal(m.lookup(x, y), ref_lookup(m, x, y))
    assert m.lookup(np.array([[lo[0], 1e300]]), np.array([[0.0, 0.0]])).tolist() == [[-1.0, -1.0]]
    assert m.lookup(np.array([math.nan]), np.array([0.0]))[0] == -1.0


def test_lidar_points_keep_the_hits_in_beam_order():
    a = np.linspace(-1.0, 1.0, 5)
    ranges = np.array([1.0, 30.0, 2.0, 29.9995, 3.0])
    pts = lidar_points(np.cos(a), np.sin(a), ranges, 30.0)
    hit = np.array([0, 2, 4])
    assert np.array_equal(pts, np.stack([ranges[hit] * np.cos(a[hit]), ranges[hit] * np.sin(a[hit])], axis=1))
    # A scan comes as float32: the same points as from its float64 copy (compared and scaled in float64).
    r32 = np.array([1.1, 29.999, 29.9991, 7.3, 0.2], np.float32)
    assert np.array_equal(lidar_points(np.cos(a), np.sin(a), r32, 30.0),
                          lidar_points(np.cos(a), np.sin(a), r32.astype(np.float64), 30.0))
    with pytest.raises(ValueError, match="one of each per beam"):
        lidar_points(np.cos(a), np.sin(a), ranges[:3], 30.0)


def test_a_speed_that_is_not_a_number_is_refused():
    s = state_on("oval", 0.1, 0.0, 0.0, math.nan, 0.0)
    with pytest.raises(ValueError, match="finite"):
        shield_for("oval").filter(s, Command(1.0, 0.0))
