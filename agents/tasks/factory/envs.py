"""Gymnasium envs of the factory cell: part inspection and line control.

Both run the same twin behind the same FactoryGuard (shield and constraint costs), and
report rewards and costs as dicts of named terms.

- `FactoryInspectionEnv`: one step per part. Observe the overhead frame of the part at the
  inspection line (and what the line knows: its kind, the belt speed); answer accept,
  reject or hold. The line then runs, arm and person included, until the next part
  arrives.
- `FactoryLineEnv`: one step per second of line time. Choose belt and arm speed; an
  inspector policy decides the parts; reward is throughput of correctly sorted parts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from agents.tasks.factory.metrics import line_metrics
from safety.factory.guard import FactoryGuard
from safety.factory.spec import FactorySafetySpec
from twin.core.config import bounded, check_bounds
from twin.core.contracts import Observation
from twin.factory.command import FactoryCommand
from twin.factory.params import FACTORY_RANDOMIZATION
from twin.factory.parts import KINDS
from twin.factory.twin import DECISIONS, FactoryTwin, FactoryTwinConfig, Part

INSTRUCTION = ("Inspect the part under the camera. Accept a good part; reject a part with a defect "
               "(scratch, dent, colour spot, missing hole); hold it for a person if unsure.")
KIND_ORDER = tuple(sorted(KINDS))


@dataclasses.dataclass(frozen=True)
class FactoryTaskConfig:
    """Settings shared by the factory envs."""

    twin: FactoryTwinConfig = FactoryTwinConfig(randomization=FACTORY_RANDOMIZATION)
    """The cell (randomized by default)."""
    safety: FactorySafetySpec = FactorySafetySpec()
    """Hard constraints of the cell."""
    shield: bool = True
    """Filter every command through the shield (False: only count the costs)."""
    parts_per_episode: int = bounded(8, 1, 10_000)
    """Inspection: parts decided per episode."""
    arm_speed: float = bounded(0.6, 0.0, 10.0)
    """Inspection: arm tool speed commanded (m/s); the shield may lower it."""
    line_seconds: int = bounded(60, 1, 100_000)
    """Line control: seconds of line time per episode (one step each)."""
    max_wait_s: float = bounded(30.0, 1.0, 1e4)
    """Longest the line runs waiting for the next part before the episode is cut short."""

    def __post_init__(self) -> None:
        check_bounds(self)


def inspection_task(parts_per_episode: int, trigger_jitter_s: float = 0.0) -> FactoryTaskConfig:
    """The inspection line every trainer, check and evaluation runs: the randomized cell, `parts_per_episode`
    parts, and the camera trigger's latency drawn per part from [0, trigger_jitter_s] s (FactoryParams)."""
    twin = FactoryTaskConfig.twin
    params = dataclasses.replace(twin.params, trigger_jitter_s=trigger_jitter_s)
    return FactoryTaskConfig(twin=dataclasses.replace(twin, params=params), parts_per_episode=parts_per_episode)


def decision_reward(part: Part, decision: str) -> dict[str, float]:
    """Named reward terms of one decision against ground truth."""
    defective = part.spec.defective
    return {
        "correct": 1.0 if (decision == "accept" and not defective) or (decision == "reject" and defective) else 0.0,
        "false_accept": -2.0 if decision == "accept" and defective else 0.0,
        "false_reject": -1.0 if decision == "reject" and not defective else 0.0,
        "hold": -0.25 if decision == "hold" else 0.0,
    }


class _FactoryEnvBase(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, config: FactoryTaskConfig | None = None) -> None:
        self.config = config or FactoryTaskConfig()
        self.twin = FactoryTwin(self.config.twin)
        self.guard = FactoryGuard(self.twin, self.config.safety, self.config.shield)
        self.timeline: list[dict[str, float]] = []

    def _run(self, command: FactoryCommand, steps: int, costs: dict[str, float],
             stop: Callable[[], bool] | None = None) -> int:
        """Run the line for up to `steps` control periods until `stop()`; sums costs; returns steps run.

        `stop` is checked before each period: a condition that already holds runs nothing, so a frame is
        taken the moment its part arrives whether or not an event split the wait (a step taken anyway
        shifted every frame after an event's time by one period)."""
        for k in range(steps):
            if stop is not None and stop():
                return k
            verdict, report, step_costs = self.guard.step(command)
            for name, value in step_costs.indicators.items():
                costs[name] = costs.get(name, 0.0) + value
            self.timeline.append({"t": self.twin.t, "belt": report.belt_speed, "tool_speed": report.tool_speed,
                                  "separation": min(report.separation, 5.0), "intervened": float(verdict.intervened),
                                  "binned": float(len(report.binned))})
            self.min_separation = min(self.min_separation, report.separation)
        return steps

    def _reset_twin(self, seed: int | None, options: dict[str, Any] | None) -> dict[str, Any]:
        super().reset(seed=seed)
        draws = self.twin.reset(self.np_random, draws=(options or {}).get("draws"))
        self.guard.reset()
        self.timeline = []
        self.min_separation = float("inf")
        return dict(draws)

    def metrics(self) -> dict[str, float]:
        """Sorting and safety metrics of the episode so far (agents.tasks.factory.metrics)."""
        return line_metrics(self.twin, self.min_separation, self.guard.counter.interventions)

    def render(self) -> np.ndarray:
        return self.twin.inspection_image()

    def close(self) -> None:
        self.twin.close()


def inspection_observation(twin: FactoryTwin, part: Part | None, frame: np.ndarray, progress: float) -> Observation:
    """A part at the inspection line as a policy sees it: one function for the env, the bridge's
    cell side and the emulator, so a policy reads the same prompt wherever it runs."""
    return Observation(
        timestamp=twin.t, image=frame, instruction=INSTRUCTION,
        state={"belt_speed": float(twin.params.belt.speed),
               **{f"kind_{k}": float(part is not None and part.spec.kind == k) for k in KIND_ORDER},
               "progress": progress},
        privileged={"defect": part.spec.defect if part else None, "defective": bool(part and part.spec.defective),
                    "kind": part.spec.kind if part else None, "part_id": part.id if part else None})


def inspection_arrays(obs: Observation) -> dict[str, np.ndarray]:
    """The gym observation of an inspection step: the frame, and the part's kind one-hot, the
    belt speed and the episode's progress (one function for the env and for policies)."""
    state = np.array([obs.state.get(f"kind_{k}", 0.0) for k in KIND_ORDER]
                     + [obs.state.get("belt_speed", 0.0), obs.state.get("progress", 0.0)], np.float32)
    return {"image": np.array(obs.image, np.uint8), "state": state}  # a copy: callers keep what they get


class FactoryInspectionEnv(_FactoryEnvBase):
    """Decide each part: 0 accept, 1 reject, 2 hold."""

    def __init__(self, config: FactoryTaskConfig | None = None) -> None:
        super().__init__(config)
        cam = self.config.twin.params.camera
        self.action_space = gym.spaces.Discrete(len(DECISIONS))
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (int(cam.height), int(cam.width), 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (len(KIND_ORDER) + 2,), np.float32),
        })
        self.part: Part | None = None

    def _command(self) -> FactoryCommand:
        return FactoryCommand(self.config.arm_speed, self.twin.params.belt.speed)

    def _advance_to_next_part(self, costs: dict[str, float]) -> bool:
        """Run the line until a part awaits a decision; False if none came in time."""
        limit = int(self.config.max_wait_s * self.config.twin.control_hz)
        self._run(self._command(), limit, costs, stop=lambda: bool(self.twin.awaiting()))
        waiting = self.twin.awaiting()
        self.part = waiting[0] if waiting else None
        if self.part is not None:
            self.frame = self.twin.inspection_image()
        return self.part is not None

    def _obs(self) -> dict[str, np.ndarray]:
        return inspection_arrays(self.observation())

    def observation(self) -> Observation:
        """The current part as a policy sees it (ground truth under `privileged`)."""
        return inspection_observation(self.twin, self.part, self.frame, self.decided / self.config.parts_per_episode)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Options: 'draws' (replay randomization), 'events' [(time_s, name)] injected during the episode."""
        draws = self._reset_twin(seed, options)
        self.events = sorted((options or {}).get("events", []))
        self.decided = 0
        self.frame = np.zeros(self.observation_space["image"].shape, np.uint8)
        costs: dict[str, float] = {}
        self._advance_with_events(costs)
        return self._obs(), {"randomization": draws, "observation": self.observation(), "costs": costs}

    def _advance_with_events(self, costs: dict[str, float]) -> bool:
        # Events fire at their times while the line runs to the next part.
        while self.events and self.events[0][0] <= self.twin.t:
            self.twin.inject(self.events.pop(0)[1])
        if self.events:
            stop_at = self.events[0][0]
            limit = int(self.config.max_wait_s * self.config.twin.control_hz)
            self._run(self._command(), limit, costs,
                      stop=lambda: bool(self.twin.awaiting()) or self.twin.t >= stop_at)
            if not self.twin.awaiting() and self.twin.t >= stop_at:
                return self._advance_with_events(costs)
        return self._advance_to_next_part(costs)

    def step(self, action: int | np.integer) -> tuple[dict, float, bool, bool, dict]:
        try:
            index = int(action)
        except (TypeError, ValueError):
            index = -1
        if not 0 <= index < len(DECISIONS) or index != action:
            raise ValueError(f"action must be 0 (accept), 1 (reject) or 2 (hold), got {action!r}")
        if self.part is None:
            raise RuntimeError("no part awaits a decision: the episode is over; call reset()")
        decision = DECISIONS[index]
        part = self.part
        self.twin.decide(part.id, decision)
        reward_terms = decision_reward(part, decision)
        self.decided += 1
        costs: dict[str, float] = {}
        terminated = self.decided >= self.config.parts_per_episode
        truncated = False
        if terminated:
            # Let the decided parts reach their bins so the metrics see where they went.
            self._run(self._command(), int(self.config.max_wait_s * self.config.twin.control_hz), costs,
                      stop=lambda: all(p.status in ("binned", "dropped") for p in self.twin.parts.values()
                                       if p.decision is not None))
            self.part = None
        elif not self._advance_with_events(costs):
            truncated = True
        info = {"reward_terms": reward_terms, "cost_terms": costs, "cost": sum(costs.values()),
                "decision": decision, "defect": part.spec.defect, "part_id": part.id}
        if terminated or truncated:
            info["metrics"] = self.metrics()
        else:
            info["observation"] = self.observation()
        return self._obs(), float(sum(reward_terms.values())), terminated, truncated, info


Inspector = Callable[[Observation], str]


class FactoryLineEnv(_FactoryEnvBase):
    """Choose belt and arm speed each second; an inspector decides the parts."""

    def __init__(self, config: FactoryTaskConfig | None = None, inspector: Inspector | None = None) -> None:
        super().__init__(config)
        self.inspector = inspector or (lambda obs: "reject" if obs.privileged["defective"] else "accept")
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (7,), np.float32)

    def _obs(self) -> np.ndarray:
        tw = self.twin
        on_belt = sum(p.status == "belt" and p.body is not None for p in tw.parts.values())
        return np.array([self.belt, self.arm, min(tw.separation, 5.0), on_belt, float(tw.jammed),
                         float(tw.arm.task is not None), tw.t / self.config.line_seconds], np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        draws = self._reset_twin(seed, options)
        self.seconds = 0
        self.belt, self.arm = self.twin.params.belt.speed, self.config.arm_speed
        return self._obs(), {"randomization": draws}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (2,):
            raise ValueError(f"action must be (belt, arm) in [-1, 1], got shape {a.shape}")
        fixes = {}
        clipped = np.clip(np.nan_to_num(a, nan=-1.0), -1.0, 1.0)
        if not np.array_equal(clipped, a):
            fixes = {"action": f"{a.tolist()} -> {clipped.tolist()} (finite, in [-1, 1])"}
        sp = self.config.safety
        self.belt = float((clipped[0] + 1) / 2 * sp.belt_speed_max)
        self.arm = float((clipped[1] + 1) / 2 * sp.arm_speed_max)
        costs: dict[str, float] = {}
        binned_before = {p.id for p in self.twin.parts.values() if p.status == "binned"}
        for _ in range(int(self.config.twin.control_hz)):
            for part in self.twin.awaiting():
                obs = Observation(timestamp=self.twin.t, state={"belt_speed": self.belt},
                                  image=self.twin.inspection_image(), instruction=INSTRUCTION,
                                  privileged={"defective": part.spec.defective, "defect": part.spec.defect,
                                              "kind": part.spec.kind, "part_id": part.id})
                self.twin.decide(part.id, self.inspector(obs))
            self._run(FactoryCommand(self.arm, self.belt), 1, costs)
        newly = [p for p in self.twin.parts.values() if p.status == "binned" and p.id not in binned_before]
        right = sum((p.bin == "accept") != p.spec.defective and p.bin in ("accept", "reject") for p in newly)
        reward_terms = {"throughput": float(right), "missort": -float(len(newly) - right),
                        "dropped": -costs.get("dropped", 0.0)}
        self.seconds += 1
        truncated = self.seconds >= self.config.line_seconds
        info = {"reward_terms": reward_terms, "cost_terms": costs, "cost": sum(costs.values()),
                "action_fixes": fixes}
        if truncated:
            info["metrics"] = self.metrics()
        return self._obs(), float(sum(reward_terms.values())), False, truncated, info
