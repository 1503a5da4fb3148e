"""What a scenario file says, as validated frozen dataclasses.

A scenario names a world and the system under test, the nominal distributions of the
twin's own parameters (by the twin's randomization paths: one mechanism, not a second
one), events (a trigger on named signals, with edge and delay, firing an action whose
parameters may be distributions), disturbance channels (noise on sensing or actuation
that carries its log-likelihood), validity requirements (the run was not what we meant:
reject and resample) and monitors (the system failed: record and keep). The loader
(`scenarios.loader`) builds these from YAML and names file, line and field in every error;
these classes check what can be checked without the file.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from twin.core.config import ConfigError
from twin.core.randomization import Choice, Distribution, Normal, Uniform

Value = float | Distribution
"""A parameter: a constant, or a distribution sampled per episode."""

EDGES = ("rising", "falling", "none")


def is_random(value: Value) -> bool:
    return isinstance(value, (Uniform, Normal, Choice))


@dataclasses.dataclass(frozen=True)
class WorldSpec:
    """Which world the scenario runs in, and for how long."""

    kind: Literal["car", "factory"]
    """'car' (the F1TENTH twin on a track) or 'factory' (the inspection line)."""
    track: str = "oval"
    """Car only: named track or 'procedural-<seed>'."""
    duration_s: float = 8.0
    """Simulated seconds per episode."""
    control_hz: float = 20.0
    """Command rate (Hz); the car's MPC runs at this rate (RobotxR1 runs it at 20 Hz)."""
    lidar: bool = False
    """Car only: cast the lidar every step and give it to the shield (sees obstacles the map does not know)."""
    params_file: str = ""
    """A calibrated twin config (`shakedown calibrate` writes one: `params: {path: value}`): its values become the
    nominal constants of those fields; the scenario's own `nominal` entries still win. Relative to the scenario file."""
    randomize_rest: bool = False
    """Also draw the twin's default randomization for every field the scenario does not declare, from the
    episode's seed (nuisance randomness: integrated over, never searched)."""

    def __post_init__(self) -> None:
        if self.kind not in ("car", "factory"):
            raise ConfigError(f"world.kind {self.kind!r} must be 'car' or 'factory'")
        if not (0.5 <= self.duration_s <= 600):
            raise ConfigError(f"world.duration_s {self.duration_s} must lie in [0.5, 600] s")
        if not (1.0 <= self.control_hz <= 100):
            raise ConfigError(f"world.control_hz {self.control_hz} must lie in [1, 100] Hz")


@dataclasses.dataclass(frozen=True)
class SystemSpec:
    """The system under test."""

    policy: str = "default"
    """Car: 'default' (default MPC parameters), 'expert', 'pure-pursuit', 'reckless', 'adapter:<dir>', or
    'python:<module>:<name>' (a `Policy` or a callable returning one). Factory: 'heuristic', 'expert', 'python:...'."""
    instruction: str = "Drive at 3 m/s."
    """Car: the driving instruction the policy is given (also sets the scripted drivers' speed)."""
    shield: bool = True
    """Filter every command through the world's shield (False: the shield only counts)."""
    safety: tuple[tuple[str, object], ...] = ()
    """Overrides of the world's safety spec (CarSafetySpec / FactorySafetySpec fields), as (field, value) pairs."""
    obstacles: tuple[tuple[float, float, float], ...] = ()
    """Car: static obstacles known to the map, as (s, d, size) in metres."""
    start: tuple[float, ...] = ()
    """Car, policy 'replay': the recorded start state (x, y, yaw, v, steer)."""
    commands: tuple[tuple[float, float], ...] = ()
    """Car, policy 'replay': the recorded commands, (speed, steer) per control period."""


@dataclasses.dataclass(frozen=True)
class Trigger:
    """When an event fires: a condition on named signals, its edge, and a delay."""

    when: str
    """A comparison on signals, e.g. 's > 12', 't >= 3', 'separation < 1.5'."""
    edge: str = "rising"
    """'rising': fires when the condition becomes true (true at the start counts); 'falling': when it becomes
    false; 'none': fires the first step it is true."""
    delay_s: float = 0.0
    """Seconds between the condition and the action."""

    def __post_init__(self) -> None:
        if self.edge not in EDGES:
            raise ConfigError(f"trigger edge {self.edge!r} must be one of {list(EDGES)}")
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise ConfigError(f"trigger delay_s {self.delay_s} must be a finite number >= 0")


@dataclasses.dataclass(frozen=True)
class EventSpec:
    """A trigger and the action it fires (once per episode)."""

    name: str
    """Unique name, used in sample-vector dimension names and reports."""
    trigger: Trigger
    """When it fires."""
    action: str
    """What happens: one of the world's actions (see `shakedown scenario actions`)."""
    params: tuple[tuple[str, Value], ...] = ()
    """The action's parameters: constants or distributions."""


@dataclasses.dataclass(frozen=True)
class DisturbanceSpec:
    """Noise on one sensing or actuation channel, with its log-likelihood.

    The noise is `std * z_k` on `segments` equal pieces of the episode (each z_k standard normal and part of the
    sample vector, so searches can steer it and its likelihood is known), plus optional white noise of
    `white_std` drawn per step from the episode's seed (its log-likelihood is added to the episode's)."""

    channel: str
    """One of the world's channels, e.g. 'steer' (rad added to the command) or 'speed_sense' (m/s on the sensed speed)."""
    std: float = 0.0
    """Standard deviation of the piecewise-constant part."""
    segments: int = 4
    """Number of equal time pieces of the piecewise-constant part."""
    white_std: float = 0.0
    """Standard deviation of the per-step white part."""

    def __post_init__(self) -> None:
        if not (self.std >= 0 and self.white_std >= 0 and math.isfinite(self.std + self.white_std)):
            raise ConfigError(f"disturbance {self.channel!r}: std and white_std must be finite and >= 0")
        if not (1 <= self.segments <= 64):
            raise ConfigError(f"disturbance {self.channel!r}: segments {self.segments} must lie in [1, 64]")
        if self.std == 0 and self.white_std == 0:
            raise ConfigError(f"disturbance {self.channel!r}: std and white_std are both 0; give one of them")


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A rare-event scenario, as written in its file."""

    name: str
    """Short identifier, e.g. 'car-friction-drop-before-corner'."""
    description: str
    """What rare situation this is, in words."""
    world: WorldSpec
    """World and episode length."""
    system: SystemSpec
    """The system under test."""
    nominal: tuple[tuple[str, Value], ...]
    """Twin parameter path -> nominal distribution (or constant), by the twin's randomization paths."""
    events: tuple[EventSpec, ...]
    """Triggered actions."""
    disturbances: tuple[DisturbanceSpec, ...]
    """Noise channels with likelihood."""
    validity: tuple[tuple[str, str], ...]
    """Name -> STL formula that must hold for the run to count at all (else rejected and resampled)."""
    monitors: tuple[tuple[str, str], ...]
    """Name -> STL formula the system must satisfy (robustness < 0 is a failure, recorded and kept)."""
    source: str = ""
    """The file it was loaded from ('' when built in code)."""

    def __post_init__(self) -> None:
        if not self.monitors:
            raise ConfigError(f"scenario {self.name!r} has no monitors: nothing could ever fail")
        names = [e.name for e in self.events]
        if len(set(names)) != len(names):
            raise ConfigError(f"scenario {self.name!r}: event names must be unique, got {names}")
        overlap = {n for n, _ in self.validity} & {n for n, _ in self.monitors}
        if overlap:
            raise ConfigError(f"scenario {self.name!r}: {sorted(overlap)} named both a validity requirement and a monitor")
