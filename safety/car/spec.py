"""The car's declared safety constraints: speed zones, lateral acceleration, clearance.

A spec is a frozen dataclass validated where it is built; `from_dict` reads one from
JSON/YAML-like data and rejects unknown or invalid fields with the field's name, so a
typo in a spec file can never silently switch a constraint off.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from twin.core.config import ConfigError, bounded, check_bounds, from_mapping


@dataclasses.dataclass(frozen=True)
class SpeedZone:
    """A stretch of track with its own speed limit."""

    s_start: float
    """Arc length where the zone starts (m)."""
    s_end: float
    """Arc length where it ends (m); may be below s_start for a zone across the start line."""
    v_max: float
    """Speed limit inside the zone (m/s)."""

    def __post_init__(self) -> None:
        for name in ("s_start", "s_end", "v_max"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"SpeedZone.{name} = {value!r} must be a finite number")
        if self.s_start < 0 or self.s_end < 0 or self.v_max <= 0:
            raise ConfigError(f"SpeedZone {self}: s_start, s_end must be >= 0 and v_max > 0")

    def contains(self, s: float, length: float) -> bool:
        s = s % length
        a, b = self.s_start % length, self.s_end % length
        return a <= s < b if a <= b else (s >= a or s < b)


def _zones(items: Any) -> tuple[SpeedZone, ...]:
    try:
        return tuple(SpeedZone(**z) for z in items)
    except TypeError as exc:
        raise ConfigError(f"CarSafetySpec.zones: each zone needs s_start, s_end, v_max ({exc})") from exc


@dataclasses.dataclass(frozen=True)
class CarSafetySpec:
    """Hard constraints on the car's executed commands, and the shield's model of the car."""

    v_max: float = bounded(5.0, 0.1, 30.0)
    """Speed limit everywhere (m/s), forward."""
    v_reverse_max: float = bounded(2.0, 0.0, 10.0)
    """Speed limit in reverse (m/s)."""
    zones: tuple[SpeedZone, ...] = ()
    """Stretches with a lower limit."""
    a_lat_max: float = bounded(6.0, 0.5, 30.0)
    """Lateral acceleration limit of the commanded turn, v^2 tan(steer) / L (m/s^2)."""
    brake_decel: float = bounded(3.5, 0.5, 20.0)
    """Deceleration the shield counts on when braking (m/s^2); below the car's 9.5 and the tyres' grip."""
    reaction_time: float = bounded(0.3, 0.0, 2.0)
    """Time before braking takes full effect (s): actuation delay (<= 0.04 s randomized), the speed
    loop's lag (1 / its gain, about 0.17 s) and steering lag."""
    control_period: float = bounded(0.02, 0.001, 1.0)
    """Time one command is held (s)."""
    clearance: float = bounded(0.06, 0.0, 1.0)
    """Distance the car's footprint must keep from walls and obstacles (m)."""
    wheelbase: float = bounded(0.33, 0.1, 2.0)
    """Wheelbase of the shield's kinematic model (m)."""
    car_length: float = bounded(0.58, 0.1, 3.0)
    """Footprint length (m)."""
    car_width: float = bounded(0.31, 0.1, 2.0)
    """Footprint width (m)."""
    steer_max: float = bounded(0.4189, 0.05, 1.0)
    """Steering limit (rad)."""
    lookahead: float = bounded(6.0, 0.5, 100.0)
    """Longest path the shield checks (m); beyond it counts as free."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if not isinstance(self.zones, tuple) or not all(isinstance(z, SpeedZone) for z in self.zones):
            raise ConfigError("CarSafetySpec.zones must be a tuple of SpeedZone")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CarSafetySpec:
        """Strict: unknown keys and invalid values raise ConfigError naming the field."""
        return from_mapping(cls, data, {"zones": _zones})

    def speed_limit(self, s: float, length: float) -> float:
        """Forward speed limit at arc length s."""
        limits = [z.v_max for z in self.zones if z.contains(s, length)]
        return min([self.v_max, *limits])
