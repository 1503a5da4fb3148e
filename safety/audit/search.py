"""Finding entries in an audit log: by intervention, cost, words in the thought, policy, time."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safety.audit.log import iter_entries


@dataclasses.dataclass(frozen=True)
class Query:
    """All given criteria must hold; an unset one matches everything."""

    kind: str | None = "decision"
    """Entry kind ('decision', 'checkpoint', 'repair', ...); None for any."""
    interventions: bool = False
    """Only decisions where the shield changed a command."""
    min_cost: float | None = None
    """Only decisions whose summed costs reach this."""
    thought: str | None = None
    """Only decisions whose chain of thought contains this phrase (case-insensitive)."""
    policy: str | None = None
    """Only decisions of this policy id (prefix match)."""
    since: float | None = None
    """Wall-clock time (Unix s) from which to include."""
    until: float | None = None
    """Wall-clock time (Unix s) up to which to include."""


def intervened(body: dict[str, Any]) -> bool:
    shield = body.get("shield") or {}
    return bool(shield.get("interventions", 0)) or shield.get("kind") in ("modified", "backup")


def total_cost(body: dict[str, Any]) -> float:
    total = 0.0
    for v in (body.get("costs") or {}).values():
        try:
            total += float(v)
        except (TypeError, ValueError):
            continue
    return total


def search(path: Path | str, q: Query) -> Iterator[dict[str, Any]]:
    for entry in iter_entries(path):
        body = entry.get("body") or {}
        if q.kind is not None and entry.get("kind") != q.kind:
            continue
        if q.interventions and not intervened(body):
            continue
        if q.min_cost is not None and total_cost(body) < q.min_cost:
            continue
        if q.thought is not None and q.thought.lower() not in str(body.get("thought", "")).lower():
            continue
        if q.policy is not None and not str(body.get("policy_id", "")).startswith(q.policy):
            continue
        t = entry.get("time", 0.0)
        if (q.since is not None and t < q.since) or (q.until is not None and t > q.until):
            continue
        yield entry
