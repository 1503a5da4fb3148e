"""The policy interface every part of Shakedown shares: Observation -> Policy -> Decision.

A VLM agent, a scripted expert, an SB3 policy and a remote policy behind the bridge are
all `Policy`s; nothing downstream knows which one it has. This module sits at the bottom
of the layers and imports nothing of Shakedown's (as Brax keeps its Protocols in
`training/types.py`).

Equality is by value, arrays included (`same_value`): two Observations of the same seed
compare equal, which is what gymnasium's determinism checks and replay tests need.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np


def same_value(a: Any, b: Any) -> bool:
    """Structural equality for nested data: arrays by shape, dtype and contents, mappings by keys,
    sequences element-wise, NaN equal to NaN (a replayed NaN is the same value)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


@dataclasses.dataclass(frozen=True, eq=False)
class Observation:
    """What a policy may look at; the same type comes from the twin and from the bridge."""

    timestamp: float
    """Simulated (or robot) time of the observation (s)."""
    state: Mapping[str, float]
    """Named scalar state, e.g. speed, lateral offset."""
    image: np.ndarray | None = None
    """Camera frame, (height, width, 3) uint8, if any."""
    lidar: np.ndarray | None = None
    """Lidar ranges (m), if any."""
    instruction: str = ""
    """The task given in words."""
    privileged: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Ground truth for scripted experts and metrics; never put into a learned policy's prompt."""

    def digest(self) -> str:
        """SHA-256 over everything a policy sees (not `privileged`), for the audit log."""
        h = hashlib.sha256()
        h.update(json.dumps({"t": self.timestamp, "state": dict(self.state), "instruction": self.instruction},
                            sort_keys=True, default=float).encode())
        for arr in (self.image, self.lidar):
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Observation):
            return NotImplemented
        return all(same_value(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))

    __hash__ = None  # mutable contents (arrays, dicts): not hashable


@dataclasses.dataclass(frozen=True, eq=False)
class Decision:
    """A policy's answer: the parsed action and how it came about."""

    action: Mapping[str, Any]
    """The parsed, validated action (car: MPC parameters by name)."""
    policy_id: str
    """Which policy decided (model + adapter hash for a learned one)."""
    thought: str = ""
    """The chain of thought written before the action, if any."""
    raw_output: str = ""
    """The model's raw text, if any."""
    parse_status: str = "ok"
    """'ok', or why the action is a fallback (the fallback is always a safe default)."""
    decision_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    """Unique id, the key of this decision in the audit log."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return all(same_value(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))

    __hash__ = None


@runtime_checkable
class Policy(Protocol):
    """Anything that turns an Observation into a Decision."""

    policy_id: str

    def decide(self, observation: Observation) -> Decision: ...
