"""`PolicyServer`: any `Policy` served over ZeroMQ to robots (or emulators, or RemotePolicy).

One ROUTER socket, owned by one I/O thread that never blocks on the policy: it answers
handshakes, sends heartbeats every `heartbeat_s` to every session (so a robot can tell a slow
policy from a dead link), drops anything malformed, duplicated or older than what it already
has, and keeps for each session only the newest observation still waiting (an older one
would be answered too late to matter). A worker thread runs `policy.decide` one observation
at a time, so a policy that is not thread-safe (a language model) needs no care, and a
policy that raises is answered with a `Refused`, never with a guessed action.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from bridge.keys import ServerSecurity, secure_server
from bridge.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    SCHEMA_HASH,
    DecisionMsg,
    Heartbeat,
    Hello,
    Message,
    ObservationMsg,
    ProtocolError,
    Refused,
    Stop,
    Welcome,
    decision_message,
    decode,
    encode,
    observation_from,
)
from twin.core.config import bounded, check_bounds
from twin.core.contracts import Policy

LOG = logging.getLogger("shakedown.bridge.server")
FAST_WINDOW = 20
"""Answers looked at to decide whether the policy may run on the I/O thread."""


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How the policy side serves."""

    endpoint: str = "tcp://127.0.0.1:5555"
    """Where to bind (port 0: any free port; `start()` returns the one bound)."""
    heartbeat_s: float = bounded(0.1, 0.005, 10.0)
    """Heartbeat period to every session."""
    session_timeout_s: float = bounded(3.0, 0.05, 3600.0)
    """A session silent this long is closed (its robot re-handshakes when it comes back)."""
    inline_budget_s: float = bounded(0.002, 0.0, 1.0)
    """A policy whose recent answers all took at most this long runs on the I/O thread (no thread
    hand-off, ~0.2 ms less per round trip); a slower one (a language model) on its own thread, so
    heartbeats never wait for it. 0: always its own thread."""
    decision_lifetime_s: float = bounded(10.0, 0.01, 3600.0)
    """A decision may be applied until its observation is this old (robot clock); a language model's
    parameters stay valid for seconds, a low-level command would need milliseconds."""

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclasses.dataclass
class _Session:
    robot: Any
    last_heard: float
    last_in_seq: int
    out_seq: int = 0


Recorder = Callable[[str, Message, list], None]
"""(direction 'in'/'out', message, arrays) -> None: where every message is recorded."""


class PolicyServer:
    """Serve `policy` at `config.endpoint`; `start()` then `stop()` (or use as a context manager)."""

    def __init__(self, policy: Policy, config: ServerConfig | None = None, security: ServerSecurity | None = None,
                 recorder: Recorder | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.config = config or ServerConfig()
        self.security = security
        self.recorder = recorder
        self.clock = clock
        self.counts: Counter[str] = Counter()
        """observations, decisions, heartbeats, malformed, stale, superseded, auth_failures, policy_errors, ..."""
        self.endpoint = ""
        self._context = zmq.Context()
        self._stop = threading.Event()
        self._pending: dict[bytes, tuple[ObservationMsg, list]] = {}
        self._outbox: deque[tuple[bytes, DecisionMsg | Refused]] = deque()
        self._lock = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._ready = threading.Event()
        self._decide_times: deque[float] = deque(maxlen=FAST_WINDOW)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> str:
        """Bind and start serving; returns the bound endpoint."""
        self._threads = [threading.Thread(target=self._io_loop, name="bridge-io", daemon=True),
                         threading.Thread(target=self._worker_loop, name="bridge-policy", daemon=True)]
        for t in self._threads:
            t.start()
        if not self._ready.wait(10.0):
            raise RuntimeError("the policy server did not start within 10 s")
        if self._error is not None:
            raise self._error
        return self.endpoint

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for t in self._threads:
            t.join(timeout=5.0)
        self._context.term()

    def __enter__(self) -> PolicyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve (starting if needed) until interrupted (the `shakedown bridge serve` command)."""
        if not self._threads:
            self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # -- I/O thread ---------------------------------------------------------------------------
    _error: BaseException | None = None

    def _io_loop(self) -> None:
        ctx = self._context
        router = ctx.socket(zmq.ROUTER)
        router.linger = 0
        router.maxmsgsize = MAX_MESSAGE_BYTES
        auth = secure_server(ctx, router, self.security) if self.security else None
        monitor = router.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        wake = ctx.socket(zmq.PULL)
        wake.bind(f"inproc://bridge-wake-{id(self)}")
        try:
            router.bind(self.config.endpoint)
        except zmq.ZMQError as exc:
            self._error = OSError(f"cannot bind {self.config.endpoint}: {exc}; choose another endpoint or port")
            self._ready.set()
            return
        self.endpoint = router.last_endpoint.decode()
        self._ready.set()
        sessions: dict[bytes, _Session] = {}
        poller = zmq.Poller()
        for s in (router, monitor, wake):
            poller.register(s, zmq.POLLIN)
        next_beat = self.clock()
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(timeout=max(0.0, next_beat - self.clock()) * 1e3))
                if monitor in events:
                    self._on_monitor(recv_monitor_message(monitor))
                if wake in events:
                    wake.recv()
                # drain what is there: the EVENTS flag costs less than a poll or a raised Again per message
                while router in events and router.get(zmq.EVENTS) & zmq.POLLIN:
                    identity, *frames = router.recv_multipart()
                    try:
                        self._on_message(router, sessions, identity, frames)
                    except Exception:  # one bad message must never stop the server serving the others
                        self.counts["handler_errors"] += 1
                        LOG.exception("error while handling a message; the message is dropped")
                self._flush_outbox(router, sessions)
                now = self.clock()
                if now >= next_beat:
                    for identity, session in list(sessions.items()):
                        if now - session.last_heard > self.config.session_timeout_s:
                            del sessions[identity]
                            self.counts["sessions_timed_out"] += 1
                            continue
                        self._send(router, identity, session, Heartbeat(seq=0, t=now))
                    next_beat = now + self.config.heartbeat_s
        finally:
            router.disable_monitor()
            for s in (router, monitor, wake):
                s.close(linger=0)
            if auth is not None:
                auth.stop()

    def _on_monitor(self, event: dict) -> None:
        self.counts["auth_failures"] += 1
        LOG.warning("refused a client during the CURVE handshake (event %s, %s)", event.get("event"),
                    event.get("endpoint"))

    def _on_message(self, router: zmq.Socket, sessions: dict[bytes, _Session], identity: bytes, frames: list) -> None:
        now = self.clock()
        try:
            message, arrays = decode(frames)
        except ProtocolError as exc:
            self.counts["malformed"] += 1
            LOG.warning("malformed message refused: %s", exc)
            self._reply_refused(router, identity, sessions.get(identity), f"malformed message: {exc}")
            return
        if self.recorder:
            self.recorder("in", message, arrays)
        if isinstance(message, Hello):
            if message.protocol != PROTOCOL_VERSION or message.schema != SCHEMA_HASH:
                self.counts["refused_sessions"] += 1
                self._reply_refused(router, identity, None,
                                    f"protocol {message.protocol}/schema {message.schema} does not match this "
                                    f"server's {PROTOCOL_VERSION}/{SCHEMA_HASH}; update one side")
                return
            session = sessions[identity] = _Session(message.robot, now, message.seq)
            self.counts["sessions"] += 1
            self._send(router, identity, session, Welcome(
                seq=0, t=now, protocol=PROTOCOL_VERSION, schema=SCHEMA_HASH, policy_id=self.policy.policy_id,
                heartbeat_s=self.config.heartbeat_s, decision_lifetime_s=self.config.decision_lifetime_s))
            return
        session = sessions.get(identity)
        if session is None:
            self.counts["no_session"] += 1
            self._reply_refused(router, identity, None, "no session: send hello first")
            return
        session.last_heard = now
        if message.seq <= session.last_in_seq:  # duplicated or reordered: only newer counts
            self.counts["stale"] += 1
            return
        session.last_in_seq = message.seq
        if isinstance(message, ObservationMsg):
            self.counts["observations"] += 1
            if self._fast():  # answer on this thread: no hand-off for a policy that never keeps it long
                self.counts["inline"] += 1
                self._send(router, identity, session, self._decide(message, arrays))
                return
            with self._lock:
                if identity in self._pending:
                    self.counts["superseded"] += 1
                self._pending[identity] = (message, arrays)
                self._lock.notify()
        elif isinstance(message, Stop):
            sessions.pop(identity, None)
            with self._lock:
                self._pending.pop(identity, None)
        elif isinstance(message, Heartbeat):
            self.counts["heartbeats_in"] += 1

    def _flush_outbox(self, router: zmq.Socket, sessions: dict[bytes, _Session]) -> None:
        while True:
            with self._lock:
                if not self._outbox:
                    return
                identity, message = self._outbox.popleft()
            session = sessions.get(identity)
            if session is not None:  # a session that went away gets nothing
                self._send(router, identity, session, message)

    def _send(self, router: zmq.Socket, identity: bytes, session: _Session, message: Message) -> None:
        session.out_seq += 1
        message = _with_seq(message, session.out_seq)
        if self.recorder:
            self.recorder("out", message, [])
        try:
            router.send_multipart([identity, *encode(message)], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.counts["send_dropped"] += 1

    def _reply_refused(self, router: zmq.Socket, identity: bytes, session: _Session | None, reason: str) -> None:
        """In a session: a numbered refusal; outside one (handshake refused, no session): seq 0."""
        message = Refused(seq=0, t=self.clock(), reason=reason)
        if session is not None:
            return self._send(router, identity, session, message)
        try:
            router.send_multipart([identity, *encode(message)], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.counts["send_dropped"] += 1

    # -- policy thread ----------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        wake = self._context.socket(zmq.PUSH)
        self._ready.wait()
        if self._error is not None:
            return
        wake.connect(f"inproc://bridge-wake-{id(self)}")
        try:
            while not self._stop.is_set():
                with self._lock:
                    while not self._pending and not self._stop.is_set():
                        self._lock.wait(0.2)
                    if self._stop.is_set():
                        return
                    identity = next(iter(self._pending))
                    message, arrays = self._pending.pop(identity)
                reply = self._decide(message, arrays)
                with self._lock:
                    self._outbox.append((identity, reply))
                with contextlib.suppress(zmq.Again):  # the I/O loop flushes the outbox at its next beat anyway
                    wake.send(b"", flags=zmq.NOBLOCK)
        finally:
            wake.close(linger=0)

    def _fast(self) -> bool:
        """The policy answered its last `FAST_WINDOW` observations within `inline_budget_s` each, so
        running it on the I/O thread delays heartbeats by less than that; the first ones always
        go to the policy thread, and one slow answer sends the next ones there again."""
        with self._lock:
            recent = list(self._decide_times)
        return len(recent) == FAST_WINDOW and max(recent) <= self.config.inline_budget_s and not self._pending

    def _decide(self, message: ObservationMsg, arrays: list) -> DecisionMsg | Refused:
        started = time.perf_counter()
        try:
            decision = self.policy.decide(observation_from(message, arrays))
        except Exception as exc:  # a policy bug must not take the server down or guess an action
            self.counts["policy_errors"] += 1
            LOG.exception("policy failed on observation %d", message.seq)
            return Refused(seq=0, t=self.clock(), reason=f"policy error on observation {message.seq}: {exc!r}")
        self.counts["decisions"] += 1
        with self._lock:
            self._decide_times.append(time.perf_counter() - started)
        return decision_message(decision, seq=0, t=self.clock(), answers=message.seq,
                                deadline=message.t + self.config.decision_lifetime_s)


def _with_seq(message: Message, seq: int) -> Message:
    import msgspec

    return msgspec.structs.replace(message, seq=seq)
