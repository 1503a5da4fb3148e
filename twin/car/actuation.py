"""How commands reach the car: delay, motor gain, steering offset, and input checks.

Commands are (speed, steering angle), as an F1TENTH car's motor controller takes them.
They wait in a queue for `delay_s` of simulated time; a speed loop then turns the speed
error into acceleration (scaled by `motor_gain`), and the steering servo moves toward
the commanded angle plus `steer_offset` at the vehicle's rate limit.
"""

from __future__ import annotations

import collections
import dataclasses
import math

from twin.core.config import bounded, check_bounds


@dataclasses.dataclass(frozen=True)
class ActuationParams:
    """Actuator imperfections."""

    delay_s: float = bounded(0.0, 0.0, 0.5)
    """Time between a command and its effect (s)."""
    motor_gain: float = bounded(1.0, 0.3, 2.0)
    """Multiplier on the acceleration the speed loop asks for."""
    steer_offset: float = bounded(0.0, -0.1, 0.1)
    """Constant steering misalignment added to every command (rad)."""
    speed_gain: float = bounded(6.0, 0.5, 50.0)
    """Proportional gain of the speed loop (1/s): accel = gain * (v_cmd - v)."""

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclasses.dataclass(frozen=True)
class Command:
    """A low-level command to the car."""

    speed: float
    """Target speed (m/s), negative for reverse."""
    steer: float
    """Target steering angle (rad), positive left."""


def sanitize(command: Command, v_min: float, v_max: float, steer_max: float) -> tuple[Command, dict[str, str]]:
    """The command clamped to the car's limits, and a note per field that had to change.

    NaN or infinite values become a stop (speed 0, steering 0) rather than being passed on.
    """
    fixes: dict[str, str] = {}
    speed, steer = command.speed, command.steer
    if not math.isfinite(speed):
        fixes["speed"] = f"{speed} -> 0.0 (not finite)"
        speed = 0.0
    if not math.isfinite(steer):
        fixes["steer"] = f"{steer} -> 0.0 (not finite)"
        steer = 0.0
    if not v_min <= speed <= v_max:
        clamped = min(v_max, max(v_min, speed))
        fixes["speed"] = f"{speed:.3f} -> {clamped:.3f} (outside [{v_min}, {v_max}])"
        speed = clamped
    if abs(steer) > steer_max:
        clamped = math.copysign(steer_max, steer)
        fixes["steer"] = f"{steer:.3f} -> {clamped:.3f} (outside +-{steer_max})"
        steer = clamped
    return Command(speed, steer), fixes


class DelayLine:
    """Holds commands until their delay has passed; the newest due command is in effect."""

    def __init__(self, delay_s: float, initial: Command) -> None:
        self.delay_s = delay_s
        self._queue: collections.deque[tuple[float, Command]] = collections.deque()
        self.active = initial

    def push(self, t: float, command: Command) -> None:
        self._queue.append((t + self.delay_s, command))

    def at(self, t: float) -> Command:
        # A tiny tolerance so a delay that is a whole number of steps is not off by one step.
        while self._queue and self._queue[0][0] <= t + 1e-9:
            self.active = self._queue.popleft()[1]
        return self.active
