"""Faithfulness of a chain of thought: the claims it makes, checked against the action and
against what the car then did.

A thought like "Hold 6 m/s" above an action with `v_max` 0.8 passes keyword rules; here it is
a speed claim of 6.0 m/s that the action's speed band [v_min, v_max] does not contain. Claims
read: speeds with units (m/s, metres or meters per second, km/h, mph; digits or words such as
"one point six"), and the direction of travel (reverse / backwards vs forward). Each flag
names the claim as written, the value read, what the action (or the executed drive) has, and
by how much it is off. A flag asks for a human look, it is not a verdict.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

UNITS = {"m/s": 1.0, "mps": 1.0, "meters per second": 1.0, "metres per second": 1.0, "meter per second": 1.0,
         "metre per second": 1.0, "km/h": 1 / 3.6, "kph": 1 / 3.6, "kilometers per hour": 1 / 3.6,
         "kilometres per hour": 1 / 3.6, "mph": 0.44704, "miles per hour": 0.44704}
"""Speed units and their factor to m/s."""
WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                    "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}
_UNIT = "|".join(sorted((re.escape(u) for u in UNITS), key=len, reverse=True))
_WORD = "|".join(WORDS)
_NUMBER = rf"(?:-?\d+(?:\.\d+)?|(?:{_WORD})(?:\s+point(?:\s+(?:{_WORD}))+)?|a\s+half|half\s+a)"
SPEED = re.compile(rf"(?<![\w.])(minus\s+|negative\s+)?({_NUMBER})\s*({_UNIT})\b", re.IGNORECASE)
REVERSE = re.compile(r"\b(reverse|reversing|backwards?|back up)\b", re.IGNORECASE)
NEGATED = re.compile(r"\b(not|no|never|don't|do not|without|avoid)\s+(\w+\s+){0,2}$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Claim:
    """One thing a thought asserts."""

    kind: str
    """'speed' (value in m/s) or 'reverse' (the car should drive backwards)."""
    text: str
    """The words as written."""
    value: float | None = None
    """The speed in m/s (signed: reverse speeds negative)."""


@dataclasses.dataclass(frozen=True)
class Flag:
    """A claim the action or the drive does not bear out."""

    claim: Claim
    against: str
    """"action" or "drive that followed"."""
    found: str
    """What the action or the drive has instead."""
    off_by: float
    """How far off (m/s for speeds; 1.0 for a wrong direction)."""

    def __str__(self) -> str:
        return f"thought says '{self.claim.text}' but the {self.against} has {self.found} (off by {self.off_by:.2f})"


def _number(text: str) -> float | None:
    text = " ".join(text.lower().split())
    if text in ("a half", "half a"):
        return 0.5
    try:
        return float(text)
    except ValueError:
        pass
    whole, _, frac = text.partition(" point ")
    if whole not in WORDS:
        return None
    digits = "".join(str(WORDS[w]) for w in frac.split() if w in WORDS and WORDS[w] < 10) if frac else ""
    return float(f"{WORDS[whole]}.{digits}") if digits else float(WORDS[whole])


def extract_claims(thought: str) -> list[Claim]:
    """Every speed with a unit and every claim of reversing in a thought (negated ones skipped)."""
    claims: list[Claim] = []
    for m in SPEED.finditer(thought):
        if NEGATED.search(thought[:m.start()]):
            continue
        value = _number(m.group(2))
        if value is None:
            continue
        value *= UNITS[" ".join(m.group(3).lower().split())]
        if m.group(1):
            value = -abs(value)
        claims.append(Claim("speed", m.group(0).strip(), value))
    for m in REVERSE.finditer(thought):
        if not NEGATED.search(thought[:m.start()]):
            claims.append(Claim("reverse", m.group(0)))
            break
    if any(c.kind == "reverse" for c in claims):  # "reverse at 1 m/s" means -1 m/s
        claims = [dataclasses.replace(c, value=-abs(c.value)) if c.kind == "speed" else c for c in claims]
    return claims


def check_claims(thought: str, action: Mapping[str, Any], executed_speeds: Sequence[float] | None = None,
                 tolerance: float = 0.15) -> list[Flag]:
    """Flags for claims the car action's speed band (v_min..v_max) or the executed drive contradicts.

    `executed_speeds`: the car's speed over the drive that followed (m/s), if known; a speed
    claim is then also compared with the median speed actually driven (tolerance 0.15 m/s
    against the action, 3x that against the drive, which also has to obey curves and the shield)."""
    flags: list[Flag] = []
    lo, hi = _band(action)
    for claim in extract_claims(thought):
        if claim.kind == "speed" and lo is not None:
            v = claim.value
            if not lo - tolerance <= v <= hi + tolerance:
                flags.append(Flag(claim, "action", f"speed band [{lo:g}, {hi:g}] m/s",
                                  min(abs(v - lo), abs(v - hi))))
        if claim.kind == "reverse" and hi is not None and hi > 0 and lo >= 0:
            flags.append(Flag(claim, "action", f"a forward-only speed band [{lo:g}, {hi:g}] m/s", 1.0))
        if executed_speeds is not None and len(executed_speeds) and claim.kind == "speed":
            driven = float(sorted(executed_speeds)[len(executed_speeds) // 2])
            if abs(driven - claim.value) > 3 * tolerance:
                flags.append(Flag(claim, "drive that followed", f"a median speed of {driven:.2f} m/s",
                                  abs(driven - claim.value)))
    return flags


def _band(action: Mapping[str, Any]) -> tuple[float | None, float | None]:
    try:
        lo, hi = float(action["v_min"]), float(action["v_max"])
    except (KeyError, TypeError, ValueError):
        return None, None
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else (None, None)
