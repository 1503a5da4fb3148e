"""Optional audit logging of the decisions a trainer samples (one helper for every trainer)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safety.audit import keys
from safety.audit.log import AuditLog
from safety.audit.records import decision_body
from twin.core.contracts import Decision, Observation


def open_training_log(out: Path, enabled: bool) -> AuditLog | None:
    """out/audit.log signed with a key kept beside it (created on first use), or None."""
    if not enabled:
        return None
    private, public = out / "audit-key.pem", out / "audit-key.pub"
    key = keys.load_private(private) if private.exists() else keys.generate(private, public)
    return AuditLog(out / "audit.log", key, repair=True)


def log_sample(log: AuditLog | None, obs: Observation, raw: str, parsed: Any, policy_id: str,
               rewards: Mapping[str, float], cost: float, context: Mapping[str, Any]) -> None:
    if log is None:
        return
    decision = Decision(action=parsed.action, policy_id=policy_id, thought=parsed.thought, raw_output=raw,
                        parse_status=parsed.status)
    log.append("decision", decision_body(obs, decision, executed=parsed.action, costs={"total": cost},
                                         context={**context, "rewards": dict(rewards)}))
