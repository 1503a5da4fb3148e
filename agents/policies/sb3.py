"""A saved stable-baselines3 run as a `Policy` (deterministic actions), so `shakedown eval`,
scenarios and the bridge treat a classical baseline like any other policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from stable_baselines3 import PPO

from agents.control.mpc_params import PARAM_TABLE
from agents.tasks.car.instruction_env import ACTION_HIGH, ACTION_LOW, instruction_arrays
from agents.tasks.factory.envs import inspection_arrays
from twin.core.contracts import Decision, Observation
from twin.factory.twin import DECISIONS


def to_params(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """An SB3 action in [-1, 1] (what PPO's Gaussian learns well) scaled to [low, high]."""
    a = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
    return low + (a + 1.0) * 0.5 * (high - low)


class SB3Policy:
    """A saved baseline as a Policy (deterministic actions)."""

    def __init__(self, run_dir: Path | str) -> None:
        run_dir = Path(run_dir)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        self.world, self.obs = manifest["world"], manifest["obs"]
        self.model = PPO.load(run_dir / "model.zip", device="cpu")
        self.policy_id = f"sb3-ppo-{self.obs}:{run_dir.name}"
        self.label = f"SB3 PPO ({self.obs})"

    def decide(self, observation: Observation) -> Decision:
        if self.world == "car":
            arrays = instruction_arrays(observation, image=self.obs == "image")
        else:
            arrays = inspection_arrays(observation)
        if self.obs == "state":
            arrays.pop("image", None)
        action, _ = self.model.predict(arrays, deterministic=True)
        if self.world == "car":
            values = to_params(action, ACTION_LOW, ACTION_HIGH)
            return Decision(action={p.name: float(v) for p, v in zip(PARAM_TABLE, values)}, policy_id=self.policy_id)
        return Decision(action={"decision": DECISIONS[int(action)]}, policy_id=self.policy_id)
