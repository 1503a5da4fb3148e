"""The 11 tunable MPC parameters (RobotxR1's set): a typed table of name, range, default.

This table is what a language model sees in its prompt and what its answer is checked
against. `MPCParams.from_dict` is strict (unknown name or out-of-range value -> error
naming it); `clamp_dict` is the lenient path for a running loop: it keeps valid entries,
clamps the rest into range, fills gaps with defaults, and reports every change.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from twin.core.config import ConfigError


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One row of the table."""

    name: str
    low: float
    high: float
    default: float
    unit: str
    meaning: str


PARAM_TABLE: tuple[ParamSpec, ...] = (
    ParamSpec("qv", 0.0, 100.0, 10.0, "-", "weight on tracking the target speed"),
    ParamSpec("qn", 0.0, 100.0, 20.0, "-", "weight on tracking the racing line laterally"),
    ParamSpec("qalpha", 0.0, 100.0, 7.0, "-", "weight on heading error to the track"),
    ParamSpec("qac", 0.0, 10.0, 0.01, "-", "weight on acceleration effort"),
    ParamSpec("qddelta", 0.0, 10.0, 0.1, "-", "weight on steering rate effort"),
    ParamSpec("alat_max", 0.5, 20.0, 10.0, "m/s^2", "lateral acceleration limit"),
    ParamSpec("a_min", -10.0, -0.1, -10.0, "m/s^2", "strongest braking"),
    ParamSpec("a_max", 0.1, 10.0, 10.0, "m/s^2", "strongest acceleration"),
    ParamSpec("v_min", -5.0, 10.0, 1.0, "m/s", "lowest speed; negative allows reversing"),
    ParamSpec("v_max", -5.0, 12.0, 12.0, "m/s", "highest speed; negative forces reversing"),
    ParamSpec("track_safety_margin", 0.0, 1.0, 0.3, "m", "extra distance kept from the walls"),
)
"""Ranges bound what the MPC accepts; defaults are RobotxR1's."""

SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAM_TABLE}
NAMES: tuple[str, ...] = tuple(SPECS)


@dataclasses.dataclass(frozen=True)
class MPCParams:
    """A full, valid parameter set (see PARAM_TABLE for meaning and ranges)."""

    qv: float = SPECS["qv"].default
    qn: float = SPECS["qn"].default
    qalpha: float = SPECS["qalpha"].default
    qac: float = SPECS["qac"].default
    qddelta: float = SPECS["qddelta"].default
    alat_max: float = SPECS["alat_max"].default
    a_min: float = SPECS["a_min"].default
    a_max: float = SPECS["a_max"].default
    v_min: float = SPECS["v_min"].default
    v_max: float = SPECS["v_max"].default
    track_safety_margin: float = SPECS["track_safety_margin"].default

    def __post_init__(self) -> None:
        for spec in PARAM_TABLE:
            value = getattr(self, spec.name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not spec.low <= value <= spec.high:
                raise ConfigError(
                    f"MPC parameter {spec.name} = {value!r} is outside [{spec.low}, {spec.high}]"
                )
        if self.v_min > self.v_max:
            raise ConfigError(f"MPC parameters: v_min {self.v_min} > v_max {self.v_max}; v_min must not exceed v_max")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MPCParams:
        """Strict: every key must be a parameter name; missing ones take their default."""
        unknown = sorted(set(values) - set(NAMES))
        if unknown:
            raise ConfigError(f"unknown MPC parameter(s) {unknown}; valid names: {list(NAMES)}")
        return cls(**{k: float(v) for k, v in values.items()})

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def as_array(self) -> list[float]:
        return [getattr(self, n) for n in NAMES]


DEFAULT = MPCParams()


def clamp_dict(values: Mapping[str, Any]) -> tuple[MPCParams, dict[str, str]]:
    """Lenient: a valid parameter set from any mapping, and a note for each entry changed.

    Unknown keys are dropped, non-numeric or non-finite values take the default,
    out-of-range values are clamped, and v_min > v_max is resolved by swapping.
    """
    notes: dict[str, str] = {}
    out = DEFAULT.as_dict()
    for key, raw in values.items():
        if key not in SPECS:
            notes[key] = "unknown name, ignored"
            continue
        spec = SPECS[key]
        try:
            value = float(raw)
        except (TypeError, ValueError):
            notes[key] = f"{raw!r} is not a number, default {spec.default} used"
            continue
        if not math.isfinite(value):
            notes[key] = f"{raw!r} is not finite, default {spec.default} used"
            continue
        clamped = min(spec.high, max(spec.low, value))
        if clamped != value:
            notes[key] = f"{value} clamped to {clamped} (range [{spec.low}, {spec.high}])"
        out[key] = clamped
    if out["v_min"] > out["v_max"]:
        notes["v_min/v_max"] = f"v_min {out['v_min']} > v_max {out['v_max']}, swapped"
        out["v_min"], out["v_max"] = out["v_max"], out["v_min"]
    return MPCParams(**out), notes


def table_text() -> str:
    """The table as a language model reads it in a prompt."""
    rows = ["name | min | max | default | meaning"]
    rows += [f"{p.name} | {p.low:g} | {p.high:g} | {p.default:g} | {p.meaning} ({p.unit})" for p in PARAM_TABLE]
    return "\n".join(rows)
