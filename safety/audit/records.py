"""The body of a decision entry: what an auditor needs to judge one decision."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twin.core.contracts import Decision, Observation


def decision_body(
    observation: Observation,
    decision: Decision,
    executed: Mapping[str, Any],
    shield: Mapping[str, Any] | None = None,
    costs: Mapping[str, float] | None = None,
    frame_sha256: str | None = None,
    context: Mapping[str, Any] | None = None,
    outcome: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Decision id, policy id, observation digest, instruction, chain of thought, raw output,
    parsed and executed action, shield verdict and costs, in one record; `outcome`, when the
    caller knows it, is what the robot then did (the fields of safety.audit.claims.ExecutedTrace:
    speeds, lateral offsets, curvatures, smallest wall clearance, a reference drive's speed), so
    an audit checks the thought's claims against the drive as well as against the action."""
    return {
        "decision_id": decision.decision_id,
        "sim_time": observation.timestamp,
        "policy_id": decision.policy_id,
        "observation_digest": observation.digest(),
        "state": dict(observation.state),
        "instruction": observation.instruction,
        "thought": decision.thought,
        "raw_output": decision.raw_output,
        "parse_status": decision.parse_status,
        "action": dict(decision.action),
        "executed": dict(executed),
        "shield": dict(shield or {}),
        "costs": dict(costs or {}),
        "frame_sha256": frame_sha256,
        "context": dict(context or {}),
        **({"outcome": dict(outcome)} if outcome is not None else {}),
    }
