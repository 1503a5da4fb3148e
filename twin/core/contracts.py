"""The policy interface every part of Shakedown shares: Observation -> Policy -> Decision.

A VLM agent, a scripted expert, an SB3 policy and a remote policy behind the bridge are
all `Policy`s; nothing downstream knows which one it has.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np


@dataclasses.dataclass(frozen=True)
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


@dataclasses.dataclass(frozen=True)
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


@runtime_checkable
class Policy(Protocol):
    """Anything that turns an Observation into a Decision."""

    policy_id: str

    def decide(self, observation: Observation) -> Decision: ...
