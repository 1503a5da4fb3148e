"""The car shield's guarantee, as property tests under its model, and a reckless-driver campaign."""

import functools
import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from matplotlib.path import Path as PolyPath
from scipy.spatial import cKDTree

from safety.car.clearance import clearance_map
from safety.car.shield import CarShield, CarShieldState, model_step
from safety.car.spec import CarSafetySpec, SpeedZone
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
