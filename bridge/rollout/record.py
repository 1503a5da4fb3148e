"""The rollout's record: a signed audit log of every decision, and the ladder's state read back from it alone.

The log (`rollout.log`, a `safety.audit.log.AuditLog` with its own Ed25519 key beside it)
holds, in order:
- `rollout_start`: the plan (name, hash, content), candidate, incumbent and rungs;
- `rollout_confirmation`: a flagged decision an operator (or the plan's automatic answer)
  approved or denied;
- `rollout_promote`, `rollout_pause`, `rollout_rollback`: the decision on a rung, who took it
  (the gates, or an operator by name) and its evidence: every gate's metric, value,
  threshold and window, the band checks, the plan hash, and the rung's result file with its
  SHA-256.
- `rollout_witnessed`: the ladder co-signed a rung's robot audit log into its witness store
  (`witness/ladder/`): the log's path, key id, tree size and root, and the witness key id.
Each entry is followed at once by a signed checkpoint, so every decision is signed the
moment it is taken. `read_state` verifies the log (strictly: every entry signed, the head
present; and against the robot's witness store when there is one, so a log cut back or
rewritten behind the robot's back is tampering) and folds its entries into a `LadderState`;
it reads nothing else, so `status` needs the log and its public key only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from safety.audit import keys as audit_keys
from safety.audit.log import AuditLog, iter_entries
from safety.audit.verify import TAMPERING, VerifyReport, verify

LOG_FILE, KEY_FILE, PUBLIC_FILE = "rollout.log", "rollout-key.pem", "rollout-key.pub"
LADDER_WITNESS, ROBOT_WITNESS = Path("witness/ladder"), Path("witness/robot")
"""Witness stores in the rollout's folder: the ladder's (of the robots' logs), the emulated robot's (of rollout.log)."""
START, CONFIRMATION, WITNESSED = "rollout_start", "rollout_confirmation", "rollout_witnessed"
DECISION_KINDS = {"promote": "rollout_promote", "pause": "rollout_pause", "rollback": "rollout_rollback"}
RUNNING, PAUSED, COMPLETE, ROLLED_BACK = "running", "paused", "complete", "rolled-back"


class RolloutError(ValueError):
    """The ladder cannot do what was asked in its current state, or its record does not hold; the message says why."""


@dataclasses.dataclass(frozen=True)
class LadderDecision:
    """One promotion, pause or rollback, as signed."""

    seq: int
    """Its entry in the log."""
    time: float
    """Unix time it was taken."""
    action: str
    """promote, pause or rollback."""
    rung: str
    """The rung it judged."""
    to: str | None
    """After a promotion: the next rung (None: the ladder is complete)."""
    by: str
    """'gates', or 'operator:<name>'."""
    reason: str
    """Why, in words (the gates that decided it, or the operator's reason)."""
    evidence: dict[str, Any]
    """What it rests on: gates, band, metrics, windows, plan hash, the rung's result file and its SHA-256."""


@dataclasses.dataclass(frozen=True)
class LadderState:
    """Where a rollout stands, rebuilt from its log."""

    plan_name: str
    """The plan's name."""
    plan_hash: str
    """SHA-256 of the plan's content: a log belongs to one plan."""
    candidate: str
    """The policy climbing the ladder."""
    incumbent: str
    """The policy it would replace."""
    rungs: tuple[str, ...]
    """The plan's rungs, in order."""
    status: str
    """running (at `rung`, next to run), paused (at `rung`), complete, or rolled-back (from `rung`)."""
    rung: str
    """The rung the status refers to."""
    decisions: tuple[LadderDecision, ...]
    """Every promotion, pause and rollback, in order."""
    confirmations: int
    """Flagged decisions answered."""
    sim_metrics: dict[str, float | None]
    """What the sim rung measured (the sim-to-real band's reference)."""
    incumbent_metrics: dict[str, float | None]
    """What the incumbent's drive measured while it drove the shadow rung (gates relative to it)."""
    entries: int
    """Entries in the log."""

    @property
    def driving(self) -> str:
        """The policy that drives the robot in normal service now."""
        return self.candidate if self.status == COMPLETE else self.incumbent

    def summary(self) -> str:
        where = {RUNNING: f"running: next rung {self.rung}", PAUSED: f"PAUSED at {self.rung} (an operator decides: "
                 "promote or rollback)", COMPLETE: "COMPLETE: the candidate reached full",
                 ROLLED_BACK: f"ROLLED BACK at {self.rung}"}[self.status]
        return (f"rollout {self.plan_name} (plan {self.plan_hash[:12]}): {self.candidate} replacing {self.incumbent}; "
                f"{where}; {len(self.decisions)} decisions signed; {self.driving} drives")


def fold(entries: Iterable[Mapping[str, Any]]) -> LadderState:
    """The state a sequence of log entries describes; RolloutError at an entry out of sequence."""
    state: LadderState | None = None
    for entry in entries:
        kind, body = entry["kind"], entry["body"]
        if kind == "checkpoint":
            continue
        if state is None:
            if kind != START:
                raise RolloutError(f"entry {entry['seq']}: a rollout log starts with {START}, not {kind}")
            state = LadderState(body["plan_name"], body["plan_hash"], body["candidate"], body["incumbent"],
                                tuple(body["rungs"]), RUNNING, body["rungs"][0], (), 0, {}, {}, 0)
            continue
        if kind == CONFIRMATION:
            state = dataclasses.replace(state, confirmations=state.confirmations + 1)
        elif kind in DECISION_KINDS.values():
            state = _apply(state, entry)
        elif kind == START:
            raise RolloutError(f"entry {entry['seq']}: a second {START} in one log; one rollout per log")
    if state is None:
        raise RolloutError("the rollout log holds no rollout_start entry")
    return state


def _apply(state: LadderState, entry: Mapping[str, Any]) -> LadderState:
    body = entry["body"]
    action = body["action"]
    if body["rung"] != state.rung or state.status in (ROLLED_BACK,) or \
            (state.status == COMPLETE and action != "rollback") or (state.status == PAUSED and action == "pause"):
        raise RolloutError(f"entry {entry['seq']}: {action} of {body['rung']} does not follow from the state before it "
                           f"({state.status} at {state.rung})")
    decision = LadderDecision(entry["seq"], entry["time"], action, body["rung"], body.get("to"), body["by"],
                              body["reason"], body.get("evidence", {}))
    changes: dict[str, Any] = {"decisions": (*state.decisions, decision)}
    if body["rung"] == "sim" and action == "promote":
        changes["sim_metrics"] = dict(decision.evidence.get("metrics", {}))
    if body["rung"] == "shadow" and action == "promote":
        changes["incumbent_metrics"] = dict((decision.evidence.get("robot") or {}).get("incumbent_metrics", {}))
    if action == "promote":
        changes.update(status=COMPLETE if decision.to is None else RUNNING, rung=decision.to or state.rung)
    elif action == "pause":
        changes["status"] = PAUSED
    else:
        changes["status"] = ROLLED_BACK
    return dataclasses.replace(state, **changes)


def _public(out: Path, key: Ed25519PublicKey | Path | str | None) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PublicKey):
        return key
    path = Path(key) if key else out / PUBLIC_FILE
    if not path.exists():
        raise RolloutError(f"no public key at {path}; pass the rollout's trusted public key")
    return audit_keys.load_public(path)


def robot_witness(out: Path | str, witness: Path | str | None = None) -> Path | None:
    """The witness store to check the rollout log against: `witness` if given, else the emulated robot's in
    `out` if it exists (a real robot's store lives on the robot: pass a copy of it)."""
    if witness is not None:
        return Path(witness)
    store = Path(out) / ROBOT_WITNESS
    return store if store.exists() else None


def verify_log(out: Path | str, key: Ed25519PublicKey | Path | str | None = None,
               witness: Path | str | None = None) -> VerifyReport:
    """The rollout log in `out` verified strictly, and against the robot's witness store (`robot_witness`)."""
    out = Path(out)
    log = out / LOG_FILE
    if not log.exists():
        raise RolloutError(f"{log} does not exist: no rollout was started in {out}")
    return verify(log, _public(out, key), witness=robot_witness(out, witness))


def read_state(out: Path | str, key: Ed25519PublicKey | Path | str | None = None,
               witness: Path | str | None = None) -> LadderState:
    """The ladder's state from the log in `out` alone, after verifying it (`verify_log`; RolloutError if it
    does not verify: TAMPERING when its history does not hold, e.g. it was cut back behind the robot's back)."""
    report = verify_log(out, key, witness)
    if not report.ok:
        what = "TAMPERING: " if report.problem is not None and report.problem.kind == TAMPERING else ""
        raise RolloutError(f"{what}the rollout log does not verify, so its state cannot be trusted: {report.summary()}")
    return fold(iter_entries(Path(out) / LOG_FILE))


class RolloutLog:
    """The writer: opens (verifying first) or starts the log in `out`; every decision is signed at once."""

    def __init__(self, out: Path | str) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / LOG_FILE
        private, public = self.out / KEY_FILE, self.out / PUBLIC_FILE
        if self.path.exists():
            report = verify(self.path, _public(self.out, None))
            if not report.ok:
                raise RolloutError(f"the rollout log does not verify; nothing is appended to it: {report.summary()}")
            if not private.exists():
                raise RolloutError(f"{self.path} exists but its signing key {private} does not; decisions cannot be "
                                   "signed")
            self.key = audit_keys.load_private(private)
        else:
            self.key = audit_keys.generate(private, public)
        self.log = AuditLog(self.path, self.key)
        self._unsigned = 0  # an existing log verified strictly: it ends in a checkpoint

    @property
    def exists(self) -> bool:
        return self.log.size > 0

    def _append(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._unsigned += 1
        return self.log.append(kind, body)

    def sign(self) -> None:
        """Checkpoint unless every entry is signed already: the head beside the log then covers the whole log
        (what a robot co-signs before it drives)."""
        if self._unsigned:
            self.log.checkpoint()
            self._unsigned = 0

    def start(self, body: Mapping[str, Any]) -> dict[str, Any]:
        entry = self._append(START, body)
        self.sign()
        return entry

    def confirmations(self, rung: str, rows: Iterable[Mapping[str, Any]]) -> int:
        n = 0
        for row in rows:
            self._append(CONFIRMATION, {**row, "context": {"rung": rung}})
            n += 1
        self.sign()
        return n

    def witnessed(self, rung: str, head: Mapping[str, Any]) -> dict[str, Any]:
        """Record that the ladder co-signed the rung's robot log (`head`: log, log_key_id, tree_size, root,
        witness_key_id); signed at once."""
        entry = self._append(WITNESSED, {**head, "rung": rung, "context": {"rung": rung}})
        self.sign()
        return entry

    def decide(self, action: str, rung: str, to: str | None, by: str, reason: str,
               evidence: Mapping[str, Any]) -> dict[str, Any]:
        """Append one decision and sign it at once."""
        entry = self._append(DECISION_KINDS[action], {"action": action, "rung": rung, "to": to, "by": by,
                                                      "reason": reason, "plan_hash": evidence.get("plan_hash"),
                                                      "evidence": dict(evidence), "context": {"rung": rung}})
        self.sign()
        return entry

    def state(self) -> LadderState:
        return fold(iter_entries(self.path))

    def close(self) -> None:
        self.log.close()

    def __enter__(self) -> RolloutLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
