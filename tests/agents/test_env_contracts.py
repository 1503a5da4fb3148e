"""Every env keeps Gymnasium's contract, checked by both Gymnasium's own checker (which also
replays a seed and demands equal observations and infos) and SB3's."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from agents.tasks.car.drive_env import CarDriveConfig, CarDriveEnv
from agents.tasks.car.instruction_env import CarInstructionEnv, CarTaskConfig
from agents.tasks.factory.envs import FactoryInspectionEnv, FactoryLineEnv, FactoryTaskConfig
from safety.car.spec import CarSafetySpec
from twin.car.randomization import CAR_RANDOMIZATION
from twin.car.twin import CarTwinConfig

ENVS = {
    "drive, every sensor": lambda: CarDriveEnv(CarDriveConfig(
        twin=CarTwinConfig(camera=True, randomization=CAR_RANDOMIZATION), lidar_stride=4, max_steps=30)),
    "drive, shielded": lambda: CarDriveEnv(CarDriveConfig(max_steps=30, safety=CarSafetySpec())),
    "instruction": lambda: CarInstructionEnv(CarTaskConfig(tracks=("oval",), duration_s=1.0)),
    "instruction, image": lambda: CarInstructionEnv(CarTaskConfig(tracks=("oval",), duration_s=0.5, image_obs=True)),
    "inspection": lambda: FactoryInspectionEnv(FactoryTaskConfig(parts_per_episode=2)),
    "line": lambda: FactoryLineEnv(FactoryTaskConfig(line_seconds=3)),
}


@pytest.mark.parametrize("name", list(ENVS))
def test_gymnasium_and_sb3_checkers_pass(name):
    env = ENVS[name]()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gymnasium_check_env(env, skip_render_check=True)
        # Unbounded state boxes and raw-unit MPC parameter boxes are deliberate; anything else is news.
        allowed = ("infinity", "symmetric and normalized")
        assert not [str(w.message) for w in caught if not any(a in str(w.message) for a in allowed)]
        sb3_check_env(env, skip_render_check=True)
    finally:
        env.close()


def _rollout(env: gym.Env, seed: int, steps: int) -> list:
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    env.action_space.seed(seed)
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        out.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            obs, info = env.reset()
            out.append((obs, info))
    return out


@pytest.mark.parametrize("name", ["instruction", "inspection"])
def test_same_seed_same_episode_including_the_policy_view(name):
    """Whole step tuples compare equal across two runs of a seed: the Observation in `info`
    included (arrays by value) and no wall-clock timing in what a seed determines."""
    from twin.core.contracts import same_value

    runs = []
    for _ in range(2):
        env = ENVS[name]()
        runs.append(_rollout(env, seed=5, steps=3))
        env.close()
    assert same_value(runs[0], runs[1])
    assert not same_value(runs[0][0][0], {k: np.zeros_like(v) for k, v in runs[0][0][0].items()})
