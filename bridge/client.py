"""The robot's end of the link (`BridgeClient`) and `RemotePolicy`, a `Policy` over the bridge.

`BridgeClient` never blocks longer than asked: `poll(timeout)` returns what arrived. It
opens a session with a handshake, sends a heartbeat every period, and keeps only messages
strictly newer than the last it took from the server (duplicates and reordered ones are
dropped, as in zguide's Clone pattern). When the server falls silent for
`reconnect_after_s`, it closes its socket and opens a new one (zguide's Lazy Pirate) and
says hello again, for as long as it runs: when the link heals, the session resumes without
anyone restarting anything. A server that forgot the session (it was restarted) answers
"no session", and the client re-handshakes at once.

`RemotePolicy.decide` sends the observation and waits at most `timeout_s` for the decision
that answers *that* observation; a late answer to an earlier one is never returned. When
none comes in time it returns the task's safe default, marked as a fallback, the same
promise the language model's parser makes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from agents.control.mpc_params import DEFAULT
from agents.vlm.parsing import FACTORY_FALLBACK
from bridge.keys import ClientSecurity, secure_client
from bridge.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    SCHEMA_HASH,
    DecisionMsg,
    Heartbeat,
    Hello,
    Message,
    ProtocolError,
    Refused,
    RobotDescription,
    Stop,
    Welcome,
    decision_from,
    decode,
    encode,
    observation_message,
)
from twin.core.config import bounded, check_bounds
from twin.core.contracts import Decision, Observation

LOG = logging.getLogger("shakedown.bridge.client")


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """How the robot side keeps its link."""

    endpoint: str = "tcp://127.0.0.1:5555"
    """The policy server to connect to."""
    heartbeat_s: float = bounded(0.1, 0.005, 10.0)
    """Heartbeat period."""
    silence_timeout_s: float = bounded(0.5, 0.01, 60.0)
    """No message from the server for this long: the link counts as dead (the robot stops)."""
    reconnect_after_s: float = bounded(1.0, 0.05, 600.0)
    """Silent this long: close the socket, open a new one, say hello again."""
    hello_retry_s: float = bounded(0.05, 0.005, 60.0)
    """Period of hello while no session is open."""

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclasses.dataclass
class Event:
    """Something about the link a robot should log: handshake, refusal, reconnect, malformed input."""

    kind: str
    detail: str
    t: float


Recorder = Callable[[str, Message, list], None]


class BridgeClient:
    """A DEALER socket with a session: handshake, heartbeats, freshness, reconnects."""

    def __init__(self, robot: RobotDescription, config: ClientConfig | None = None,
                 security: ClientSecurity | None = None, recorder: Recorder | None = None,
                 clock: Callable[[], float] = time.monotonic, protocol: int = PROTOCOL_VERSION,
                 schema: str = SCHEMA_HASH) -> None:
        self.robot = robot
        self.config = config or ClientConfig()
        self.security = security
        self.recorder = recorder
        self.clock = clock
        self._protocol, self._schema = protocol, schema  # other values only to test refusal
        self.context = zmq.Context()
        self.session: Welcome | None = None
        self.clock_offset = 0.0
        """Server clock minus robot clock, measured in the handshake (for logs and recordings)."""
        self.counts: Counter[str] = Counter()
        self.events: list[Event] = []
        self._out_seq = 0
        self._in_seq = 0
        self._socket: zmq.Socket | None = None
        self._hello_sent_at = self._last_hello_t = -1e9
        self._last_beat = -1e9
        self.last_heard = -1e9
        self._open()

    # -- socket ---------------------------------------------------------------------------------
    def _open(self) -> None:
        s = self.context.socket(zmq.DEALER)
        s.linger = 0
        s.maxmsgsize = MAX_MESSAGE_BYTES
        s.immediate = True  # queue nothing for a peer that is not connected: old messages are worthless
        s.identity = uuid.uuid4().hex.encode()
        if self.security:
            secure_client(s, self.security)
        s.connect(self.config.endpoint)
        self._socket = s
        self._poller = zmq.Poller()
        self._poller.register(s, zmq.POLLIN)
        self._opened_at = self.clock()

    def _reopen(self) -> None:
        self._socket.close(linger=0)
        self._open()
        self.session = None
        self.counts["reconnects"] += 1
        self._event("reconnect", "nothing heard within reconnect_after_s: new socket, hello again")

    def close(self, reason: str = "robot closing") -> None:
        if self.session is not None:
            self._send(Stop(seq=0, t=self.clock(), reason=reason))
        self._socket.close(linger=0)
        self.context.term()

    # -- state --------------------------------------------------------------------------------
    def alive(self) -> bool:
        """A session is open and the server was heard within the silence timeout."""
        return self.session is not None and self.clock() - self.last_heard <= self.config.silence_timeout_s

    def _event(self, kind: str, detail: str) -> None:
        self.events.append(Event(kind, detail, self.clock()))
        LOG.info("%s: %s", kind, detail)

    # -- sending --------------------------------------------------------------------------------
    def _send(self, message: Message, arrays: list | tuple = ()) -> bool:
        import msgspec

        self._out_seq += 1
        message = msgspec.structs.replace(message, seq=self._out_seq)
        if self.recorder:
            self.recorder("out", message, list(arrays))
        frames = encode(message, arrays)
        try:
            # zero-copy pays (~10 us a send) only above ~64 kB (pyzmq's own measurements)
            self._socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=sum(len(f) for f in frames) < 65536)
            return True
        except zmq.Again:  # not connected (IMMEDIATE): dropped, never queued to go out stale
            self.counts["send_dropped"] += 1
            return False

    def send_observation(self, observation: Observation, privileged: bool = True) -> int | None:
        """Send an observation; its sequence number, or None when there is no session to send it in."""
        if self.session is None:
            return None
        msg, arrays = observation_message(observation, seq=0, t=self.clock(), privileged=privileged)
        return self._out_seq if self._send(msg, arrays) else None

    def send(self, message: Message) -> bool:
        """Any other message (telemetry, stop) in the open session, numbered by this client."""
        return self.session is not None and self._send(message)

    # -- receiving --------------------------------------------------------------------------------
    def poll(self, timeout_s: float = 0.0) -> list[tuple[Message, list]]:
        """Messages for the caller (decisions, refusals, stops) that arrive within `timeout_s`;
        keeps the session: handshake, heartbeats, reconnects."""
        out: list[tuple[Message, list]] = []
        deadline = self.clock() + timeout_s
        while True:
            # Read what already arrived before judging silence: messages queued while the caller
            # was busy prove the server alive (judging first would drop a live session).
            self._drain(out)
            self._keep_session()
            remaining = deadline - self.clock()
            if out or remaining <= 0:
                return out
            self._poller.poll(min(remaining, self.config.heartbeat_s) * 1e3)

    def _drain(self, out: list[tuple[Message, list]]) -> None:
        """Receive everything waiting (the EVENTS flag costs less than a poll or a raised Again per message)."""
        while self._socket.get(zmq.EVENTS) & zmq.POLLIN:
            item = self._receive(self._socket.recv_multipart())
            if item is not None:
                out.append(item)

    def _keep_session(self) -> None:
        now = self.clock()
        if now - max(self.last_heard, self._opened_at) > self.config.reconnect_after_s:
            self._reopen()  # Lazy Pirate: a fresh socket, then hello again
            now = self.clock()
        if self.session is None:
            if now - self._hello_sent_at >= self.config.hello_retry_s:
                self._hello_sent_at = self._last_hello_t = now
                self._send(Hello(seq=0, t=now, protocol=self._protocol, schema=self._schema, robot=self.robot))
        elif now - self._last_beat >= self.config.heartbeat_s:
            self._last_beat = now
            self._send(Heartbeat(seq=0, t=now))

    def _receive(self, frames: list[bytes]) -> tuple[Message, list] | None:
        now = self.clock()
        try:
            message, arrays = decode(frames)
        except ProtocolError as exc:
            self.counts["malformed"] += 1
            self._event("malformed", str(exc))
            return None
        if self.recorder:
            self.recorder("in", message, arrays)
        if isinstance(message, Welcome):
            if self.session is not None and message.seq <= self._in_seq:
                self.counts["stale"] += 1
                return None
            self.session, self._in_seq, self.last_heard = message, message.seq, now
            self.clock_offset = message.t - (self._last_hello_t + now) / 2
            self.counts["sessions"] += 1
            self._event("session", f"policy {message.policy_id}, clock offset {self.clock_offset:+.4f} s")
            return None
        if isinstance(message, Refused) and message.seq == 0:  # said outside any session
            self.counts["refused"] += 1
            self._event("refused", message.reason)
            self.session = None
            if message.reason.startswith("no session"):  # the server was restarted: hello at once
                self._hello_sent_at = -1e9
                return None
            return message, arrays
        if self.session is None:
            self.counts["no_session"] += 1
            return None
        if message.seq <= self._in_seq:
            self.counts["stale"] += 1
            return None
        self._in_seq, self.last_heard = message.seq, now
        if isinstance(message, Heartbeat):
            return None
        return message, arrays

    def connect(self, timeout_s: float = 5.0) -> Welcome:
        """Open the session, waiting at most `timeout_s`; a clear error if it cannot be opened."""
        deadline = self.clock() + timeout_s
        while self.session is None and self.clock() < deadline:
            for message, _ in self.poll(min(0.05, max(0.0, deadline - self.clock()))):
                if isinstance(message, Refused):
                    raise ConnectionRefusedError(f"the policy server refused the session: {message.reason}")
        if self.session is None:
            raise TimeoutError(f"no answer from a policy server at {self.config.endpoint} within {timeout_s} s "
                               "(server down, wrong address, or a CURVE key it does not accept)")
        return self.session


SAFE_ACTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "car": DEFAULT.as_dict,
    "factory": lambda: {"decision": FACTORY_FALLBACK},
}
"""World -> the action a robot may always fall back to (the parser's own safe defaults)."""


class RemotePolicy:
    """A `Policy` whose `decide` goes over the bridge; indistinguishable from a local one."""

    def __init__(self, robot: RobotDescription, config: ClientConfig | None = None, timeout_s: float = 30.0,
                 security: ClientSecurity | None = None, connect_timeout_s: float = 10.0) -> None:
        self.client = BridgeClient(robot, config, security)
        welcome = self.client.connect(connect_timeout_s)
        self.policy_id = welcome.policy_id
        self.timeout_s = timeout_s
        self._fallback = SAFE_ACTIONS[robot.world]

    def decide(self, observation: Observation) -> Decision:
        deadline = time.monotonic() + self.timeout_s
        seq = self.client.send_observation(observation)
        while seq is not None and time.monotonic() < deadline:
            for message, _ in self.client.poll(min(0.1, max(0.0, deadline - time.monotonic()))):
                if isinstance(message, DecisionMsg) and message.answers == seq:
                    return decision_from(message)
                if isinstance(message, Refused) and f"observation {seq}:" in message.reason:
                    return self._fallback_decision(f"the policy side refused: {message.reason}")
            if self.client.session is None:  # the session was lost and re-opened: ask again
                self.client.connect(max(0.0, deadline - time.monotonic()))
                seq = self.client.send_observation(observation)
        return self._fallback_decision(f"no decision within {self.timeout_s} s over the bridge")

    def _fallback_decision(self, why: str) -> Decision:
        return Decision(action=self._fallback(), policy_id=self.policy_id, parse_status=f"fallback: {why}")

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RemotePolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def robot_for(world: str, name: str = "remote-policy", control_hz: float = 20.0) -> RobotDescription:
    """A RobotDescription for callers that are not robots (an eval, a scenario campaign)."""
    return RobotDescription(world=world, name=name, control_hz=control_hz)
