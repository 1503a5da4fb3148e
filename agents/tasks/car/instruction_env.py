"""The instruction-following task: an instruction and MPC parameters drive the car.

One episode = one instruction on one track under one randomization draw. The action is
the 11 MPC parameters (raw units, PARAM_TABLE order); `step` drives the car with them for
`duration_s` of simulated time and scores the drive against the default parameters on
the very same episode (same draws, same sensor noise). `evaluate` scores any number of
candidate parameter sets on the current episode, which is what GRPO's groups need.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from agents.control.loop import Trace, drive
from agents.control.mpc import FrenetMPC, MPCConfig
from agents.control.mpc_params import DEFAULT, PARAM_TABLE, MPCParams, clamp_dict
from agents.tasks.car.instructions import CATEGORIES, SPLITS, Instruction, parse_instruction, sample_instruction
from agents.tasks.car.metrics import Score, drive_metrics, score, score_drive
from safety.car.guard import CarGuard
from safety.car.spec import CarSafetySpec
from twin.car.randomization import CAR_RANDOMIZATION
from twin.car.tracks import TRAIN_TRACKS, Track, load_track
from twin.car.twin import CarParams, CarState, CarTwin, CarTwinConfig
from twin.core.config import ConfigError, bounded, check_bounds
from twin.core.contracts import Observation
from twin.core.randomization import Term

ACTION_LOW = np.array([p.low for p in PARAM_TABLE], np.float32)
ACTION_HIGH = np.array([p.high for p in PARAM_TABLE], np.float32)
"""Bounds of the action (the 11 MPC parameters in PARAM_TABLE order, raw units)."""
INSTRUCTION_STATE_KEYS = ("speed", "lateral_offset", "heading_error", "steer", "half_width", "curvature", "track_length")


def instruction_arrays(obs: Observation, image: bool = False) -> dict[str, np.ndarray]:
    """The gym observation of an episode start: the car's state, the instruction as a task id
    (category one-hot and target speed: a classical policy cannot read text), the frame."""
    out = {"state": np.array([obs.state[k] for k in INSTRUCTION_STATE_KEYS], np.float32)}
    instr = np.zeros(len(CATEGORIES) + 1, np.float32)
    instr[CATEGORIES.index(obs.privileged["category"])] = 1.0
    instr[-1] = float(obs.privileged["target_speed"] or 0.0)
    out["instruction"] = instr
    if image:
        out["image"] = np.array(obs.image, np.uint8)  # a copy: callers keep what they get
    return out


def instruction_observation(state: CarState, track: Track, frame: np.ndarray | None, instruction: Instruction,
                            car_width: float) -> Observation:
    """What a policy sees of a car at `state` given `instruction`: one function for the env, the
    bridge's robot side and the emulator, so a policy reads the same prompt wherever it runs."""
    values = [state.v, state.d, state.alpha, state.steer, track.half_width, float(track.curvature_at(state.s)),
              track.length]
    return Observation(
        timestamp=state.t, state=dict(zip(INSTRUCTION_STATE_KEYS, map(float, values))), image=frame,
        instruction=instruction.text,
        privileged={"category": instruction.category, "target_speed": instruction.target_speed,
                    "track": track.name, "car_width": car_width},
    )


@dataclasses.dataclass(frozen=True)
class CarTaskConfig:
    """Settings of the instruction-following task."""

    tracks: tuple[str, ...] = TRAIN_TRACKS
    """Tracks an episode is drawn from."""
    split: str = "train"
    """Split instructions are drawn from (agents.tasks.car.instructions.SPLITS): 'train', 'heldout' or 'blind'."""
    duration_s: float = bounded(8.0, 0.5, 600.0)
    """Simulated seconds the MPC drives with the chosen parameters."""
    control_hz: float = bounded(20.0, 5.0, 100.0)
    """MPC and command rate (Hz); RobotxR1 runs its MPC at 20 Hz."""
    start_speed: float = bounded(0.0, -5.0, 10.0)
    """Speed at the start of each drive (m/s)."""
    camera: bool = True
    """Render a front-camera frame into the observation at reset."""
    randomization: tuple[Term, ...] = CAR_RANDOMIZATION
    """Domain randomization applied per episode (empty tuple: nominal world)."""
    params: CarParams = CarParams()
    """Nominal world parameters."""
    safety: CarSafetySpec | None = CarSafetySpec()
    """Hard constraints: every MPC command passes the shield, costs are counted (None: neither)."""
    image_obs: bool = False
    """Put the camera frame into the gym observation too (for image-based baselines)."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.split not in SPLITS:
            raise ConfigError(f"CarTaskConfig.split {self.split!r} must be one of {list(SPLITS)}")
        if not self.tracks:
            raise ConfigError("CarTaskConfig.tracks is empty; name at least one track")
        for name in self.tracks:
            load_track(name)  # unknown track -> ConfigError naming it, now rather than mid-run


@dataclasses.dataclass(frozen=True)
class Attempt:
    """A scored drive."""

    params: MPCParams
    metrics: dict[str, float]
    improvement: float
    """The score against the default drive (score.improvement)."""
    trace: Trace
    notes: dict[str, str]
    """What had to be changed in the proposed parameters (clamps, defaults, unknown names)."""
    score: Score
    """How the score came about: its named terms, why it failed, the progress ratio, the legacy score."""


class CarInstructionEnv(gym.Env):
    """Gymnasium env: observe an instruction and the car, act with 11 MPC parameters, one step."""

    metadata = {"render_modes": []}

    def __init__(self, config: CarTaskConfig | None = None) -> None:
        self.config = config or CarTaskConfig()
        self._twins: dict[str, CarTwin] = {}
        self._mpcs: dict[str, FrenetMPC] = {}
        self._guards: dict[str, CarGuard] = {}
        self.action_space = gym.spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)
        spaces = {"state": gym.spaces.Box(-np.inf, np.inf, (len(INSTRUCTION_STATE_KEYS),), np.float32),
                  "instruction": gym.spaces.Box(-10.0, 10.0, (len(CATEGORIES) + 1,), np.float32)}
        if self.config.image_obs:
            if not self.config.camera:
                raise ConfigError("CarTaskConfig.image_obs needs camera=True")
            cam = self.config.params.camera
            spaces["image"] = gym.spaces.Box(0, 255, (int(cam.height), int(cam.width), 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.instruction: Instruction | None = None
        self._default: Attempt | None = None

    TWINS_KEPT = 8
    """Worlds kept built, the latest used (a world takes ~20 ms to build; a run over many track widths would
    otherwise keep one PyBullet world per width)."""

    def _twin(self, track: str) -> CarTwin:
        if track in self._twins:
            self._twins[track] = self._twins.pop(track)  # most recently used last
        else:
            while len(self._twins) >= self.TWINS_KEPT:
                oldest = next(iter(self._twins))
                self._twins.pop(oldest).close()
                self._mpcs.pop(oldest)
                self._guards.pop(oldest, None)
            cfg = CarTwinConfig(track=track, control_hz=self.config.control_hz, physics_dt=0.01, lidar=False,
                                camera=self.config.camera, params=self.config.params,
                                randomization=self.config.randomization)
            self._twins[track] = CarTwin(cfg)
            self._mpcs[track] = FrenetMPC(self._twins[track].track, MPCConfig(dt=1.0 / self.config.control_hz))
            if self.config.safety is not None:
                self._guards[track] = CarGuard(self._twins[track], self.config.safety)
        return self._twins[track]

    # -- episode -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
        """Options: 'track' (name), 'instruction' (text or Instruction), 'category', 'draws'."""
        super().reset(seed=seed)
        opts = dict(options or {})
        rng = self.np_random
        track = opts.get("track") or self.config.tracks[int(rng.integers(len(self.config.tracks)))]
        given = opts.get("instruction")
        if isinstance(given, Instruction):
            self.instruction = given
        elif given is not None:
            self.instruction = parse_instruction(str(given))
        else:
            self.instruction = sample_instruction(rng, self.config.split, opts.get("category"))
        self.track_name = str(track)
        twin = self._twin(self.track_name)
        self.start_s = float(rng.uniform(0, twin.track.length))
        # Every drive of this episode replays the same draws and the same noise stream.
        self.episode_seed = int(rng.integers(2**63 - 1))
        self.draws = twin.reset(np.random.default_rng(self.episode_seed), s=self.start_s,
                                v=self.config.start_speed, draws=opts.get("draws"))
        self.frame = twin.camera() if self.config.camera else None
        self._default = None
        obs = instruction_arrays(self.observation(), self.config.image_obs)
        info = {"instruction": self.instruction.text, "category": self.instruction.category,
                "target_speed": self.instruction.target_speed, "track": self.track_name,
                "randomization": dict(self.draws), "observation": self.observation()}
        return obs, info

    def observation(self) -> Observation:
        """The episode's start as a policy sees it (privileged ground truth kept apart)."""
        twin = self._twin(self.track_name)
        return instruction_observation(twin.state, twin.track, self.frame, self.instruction,
                                       twin.params.vehicle.width)

    @property
    def track(self) -> Track:
        """The episode's track (call reset() first)."""
        return self._twin(self.track_name).track

    # -- scoring -----------------------------------------------------------------------
    def _drive(self, params: MPCParams) -> Trace:
        twin = self._twin(self.track_name)
        twin.reset(np.random.default_rng(self.episode_seed), s=self.start_s, v=self.config.start_speed,
                   draws=self.draws)
        return drive(twin, self._mpcs[self.track_name], params, self.config.duration_s,
                     self._guards.get(self.track_name))

    def default_attempt(self) -> Attempt:
        """The default parameters' drive of this episode (computed once per episode)."""
        if self._default is None:
            trace = self._drive(DEFAULT)
            metrics = drive_metrics(self.instruction, trace)
            # The default against itself: 0 (its crash, if any, is the episode's, not a policy's failure).
            same = score(self.instruction.category, metrics["error"], metrics["error"], metrics["progress"],
                         metrics["progress"])
            self._default = Attempt(DEFAULT, metrics, same.improvement, trace, {}, same)
        return self._default

    def evaluate(self, proposed: Mapping[str, Any] | MPCParams | None, failed_parse: bool = False) -> Attempt:
        """Drive this episode with proposed parameters and score them against the default.

        `None` or `failed_parse=True` (the agent's answer could not be parsed) drives the
        safe defaults but scores the attempt as a failure, so it is counted, not excluded.
        """
        if self.instruction is None:
            raise RuntimeError("call reset() before evaluate()")
        if isinstance(proposed, MPCParams):
            params, notes = proposed, {}
        else:
            params, notes = clamp_dict(proposed or {})
        failed = failed_parse or proposed is None
        trace = self._drive(params)
        metrics = drive_metrics(self.instruction, trace)
        scored = score_drive(self.instruction, metrics, self.default_attempt().metrics, unparsable=failed)
        return Attempt(params, metrics, scored.improvement, trace, notes, scored)

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (len(PARAM_TABLE),):
            raise ValueError(f"action must hold the {len(PARAM_TABLE)} MPC parameters in PARAM_TABLE order, "
                             f"got shape {a.shape}")
        attempt = self.evaluate({p.name: float(v) for p, v in zip(PARAM_TABLE, a)})
        reward_terms = dict(attempt.score.terms)  # error_improvement, progress_penalty, failure: they sum to the score
        cost_terms = dict(attempt.trace.costs) or {"collision": attempt.metrics["crashed"]}
        info = {"reward_terms": reward_terms, "cost_terms": cost_terms, "cost": sum(cost_terms.values()),
                "metrics": attempt.metrics, "default_metrics": self.default_attempt().metrics,
                "action_fixes": attempt.notes, "params": attempt.params.as_dict(), "failure": attempt.score.failure,
                "progress_ratio": attempt.score.progress_ratio, "legacy_improvement": attempt.score.legacy_improvement}
        return (instruction_arrays(self.observation(), self.config.image_obs), float(sum(reward_terms.values())), True, False,
                info)

    def close(self) -> None:
        for twin in self._twins.values():
            twin.close()
        self._twins.clear()
