"""Classical baselines: stable-baselines3 PPO on the very envs the VLM agent is scored on.

    python -m agents.training.sb3 --world factory --obs image --timesteps 2048

Two observation kinds per world: 'state' (numbers only) and 'image' (the same numbers plus
the camera frame, through SB3's CNN). A classical policy cannot read text, so the car's
instruction reaches it as a task id (category one-hot and target speed; see
`agents.tasks.car.instruction_env.instruction_arrays`), which makes held-out paraphrases no harder for it: an
advantage over the language model, said wherever it is compared. Each run saves
model.zip, curve.json (reward per episode, as SB3's Monitor records it) and a manifest.
`agents.policies.sb3.SB3Policy` wraps a saved run as a Policy for `shakedown eval`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor

from agents.policies.sb3 import to_params
from agents.tasks.car.instruction_env import (
    CarInstructionEnv,
    CarTaskConfig,
)
from agents.tasks.factory.envs import (
    FactoryInspectionEnv,
    FactoryTaskConfig,
)
from agents.vlm.lora import git_commit
from twin.car.tracks import TRAIN_TRACKS
from twin.core.config import ConfigError, bounded, check_bounds, parse_config
from twin.core.progress import Progress, progress_stage

WORLDS = ("car", "factory")
OBSERVATIONS = ("state", "image")


@dataclasses.dataclass(frozen=True)
class SB3Args:
    """A stable-baselines3 PPO baseline on the same env the VLM agent is scored on."""

    world: str = "factory"
    """'car' (instruction -> MPC parameters) or 'factory' (inspection decisions)."""
    obs: str = "image"
    """'state' (numbers only) or 'image' (numbers and the camera frame)."""
    timesteps: int = bounded(2048, 1, 100_000_000)
    """Env steps (car: one step is one instruction episode; factory: one part)."""
    n_steps: int = bounded(128, 2, 1_000_000)
    """Rollout length per PPO update."""
    batch_size: int = bounded(64, 2, 1_000_000)
    """Minibatch size of each PPO update."""
    lr: float = bounded(3e-4, 1e-7, 1.0)
    """Adam learning rate."""
    duration_s: float = bounded(4.0, 0.5, 600.0)
    """Car: simulated seconds each episode drives."""
    seed: int = 0
    """Seeds SB3, the env and torch."""
    out: Path = Path("runs/sb3-factory-image")
    """Run folder: model.zip, curve.json, manifest.json."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.world not in WORLDS or self.obs not in OBSERVATIONS:
            raise ConfigError(f"SB3Args: world must be one of {WORLDS} and obs one of {OBSERVATIONS}, "
                              f"got {self.world!r}, {self.obs!r}")


class StateOnly(gym.ObservationWrapper):
    """Drops the frame from a Dict observation."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({k: v for k, v in env.observation_space.items() if k != "image"})

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v for k, v in observation.items() if k != "image"}


class CarActions(gym.ActionWrapper):
    """SB3's Gaussian policies act in [-1, 1]; the car env takes raw MPC parameters."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.low, self.high = env.action_space.low, env.action_space.high
        self.action_space = gym.spaces.Box(-1.0, 1.0, self.low.shape, np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        return to_params(action, self.low, self.high)


def make_env(world: str, obs: str, duration_s: float = 4.0) -> gym.Env:
    """The training env of a baseline (train tracks and paraphrases for the car)."""
    if world == "car":
        env: gym.Env = CarActions(CarInstructionEnv(CarTaskConfig(tracks=TRAIN_TRACKS, split="train",
                                                                  duration_s=duration_s, image_obs=obs == "image")))
    else:
        env = FactoryInspectionEnv(FactoryTaskConfig())
    return StateOnly(env) if obs == "state" else env


class _Progress(BaseCallback):
    """SB3's own callback hook, forwarding timesteps to our Progress and keeping the curve."""

    def __init__(self, bar: Progress) -> None:
        super().__init__()
        self.bar, self.episodes = bar, []

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "episode" in info:
                self.episodes.append({"timestep": self.num_timesteps, "reward": float(info["episode"]["r"]),
                                      "length": int(info["episode"]["l"])})
        recent = [e["reward"] for e in self.episodes[-20:]]
        self.bar.set_completed(self.num_timesteps, f"reward {np.mean(recent):+.2f}" if recent else "")
        return True


def train_sb3(args: SB3Args, progress: Progress | None = None) -> Path:
    torch.manual_seed(args.seed)
    env = Monitor(make_env(args.world, args.obs, args.duration_s))
    model = PPO("MultiInputPolicy", env, n_steps=args.n_steps, batch_size=args.batch_size, learning_rate=args.lr,
                seed=args.seed, verbose=0, device="auto")
    t0 = time.perf_counter()
    with progress_stage(progress, f"SB3 PPO {args.world} ({args.obs})", args.timesteps) as bar:
        callback = _Progress(bar)
        model.learn(total_timesteps=args.timesteps, callback=callback)
    env.close()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "model.zip")
    (args.out / "curve.json").write_text(json.dumps(callback.episodes))
    (args.out / "manifest.json").write_text(json.dumps({
        "world": args.world, "obs": args.obs, "seconds": time.perf_counter() - t0, "commit": git_commit(),
        "args": {k: str(v) for k, v in dataclasses.asdict(args).items()}}, indent=1))
    return args.out


def main(argv: list[str] | None = None, progress: Progress | None = None, prog: str | None = None) -> None:
    print(f"baseline: {train_sb3(parse_config(SB3Args, argv, __doc__, prog), progress)}")


if __name__ == "__main__":
    main()
