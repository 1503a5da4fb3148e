"""`CarDriveEnv`: the car twin as a gymnasium env with low-level (speed, steering) actions.

For classical RL baselines and for the safety shield's tests. Actions are normalised to
[-1, 1] (speed scaled by `speed_scale`, steering by the steering limit). Rewards and costs
are dicts of named terms in `info`; the scalar reward is their sum.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np

from safety.car.guard import CarGuard
from safety.car.spec import CarSafetySpec
from twin.car.actuation import Command
from twin.car.twin import CarTwin, CarTwinConfig
from twin.core.config import bounded, check_bounds

DRIVE_STATE_KEYS = ("speed", "yaw_rate", "ax", "ay", "steer", "d", "alpha", "curvature")


@dataclasses.dataclass(frozen=True)
class CarDriveConfig:
    """Settings of the low-level driving task."""

    twin: CarTwinConfig = CarTwinConfig()
    """The twin (track, rates, sensors, randomization)."""
    max_steps: int = bounded(1000, 1, 10_000_000)
    """Steps before the episode is truncated."""
    speed_scale: float = bounded(5.0, 0.1, 20.0)
    """Speed command (m/s) at action[0] = 1; negative actions reverse."""
    lidar_stride: int = bounded(1, 1, 1080)
    """Keep every k-th lidar beam in the observation (the twin still casts all)."""
    collision_penalty: float = bounded(10.0, 0.0, 1e6)
    """Reward lost when the car hits something."""
    safety: CarSafetySpec | None = None
    """Hard constraints; when set, costs are per constraint and `shield` filters every command."""
    shield: bool = True
    """With a safety spec: filter commands through the shield (False: only account for costs)."""

    def __post_init__(self) -> None:
        check_bounds(self)


class CarDriveEnv(gym.Env):
    """Drive laps: reward progress along the track, penalise leaving the centre and crashing."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, config: CarDriveConfig | None = None, render_mode: str | None = None) -> None:
        self.config = config or CarDriveConfig()
        self.twin = CarTwin(self.config.twin)
        self.guard = CarGuard(self.twin, self.config.safety, self.config.shield) if self.config.safety else None
        self._scan: np.ndarray | None = None
        self.render_mode = render_mode
        spaces: dict[str, gym.Space] = {
            "state": gym.spaces.Box(-np.inf, np.inf, (len(DRIVE_STATE_KEYS),), np.float32),
        }
        tc = self.config.twin
        if tc.lidar:
            n = len(range(0, int(tc.params.lidar.beams), self.config.lidar_stride))
            spaces["lidar"] = gym.spaces.Box(0.0, float(tc.params.lidar.max_range), (n,), np.float32)
        if tc.camera:
            cam = tc.params.camera
            spaces["image"] = gym.spaces.Box(0, 255, (int(cam.height), int(cam.width), 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._steps = 0

    def _observe(self) -> dict[str, np.ndarray]:
        st = self.twin.state
        sensed = self.twin.sense()
        odo = sensed["odometry"]
        kappa = float(self.twin.track.curvature_at(st.s))
        values = {"speed": odo["speed"], "yaw_rate": odo["yaw_rate"], "ax": odo["ax"], "ay": odo["ay"],
                  "steer": st.steer, "d": st.d, "alpha": st.alpha, "curvature": kappa}
        state = np.array([values[k] for k in DRIVE_STATE_KEYS], np.float32)
        obs = {"state": state}
        if "lidar" in sensed:
            self._scan = sensed["lidar"]  # the shield reads every beam of the latest scan
            obs["lidar"] = sensed["lidar"][:: self.config.lidar_stride]
        if "camera" in sensed:
            obs["image"] = sensed["camera"]
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Options: 's', 'd', 'v' (start pose and speed), 'draws' (replay randomization)."""
        super().reset(seed=seed)
        opts = options or {}
        draws = self.twin.reset(
            self.np_random, s=float(opts.get("s", 0.0)), d=float(opts.get("d", 0.0)),
            v=float(opts.get("v", 0.0)), draws=opts.get("draws"),
        )
        self._steps = 0
        if self.guard:
            self.guard.reset()
        return self._observe(), {"randomization": dict(draws), "track": self.twin.track.name}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (2,):
            raise ValueError(f"CarDriveEnv action must have 2 entries (speed, steer), got shape {a.shape}")
        fixes: dict[str, str] = {}
        clipped = np.clip(np.nan_to_num(a, nan=0.0), -1.0, 1.0)
        for i, name in enumerate(("speed", "steer")):
            if not np.isfinite(a[i]) or a[i] != clipped[i]:
                fixes[name] = f"action {a[i]} -> {clipped[i]} (valid: finite, in [-1, 1])"
        veh = self.twin.params.vehicle
        progress_before = self.twin.state.progress
        command = Command(clipped[0] * self.config.speed_scale, clipped[1] * veh.steer_max)
        info: dict[str, Any] = {}
        if self.guard:
            verdict, report, costs = self.guard.step(command, self._scan)
            cost_terms = costs.indicators
            info.update(shield=verdict.as_record(), cost_magnitudes=costs.magnitudes,
                        constraint_margins=costs.margins)
        else:
            report = self.twin.step(command)
            cost_terms = {"collision": float(bool(report.contacts))}
        fixes.update({f"twin.{k}": v for k, v in report.command_fixes.items()})
        self._steps += 1
        st = self.twin.state
        reward_terms = {
            "progress": st.progress - progress_before,
            "centering": -0.05 * (st.d / self.twin.track.half_width) ** 2,
            "collision": -self.config.collision_penalty if report.contacts else 0.0,
        }
        info.update({
            "reward_terms": reward_terms,
            "cost_terms": cost_terms,
            "cost": sum(cost_terms.values()),
            "contacts": report.contacts,
            "action_fixes": fixes,
            "randomization_redraws": report.redraws,
            "t": st.t,
        })
        terminated = st.crashed
        truncated = self._steps >= self.config.max_steps
        return self._observe(), float(sum(reward_terms.values())), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        return self.twin.camera() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        self.twin.close()
