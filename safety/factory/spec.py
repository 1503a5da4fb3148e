"""The factory cell's declared constraints, after ISO/TS 15066 speed-and-separation monitoring.

Protective separation distance (ISO/TS 15066, 5.5.4):
    S_p = v_h (T_r + T_s) + v_r T_r + S_s + C + Z_d + Z_r
with the person's speed v_h, the robot's speed v_r, reaction time T_r, stopping time T_s,
the robot's stopping distance S_s (here v_r T_s / 2 for a constant deceleration), the
intrusion distance C and the measurement uncertainties Z_d (person) and Z_r (robot). The
robot may move at v_r only while the separation S >= S_p, hence
    v_r <= (S - v_h (T_r + T_s) - C - Z_d - Z_r) / (T_r + T_s / 2),
and must stop (protective stop) when that bound is <= 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from twin.core.config import bounded, check_bounds, from_mapping


@dataclasses.dataclass(frozen=True)
class FactorySafetySpec:
    """Hard constraints of the robot cell and the line."""

    human_speed: float = bounded(1.6, 0.0, 5.0)
    """Speed assumed for a person walking toward the robot (m/s); ISO 13855's 1.6 m/s."""
    reaction_time: float = bounded(0.1, 0.0, 2.0)
    """T_r: from the person being sensed to the robot starting to stop (s)."""
    stopping_time: float = bounded(0.3, 0.0, 5.0)
    """T_s: from starting to stop to standing still (s)."""
    intrusion: float = bounded(0.2, 0.0, 2.0)
    """C: how far a body part may reach past the sensed position (m)."""
    person_uncertainty: float = bounded(0.1, 0.0, 2.0)
    """Z_d: uncertainty of the sensed person position (m)."""
    robot_uncertainty: float = bounded(0.02, 0.0, 1.0)
    """Z_r: uncertainty of the robot position (m)."""
    arm_speed_max: float = bounded(1.0, 0.01, 10.0)
    """Arm speed limit when nobody is near (m/s)."""
    belt_speed_max: float = bounded(0.5, 0.01, 5.0)
    """Belt speed limit (m/s)."""
    control_period: float = bounded(0.05, 0.0, 1.0)
    """Time a command is held before the next check (s): person and robot close in for this long too."""

    def __post_init__(self) -> None:
        check_bounds(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FactorySafetySpec:
        """Strict: unknown keys and non-numbers raise ConfigError naming the field."""
        return from_mapping(cls, data)

    def protective_separation(self, robot_speed: float, human_speed: float | None = None) -> float:
        """S_p for a robot speed (m)."""
        v_h = self.human_speed if human_speed is None else human_speed
        t_r, t_s = self.reaction_time, self.stopping_time
        return (v_h * (t_r + t_s) + robot_speed * t_r + robot_speed * t_s / 2 + self.intrusion
                + self.person_uncertainty + self.robot_uncertainty)

    def max_robot_speed(self, separation: float, human_speed: float | None = None) -> float:
        """Largest arm speed allowed now, so that S >= S_p still holds at the next check (0: stop).

        Over the control period both may close in at full speed, so that closing is taken off first."""
        v_h = self.human_speed if human_speed is None else max(human_speed, 0.0)
        t_r, t_s, dt = self.reaction_time, self.stopping_time, self.control_period
        room = (separation - v_h * (t_r + t_s + dt) - self.intrusion - self.person_uncertainty
                - self.robot_uncertainty)
        if room <= 0:
            return 0.0
        return min(self.arm_speed_max, room / (t_r + t_s / 2 + dt))

