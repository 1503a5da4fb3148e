"""The Frenet MPC and its parameter table."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.control.loop import drive
from agents.control.mpc import FrenetMPC, MPCConfig
from agents.control.mpc_params import DEFAULT, NAMES, PARAM_TABLE, MPCParams, clamp_dict, table_text
from twin.car.tracks import NAMED_TRACKS
from twin.car.twin import CarTwin, CarTwinConfig
from twin.core.config import ConfigError


@pytest.mark.parametrize("track", NAMED_TRACKS + ("procedural-5",))
def test_default_parameters_drive_every_track_without_a_crash(track):
    twin = CarTwin(CarTwinConfig(track=track, control_hz=20, lidar=False))
    mpc = FrenetMPC(twin.track)
    twin.reset(np.random.default_rng(0))
    trace = drive(twin, mpc, DEFAULT, 15.0)
    twin.close()
    assert not trace.crashed
    assert trace.mpc_fallbacks == 0
    assert trace["progress"][-1] > 35  # well past a standing start: it is racing
    assert np.max(np.abs(trace["d"])) < twin.track.half_width - 0.15


def test_mpc_tracks_a_commanded_speed_and_reverses():
    twin = CarTwin(CarTwinConfig(track="oval", control_hz=20, lidar=False))
    mpc = FrenetMPC(twin.track)
    for v in (1.5, -1.0):
        twin.reset(np.random.default_rng(0))
        trace = drive(twin, mpc, MPCParams(qv=60, v_min=v - 0.01, v_max=v + 0.01), 6.0)
        assert not trace.crashed
        assert abs(np.mean(trace["v"][-40:]) - v) < 0.05
    twin.close()


def test_plan_respects_input_and_steering_bounds():
    twin = CarTwin(CarTwinConfig(track="chicane", control_hz=20, lidar=False))
    cfg = MPCConfig()
    mpc = FrenetMPC(twin.track, cfg)
    twin.reset(np.random.default_rng(0))
    for _ in range(60):
        st = twin.state
        out = mpc.control(np.array([st.s, st.d, st.alpha, st.v, st.steer]))
        assert out.status == "solved"
        assert np.all(np.abs(out.plan[:, 4]) <= cfg.steer_max + 1e-3)
        assert np.all(np.abs(np.diff(out.plan[:, 4])) <= cfg.steer_rate_max * cfg.dt + 1e-3)
        from twin.car.actuation import Command
        twin.step(Command(out.speed, out.steer))
    twin.close()


def test_eleven_parameters_with_ranges_containing_defaults():
    assert len(PARAM_TABLE) == 11
    for p in PARAM_TABLE:
        assert p.low <= p.default <= p.high
    assert "track_safety_margin" in table_text()


def test_strict_parsing_names_the_bad_field():
    with pytest.raises(ConfigError, match="qv"):
        MPCParams(qv=500.0)
    with pytest.raises(ConfigError, match="turbo"):
        MPCParams.from_dict({"turbo": 1.0})
    with pytest.raises(ConfigError, match="v_min"):
        MPCParams(v_min=3.0, v_max=2.0)
    assert MPCParams.from_dict({"qv": 5}).qv == 5.0


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(NAMES + ("junk", "Qv")),
                       st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                                 st.none(), st.integers())))
def test_lenient_clamp_always_gives_valid_params_and_reports_changes(values):
    params, notes = clamp_dict(values)
    assert isinstance(params, MPCParams)  # construction validated every range
    for key, raw in values.items():
        if key not in NAMES:
            assert key in notes
        elif isinstance(raw, (int, float)) and raw == raw and getattr(params, key) != float(raw):
            assert key in notes or "v_min/v_max" in notes
