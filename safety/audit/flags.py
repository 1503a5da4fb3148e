"""Every flag an auditor sees on one logged decision, from one function.

A decision record (safety.audit.records.decision_body) holds the thought, the action and,
when the caller knew it, the outcome: what the car then did. The flags are the keyword
rules of `contradictions` (for what the claims reader does not cover) and the claims of
`claims` checked against the action and against the outcome. The CLI, the index and the
HTML report all call `decision_flags`, so they count the same flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from safety.audit.claims import ExecutedTrace, check_claims
from safety.audit.contradictions import RULES, contradictions

CLAIMED_QUANTITIES = frozenset({"v_max", "v_min"})
"""Action fields whose keyword rules the claims reader replaces (it reads slower/faster and
reverse with their numbers and negations): flagged once, not twice."""
KEYWORD_RULES = tuple(rule for rule in RULES if rule.quantity not in CLAIMED_QUANTITIES)


def executed_from(outcome: Any) -> ExecutedTrace | None:
    """The drive a record's `outcome` describes, or None when there is none or it is malformed
    (an audit reads old and foreign logs: a bad outcome is not judged, never a crash)."""
    if not isinstance(outcome, Mapping):
        return None
    fields = {name: outcome.get(name) for name in ("speeds", "lateral_offsets", "curvatures", "min_clearance",
                                                   "reference_speed") if outcome.get(name) is not None}
    try:
        return ExecutedTrace(**fields)
    except (TypeError, ValueError):
        return None


def decision_flags(body: Mapping[str, Any], reference: Mapping[str, Any] | None = None) -> list[str]:
    """Why this decision's thought disagrees with its action or with what followed (empty: none).
    `reference`: the action slower/faster is judged against (e.g. the default MPC parameters)."""
    thought, action = str(body.get("thought") or ""), body.get("action")
    if not isinstance(action, Mapping):
        return []
    flags = contradictions(thought, action, reference or {}, KEYWORD_RULES)
    flags += [str(f) for f in check_claims(thought, action, executed=executed_from(body.get("outcome")),
                                           reference=reference)]
    return flags
