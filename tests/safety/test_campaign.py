"""A reckless driver in randomized worlds: zero violations with the shield, many without.

Both counts are printed (pytest -s shows them) and asserted."""

import numpy as np
import pytest

from agents.tasks.car.drive_env import CarDriveConfig, CarDriveEnv
from safety.car.spec import CarSafetySpec, SpeedZone
from twin.car.randomization import CAR_RANDOMIZATION
from twin.car.twin import CarTwinConfig
from twin.car.world import Obstacle

SPEC = CarSafetySpec(zones=(SpeedZone(20.0, 30.0, 1.5),))
OBSTACLES = (Obstacle(s=12.0, d=0.3), Obstacle(s=40.0, d=-0.35, size=0.4))


def campaign(track: str, episodes: int, steps: int, shield: bool) -> dict[str, float]:
    env = CarDriveEnv(CarDriveConfig(twin=CarTwinConfig(track=track, randomization=CAR_RANDOMIZATION,
                                                        obstacles=OBSTACLES),
                                     safety=SPEC, shield=shield, max_steps=steps))
    rng = np.random.default_rng(123)
    totals = {"collision": 0.0, "speed": 0.0, "lateral_accel": 0.0, "steps": 0, "interventions": 0}
    for ep in range(episodes):
        env.reset(seed=ep)
        done = False
        while not done:
            action = np.array([rng.uniform(0.3, 1.0) * rng.choice([1, 1, 1, -1]), rng.uniform(-1, 1)], np.float32)
            _, _, term, trunc, info = env.step(action)
            for k, v in info["cost_terms"].items():
                totals[k] += v
            totals["steps"] += 1
            done = term or trunc
        totals["interventions"] += env.guard.counter.interventions
    env.close()
    return totals


def _check(track, episodes, steps):
    off = campaign(track, episodes, steps, shield=False)
    on = campaign(track, episodes, steps, shield=True)
    print(f"\n{track}: without shield {off}\n{track}: with shield    {on}")
    assert off["collision"] >= episodes // 2  # the driver really is reckless
    assert on["collision"] == on["speed"] == on["lateral_accel"] == 0
    assert on["interventions"] > 0 and on["steps"] == episodes * steps


def test_reckless_campaign_zero_violations_with_shield():
    _check("chicane", episodes=3, steps=300)


@pytest.mark.slow
@pytest.mark.parametrize("track", ["oval", "kidney", "chicane", "sprint", "procedural-11"])
def test_reckless_campaign_many_episodes(track):
    _check(track, episodes=12, steps=600)
