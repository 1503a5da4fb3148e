"""What every robot-side runtime shares: which decisions may reach the actuators, when the link
counts as dead, the robot's own record of both, and how a session is opened (`open_robot_side`).

`DecisionGate.check` is the age watchdog: a decision is refused when it answers no
observation this robot sent, answers one no newer than the one behind the decision applied
last, or arrives after its deadline (robot clock). `DecisionGate.silent` is the silence
watchdog's test. `refuse`, `log` and `log_link_events` write the robot's audit log: every
decision applied, every refusal with its reason, every safe stop, resume and link event.

A robot can also witness the log that governs its sessions (a rollout ladder's
`rollout.log`): `witness_before_session` co-signs that log's signed head into the robot's own
witness store (`safety.audit.witness`) before the session drives, and refuses the session
when the log was cut back or rewritten since the robot last co-signed it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.client import BridgeClient, ClientConfig
from bridge.keys import ClientSecurity, load_keys, load_public
from bridge.protocol import DecisionMsg, Refused, RobotDescription
from bridge.recording import Recorder
from safety.audit import keys as audit_keys
from safety.audit.log import AuditLog
from safety.audit.witness import Witness

Sent = TypeVar("Sent")
KEEP_SENT = 16
"""Observations remembered for answers that come late (older ones are forgotten)."""
AUDIT_LOG, AUDIT_KEY, AUDIT_PUBLIC = "audit.log", "audit-key.pem", "audit-key.pub"
"""A session's audit log and its key pair, in the session's folder."""
WITNESSED, SESSION_REFUSED = "witnessed", "session_refused"
"""The robot's audit entries for a log it co-signed before a session, or the session it refused."""
UNPACED_WAIT_S = 0.0005
"""Without real-time pacing, still wait this long for the link each period: a policy server in the
same process (tests) needs the interpreter's lock now and then to answer."""


class DecisionGate(Generic[Sent]):
    """Freshness of decisions and the robot's audit record, for one session of one robot."""

    def __init__(self, client: BridgeClient, audit: AuditLog | None, clock: Callable[[], float]) -> None:
        self.client, self.audit, self.clock = client, audit, clock
        self.sent: dict[int, Sent] = {}
        """Sequence number -> what was asked (the observation, or the part it showed)."""
        self.last_answered = 0
        self.refused: dict[str, int] = {}
        self._events_logged = 0

    def remember(self, seq: int, what: Sent) -> None:
        # The last KEEP_SENT observations, counted as observations: sequence numbers also count every
        # heartbeat and command message, so a window of sequence numbers forgot an observation within about
        # half a second and refused every decision of a slower policy (a language model).
        self.sent[seq] = what
        while len(self.sent) > KEEP_SENT:
            del self.sent[next(iter(self.sent))]  # the oldest: insertion order is sequence order

    def check(self, message: DecisionMsg) -> str | None:
        """Why `message` must not be applied, or None when it is fresh."""
        now = self.clock()
        if message.answers not in self.sent:
            return f"unknown observation: answers {message.answers}, never sent (or long forgotten)"
        if message.answers <= self.last_answered:
            return (f"not newer: answers observation {message.answers}, the decision applied last "
                    f"answered {self.last_answered}")
        if not math.isfinite(message.deadline) or now > message.deadline:
            return f"stale: deadline passed {now - message.deadline:.3f} s ago"
        return None

    def accepted(self, message: DecisionMsg) -> Sent:
        """Mark `message` applied; returns what it answered."""
        self.last_answered = message.answers
        return self.sent[message.answers]

    def silent(self) -> bool:
        """The silence watchdog: no session, or nothing heard within the silence timeout."""
        return not self.client.alive()

    def refuse(self, message: DecisionMsg | Refused, why: str) -> None:
        key = why.split(":")[0]
        self.refused[key] = self.refused.get(key, 0) + 1
        self.log("refusal", {"reason": why, "message_seq": message.seq, "answers": getattr(message, "answers", None),
                             "policy_id": getattr(message, "policy_id", ""), "robot_time": self.clock()})

    def log(self, kind: str, body: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit.append(kind, body)

    def log_link_events(self) -> None:
        for event in self.client.events[self._events_logged:]:
            self.log("link", {"event": event.kind, "detail": event.detail, "robot_time": event.t})
        self._events_logged = len(self.client.events)


@dataclasses.dataclass
class RobotSide:
    """What an emulated robot opens for a session: its link, its recording and its audit key."""

    client: BridgeClient
    recorder: Recorder
    signing_key: Ed25519PrivateKey
    audit_path: Path

    def close(self) -> None:
        self.client.close()
        self.recorder.close()


def open_robot_side(out: Path, robot: RobotDescription, endpoint: str, heartbeat_s: float, silence_timeout_s: float,
                    clock_offset_s: float = 0.0, client_key: str = "", server_key: str = "") -> RobotSide:
    """The link (CURVE when keys are given), an MCAP recording and a fresh audit key in `out`,
    with the robot's clock `clock_offset_s` away from the policy side's."""
    out.mkdir(parents=True, exist_ok=True)
    security = ClientSecurity(load_keys(client_key), load_public(server_key)) if client_key else None
    recorder = Recorder(out / "session.mcap", side=robot.name)
    signing = audit_keys.generate(out / AUDIT_KEY, out / AUDIT_PUBLIC)

    def clock() -> float:
        return time.monotonic() + clock_offset_s

    client = BridgeClient(robot, ClientConfig(endpoint=endpoint, heartbeat_s=heartbeat_s,
                                              silence_timeout_s=silence_timeout_s,
                                              reconnect_after_s=max(2 * silence_timeout_s, 0.2)),
                          security, recorder, clock=clock)
    return RobotSide(client, recorder, signing, out / AUDIT_LOG)


def cosign_log(store: Path, log: Path, public_key: Path) -> dict[str, Any]:
    """Co-sign `log`'s signed head into the witness store `store` after checking it extends every head
    co-signed there before; the co-signed head. WitnessError (a ValueError) or OSError says why not."""
    return Witness(store).cosign(log, audit_keys.load_public(public_key))


def witness_before_session(store: Path, log: Path, public_key: Path) -> tuple[str, dict[str, Any]]:
    """Before a session opens its link: co-sign the log that governs it. The entry for the robot's own audit
    log: (WITNESSED, the co-signed head) or (SESSION_REFUSED, why the session is refused)."""
    try:
        head = cosign_log(store, log, public_key)
    except (OSError, ValueError) as exc:
        return SESSION_REFUSED, {"log": str(log), "reason": f"the robot refuses the session: its witness does not "
                                                          f"accept {log}: {exc}"}
    return WITNESSED, {"log": str(log), **{k: head[k] for k in ("log_key_id", "tree_size", "root", "witness_key_id")}}
