"""The factory cell's shield: speed-and-separation for the arm, belt stop on jam, no stray releases.

Same contract as the car's shield: commands that satisfy the constraints pass unchanged,
unsafe ones are changed as little as possible (arm slowed to the allowed speed, belt
stopped, release withheld), a protective stop is the backup when the person is too close
for any motion, and every change is reported with its reason.
"""

from __future__ import annotations

import dataclasses
import math

from safety.factory.spec import FactorySafetySpec
from safety.verdict import BACKUP, MODIFIED, PASSED, Verdict
from twin.factory.command import FactoryCommand


@dataclasses.dataclass(frozen=True)
class FactoryShieldState:
    """What the shield needs to know about the cell now."""

    separation: float
    """Smallest distance between the person and the robot (m); inf when nobody is in view."""
    human_speed: float | None = None
    """Measured speed of the person toward the robot (m/s); None: assume the spec's."""
    jammed: bool = False
    """A part is stuck on the belt."""
    holding: bool = False
    """The gripper holds a part."""
    over_bin: bool = False
    """The gripper is above a bin."""


class FactoryShield:
    def __init__(self, spec: FactorySafetySpec | None = None) -> None:
        self.spec = spec or FactorySafetySpec()

    def filter(self, st: FactoryShieldState, command: FactoryCommand) -> Verdict:
        sp = self.spec
        proposed = {"arm_speed": command.arm_speed, "belt_speed": command.belt_speed,
                    "release": float(command.release)}
        reasons: list[str] = []
        arm, belt, release = command.arm_speed, command.belt_speed, bool(command.release)
        if not math.isfinite(arm):
            reasons.append("invalid command: arm speed not finite")
            arm = 0.0
        if not math.isfinite(belt):
            reasons.append("invalid command: belt speed not finite")
            belt = 0.0
        separation = st.separation if math.isfinite(st.separation) or st.separation == math.inf else 0.0
        if math.isnan(st.separation):
            reasons.append("separation unknown: treated as zero")
        v_allowed = sp.max_robot_speed(separation, st.human_speed)
        kind = PASSED
        if abs(arm) > v_allowed:
            if v_allowed <= 0.0:
                reasons.append(f"backup: protective stop (separation {separation:.2f} m)")
                kind = BACKUP
            else:
                reasons.append(f"speed and separation: arm {abs(arm):.3f} -> {v_allowed:.3f} m/s")
            arm = math.copysign(v_allowed, arm)
        if abs(belt) > sp.belt_speed_max:
            reasons.append("belt speed limit")
            belt = math.copysign(sp.belt_speed_max, belt)
        if st.jammed and belt != 0.0:
            reasons.append("belt stop on jam")
            belt = 0.0
        if release and st.holding and not st.over_bin:
            reasons.append("release withheld: not over a bin")
            release = False
        if reasons and kind == PASSED:
            kind = MODIFIED
        margin = separation - sp.protective_separation(abs(arm), st.human_speed) if separation != math.inf else math.inf
        executed = {"arm_speed": arm, "belt_speed": belt, "release": float(release)}
        return Verdict(kind, proposed, executed, tuple(reasons), {"separation": margin})
