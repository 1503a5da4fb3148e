"""What every shield answers, and the running count of its interventions.

One verdict type for every world's shield, so the control loop, the bridge's robot-side
runtime and the audit log treat a car shield and a factory shield alike.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from typing import Any

PASSED = "passed"
MODIFIED = "modified"
BACKUP = "backup"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The shield's decision about one proposed command."""

    kind: str
    """'passed' (unchanged), 'modified' (minimally changed) or 'backup' (backup controller took over)."""
    proposed: Mapping[str, float]
    """The command as proposed."""
    executed: Mapping[str, float]
    """The command to execute."""
    reasons: tuple[str, ...] = ()
    """Why it was changed, one entry per constraint that acted."""
    margins: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Robustness of the executed command per constraint (>= 0 means satisfied, in the constraint's unit)."""

    @property
    def intervened(self) -> bool:
        return self.kind != PASSED

    def as_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "proposed": dict(self.proposed), "executed": dict(self.executed),
                "reasons": list(self.reasons), "margins": dict(self.margins)}


class InterventionCounter:
    """Counts verdicts by kind and by reason; every intervention is counted, none dropped."""

    def __init__(self) -> None:
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.by_reason: collections.Counter[str] = collections.Counter()

    def add(self, verdict: Verdict) -> None:
        self.by_kind[verdict.kind] += 1
        for reason in verdict.reasons:
            self.by_reason[reason.split(":")[0]] += 1

    @property
    def interventions(self) -> int:
        return self.by_kind[MODIFIED] + self.by_kind[BACKUP]

    def as_dict(self) -> dict[str, Any]:
        return {"steps": sum(self.by_kind.values()), "interventions": self.interventions,
                "by_kind": dict(self.by_kind), "by_reason": dict(self.by_reason)}


@dataclasses.dataclass(frozen=True)
class StepCosts:
    """Constraint accounting of one step, by constraint name (the same for every world)."""

    indicators: dict[str, float]
    """1.0 where the constraint was violated this step (or the count of violations, e.g. parts dropped)."""
    magnitudes: dict[str, float]
    """How far past the limit (0 when satisfied)."""
    margins: dict[str, float]
    """Robustness: distance inside the limit (negative when violated)."""
