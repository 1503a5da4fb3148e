"""The car twin: reproducible episodes, collisions, commands, sensors, randomization in effect."""

import math

import numpy as np
import pytest

from agents.tasks.car.drive_env import CarDriveConfig, CarDriveEnv
from twin.car.actuation import Command
from twin.car.randomization import CAR_RANDOMIZATION
from twin.car.twin import CarTwin, CarTwinConfig
from twin.car.world import Obstacle
from twin.core.config import ConfigError


def _lane_keep(state):
    return Command(2.0, max(-0.4, min(0.4, -1.5 * state.d - 1.0 * state.alpha)))


def _run(seed, steps=60, **cfg):
    env = CarDriveEnv(CarDriveConfig(twin=CarTwinConfig(randomization=CAR_RANDOMIZATION, **cfg)))
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    frames = [obs]
    for _ in range(steps):
        obs, *_ = env.step(rng.uniform(-0.3, 1.0, 2).astype(np.float32))
        frames.append(obs)
    env.close()
    return info, frames


def test_same_seed_same_trajectory_and_readings():
    info_a, a = _run(11, camera=True)
    info_b, b = _run(11, camera=True)
    info_c, c = _run(12, camera=True)
    assert info_a["randomization"] == info_b["randomization"] != info_c["randomization"]
    for fa, fb in zip(a, b):
        for key in fa:
            assert np.array_equal(fa[key], fb[key]), key
    assert not all(np.array_equal(fa["state"], fc["state"]) for fa, fc in zip(a, c))


def test_replaying_reported_draws_reproduces_the_world():
    env = CarDriveEnv(CarDriveConfig(twin=CarTwinConfig(randomization=CAR_RANDOMIZATION)))
    _, info = env.reset(seed=5)
    params = env.twin.params
    env.reset(seed=99, options={"draws": info["randomization"]})
    assert env.twin.params == params
    env.close()


def test_driving_into_an_obstacle_is_detected():
    twin = CarTwin(CarTwinConfig(track="oval", lidar=True, obstacles=(Obstacle(s=4.0, d=0.0, size=0.4),)))
    twin.reset(np.random.default_rng(0), s=0.0)
    scan = twin.lidar()
    ahead = scan[np.abs(twin._lidar.angles) < 0.15].min()
    assert 3.0 < ahead < 4.0  # the lidar sees the box ahead, with its front face at s = 3.8
    contacts = set()
    for _ in range(200):
        contacts |= set(twin.step(_lane_keep(twin.state)).contacts)
        if twin.state.crashed:
            break
    assert twin.state.crashed and "obstacle" in contacts
    assert 3.0 < twin.state.progress < 4.0
    x_crash = twin.state.x
    twin.step(_lane_keep(twin.state))
    assert twin.state.x == x_crash and twin.state.v == 0.0  # a crashed car stays put
    twin.close()


def test_steering_into_the_wall_is_detected():
    twin = CarTwin(CarTwinConfig(track="oval", lidar=False))
    twin.reset(np.random.default_rng(0), s=2.0)
    report = None
    for _ in range(150):
        report = twin.step(Command(2.0, -0.4))
        if twin.state.crashed:
            break
    assert twin.state.crashed and "wall" in report.contacts
    twin.close()


def test_nominal_lane_keeping_does_not_crash():
    twin = CarTwin(CarTwinConfig(track="kidney", lidar=False))
    twin.reset(np.random.default_rng(0))
    for _ in range(500):
        twin.step(_lane_keep(twin.state))
    assert not twin.state.crashed and twin.state.progress > 15
    twin.close()


def test_bad_commands_are_clamped_and_reported():
    twin = CarTwin(CarTwinConfig(lidar=False))
    twin.reset(np.random.default_rng(0))
    fixes = twin.step(Command(float("nan"), 3.0)).command_fixes
    assert "not finite" in fixes["speed"] and "outside" in fixes["steer"]
    assert abs(twin.state.steer) <= twin.params.vehicle.steer_max + 1e-9
    assert twin.step(Command(1.0, 0.0)).command_fixes == {}
    twin.close()


def test_env_reports_action_clamps_in_info():
    env = CarDriveEnv(CarDriveConfig(twin=CarTwinConfig(lidar=False)))
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.array([np.nan, 2.0], np.float32))
    assert set(info["action_fixes"]) == {"speed", "steer"}
    assert reward == pytest.approx(sum(info["reward_terms"].values()))
    with pytest.raises(ValueError, match="2 entries"):
        env.step(np.zeros(3))
    env.close()


def test_actuation_delay_postpones_the_response():
    from twin.car.actuation import ActuationParams
    from twin.car.twin import CarParams
    speeds = {}
    for delay in (0.0, 0.2):
        params = CarParams(actuation=ActuationParams(delay_s=delay))
        twin = CarTwin(CarTwinConfig(lidar=False, params=params))
        twin.reset(np.random.default_rng(0))
        for _ in range(5):  # 0.1 s
            twin.step(Command(2.0, 0.0))
        speeds[delay] = twin.state.v
        twin.close()
    assert speeds[0.0] > 0.5 and speeds[0.2] == 0.0


def test_low_friction_patch_widens_the_turn():
    from twin.car.twin import CarParams
    radii = []
    for patch in (1.0, 0.15):
        twin = CarTwin(CarTwinConfig(track="kidney", lidar=False, params=CarParams(friction_patches=(patch,))))
        twin.reset(np.random.default_rng(0), v=4.0)
        for _ in range(15):
            twin.step(Command(4.0, 0.3))
        radii.append(twin.state.v / max(abs(twin.state.yaw_rate), 1e-6))
        twin.close()
    assert radii[1] > 1.2 * radii[0]  # sliding on a slippery patch: the car turns less


def test_camera_and_lidar_shapes_follow_params():
    twin = CarTwin(CarTwinConfig(camera=True))
    twin.reset(np.random.default_rng(0))
    out = twin.sense()
    assert out["camera"].shape == (64, 64, 3) and out["camera"].dtype == np.uint8
    assert out["lidar"].shape == (1080,) and np.all(out["lidar"] <= 30.0)
    assert out["camera"].std() > 5  # not a blank frame
    twin.close()


def test_control_rate_must_divide_into_physics_steps():
    with pytest.raises(ConfigError, match="whole number"):
        CarTwinConfig(control_hz=30, physics_dt=0.01)
    with pytest.raises(ConfigError, match="Obstacle"):
        Obstacle(s=math.nan, d=0.0)
