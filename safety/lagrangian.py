"""A Lagrange multiplier for constraint costs in training (OmniSafe's PPO-Lagrangian form).

    lambda <- max(0, lambda + lr * (J_c - cost_limit))
    advantage = (A_r - lambda * A_c) / (1 + lambda)
The multiplier keeps the *expected* cost near the limit; it is the training signal, not
the guarantee (the shield is).
"""

from __future__ import annotations

import dataclasses
import math

from twin.core.config import bounded, check_bounds


@dataclasses.dataclass(frozen=True)
class LagrangeConfig:
    """Settings of the multiplier."""

    cost_limit: float = bounded(0.0, 0.0, 1e9)
    """Expected episode cost the policy may incur."""
    lr: float = bounded(0.05, 0.0, 100.0)
    """Step size of the multiplier's update."""
    init: float = bounded(0.0, 0.0, 1e6)
    """Starting multiplier."""
    max_lambda: float = bounded(100.0, 0.0, 1e9)
    """Upper clip, so one bad batch cannot swamp the reward for long."""

    def __post_init__(self) -> None:
        check_bounds(self)


class Lagrange:
    def __init__(self, config: LagrangeConfig | None = None) -> None:
        self.config = config or LagrangeConfig()
        self.value = self.config.init

    def update(self, mean_episode_cost: float) -> float:
        """One dual ascent step on the measured mean episode cost; returns the new multiplier."""
        if not math.isfinite(mean_episode_cost):
            raise ValueError(f"mean episode cost must be finite, got {mean_episode_cost}")
        c = self.config
        self.value = min(c.max_lambda, max(0.0, self.value + c.lr * (mean_episode_cost - c.cost_limit)))
        return self.value

    def advantage(self, reward_advantage, cost_advantage):
        """(A_r - lambda A_c) / (1 + lambda); works on floats, numpy arrays and torch tensors."""
        return (reward_advantage - self.value * cost_advantage) / (1.0 + self.value)

    def penalized(self, reward, cost):
        """reward - lambda * cost (for trainers that score whole samples, e.g. GRPO)."""
        return reward - self.value * cost

    def state_dict(self) -> dict[str, float]:
        return {"lambda": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["lambda"])
