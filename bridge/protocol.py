"""The bridge's wire protocol: typed messages, msgpack frames, arrays as raw buffers.

A message on the wire is one ZeroMQ multipart message: frame 0 is the msgpack encoding of
one of the `Message` structs below (msgspec, tagged by "type"); frames 1..n are the raw bytes
of the arrays it names (camera frames, lidar scans), each described in the header by an
`ArrayRef` (frame index, dtype from an allow-list, shape). Nothing is ever pickled, and
decoding is typed: a frame that is not exactly one of these messages, an array whose bytes
do not match its declared dtype and shape, or an oversized message raises `ProtocolError`
naming what was wrong; the receiver refuses it and goes on.

Every message carries the sender's sequence number (`seq`, strictly increasing per sender
and session) and the sender's clock (`t`, seconds). A decision names the observation it
answers and the deadline (in the robot's clock: the observation's `t` plus the decision's
lifetime) after which the robot must not apply it. The handshake compares the protocol
version and `SCHEMA_HASH`, a hash of every message's JSON schema, so a peer built from other
message definitions is refused rather than misread.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from twin.core.contracts import Decision, Observation

PROTOCOL_VERSION = 1
"""Bumped on any change to what a message means; peers of another version are refused."""
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest multipart message accepted (libzmq drops the connection of a peer that sends more)."""
ARRAY_DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64")
"""The only array types that cross the bridge (never 'object')."""


class ProtocolError(ValueError):
    """A message that is not one of ours, or not well formed; the message says what was wrong."""


class ArrayRef(msgspec.Struct, frozen=True):
    """Where an array's bytes travel: frame number (>= 1), dtype and shape."""

    frame: int
    dtype: str
    shape: tuple[int, ...]


class RobotDescription(msgspec.Struct, frozen=True):
    """What a robot tells the policy side about itself in the handshake."""

    world: str
    """'car' or 'factory'."""
    name: str
    """This robot's name (e.g. 'emulator-car-0', 'f1tenth-07')."""
    control_hz: float
    """Rate of its fast loop (MPC, shield, actuators)."""
    track: str = ""
    """Car: the map it drives on."""


class Hello(msgspec.Struct, frozen=True, tag="hello"):
    """Robot -> policy: open a session."""

    seq: int
    t: float
    protocol: int
    schema: str
    robot: RobotDescription


class Welcome(msgspec.Struct, frozen=True, tag="welcome"):
    """Policy -> robot: the session is open."""

    seq: int
    t: float
    protocol: int
    schema: str
    policy_id: str
    heartbeat_s: float
    decision_lifetime_s: float


class Refused(msgspec.Struct, frozen=True, tag="refused"):
    """Either side: a message or session was refused, and why."""

    seq: int
    t: float
    reason: str


class ObservationMsg(msgspec.Struct, frozen=True, tag="observation"):
    """Robot -> policy: what the policy may look at (an `Observation`)."""

    seq: int
    t: float
    timestamp: float
    state: dict[str, float]
    instruction: str = ""
    image: ArrayRef | None = None
    lidar: ArrayRef | None = None
    privileged: dict[str, Any] = {}
    """Ground truth, sent only by emulators (scripted experts read it); a real robot has none."""


class DecisionMsg(msgspec.Struct, frozen=True, tag="decision"):
    """Policy -> robot: a `Decision`, for one observation, valid until `deadline` (robot clock)."""

    seq: int
    t: float
    answers: int
    deadline: float
    action: dict[str, float | str]
    policy_id: str
    thought: str = ""
    raw_output: str = ""
    parse_status: str = "ok"
    decision_id: str = ""


class CommandMsg(msgspec.Struct, frozen=True, tag="command"):
    """Robot -> policy: the command its actuators executed this period (telemetry, shadow mode)."""

    seq: int
    t: float
    speed: float
    steer: float
    verdict: str
    mode: str
    state: dict[str, float] = {}
    """The state the robot read this period, from which the command was computed (t, x, y, yaw, v, yaw_rate,
    steer, s, d, alpha): a recording then holds each period's state and command, and calibration
    (bridge/calibration.py) replays the commands in the twin from the logged states."""


class Heartbeat(msgspec.Struct, frozen=True, tag="heartbeat"):
    """Either side: I am alive (any message counts as one too)."""

    seq: int
    t: float


class Stop(msgspec.Struct, frozen=True, tag="stop"):
    """Either side: end the session (the robot then brakes to a stop)."""

    seq: int
    t: float
    reason: str


Message = Hello | Welcome | Refused | ObservationMsg | DecisionMsg | CommandMsg | Heartbeat | Stop
MESSAGE_TYPES: tuple[type, ...] = (Hello, Welcome, Refused, ObservationMsg, DecisionMsg, CommandMsg, Heartbeat, Stop)


def _schema_hash() -> str:
    schema = msgspec.json.schema(Message)
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:16]


SCHEMA_HASH = _schema_hash()
"""Hash of the JSON schema of every message: peers compare it in the handshake."""

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Message)


# -- frames -------------------------------------------------------------------------------
def encode(message: Message, arrays: Sequence[np.ndarray] = ()) -> list[bytes | memoryview]:
    """The frames of one message: header, then each array's raw bytes (no copy when contiguous)."""
    return [_ENCODER.encode(message), *(memoryview(np.ascontiguousarray(a)).cast("B") for a in arrays)]


def decode(frames: Sequence[bytes | memoryview]) -> tuple[Message, list[np.ndarray]]:
    """A message and its arrays, checked; ProtocolError if anything is malformed."""
    if not frames:
        raise ProtocolError("empty message")
    size = sum(len(f) for f in frames)
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        message = _DECODER.decode(frames[0])
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, ValueError, TypeError) as exc:
        # msgspec reports invalid UTF-8 in a string field as UnicodeDecodeError (found by the fault relay)
        raise ProtocolError(f"malformed header: {exc}") from None
    arrays = []
    for ref in _array_refs(message):
        if not 1 <= ref.frame < len(frames):
            raise ProtocolError(f"array refers to frame {ref.frame}, but the message has {len(frames)} frames")
        if ref.dtype not in ARRAY_DTYPES or any(d < 0 for d in ref.shape) or len(ref.shape) > 4:
            raise ProtocolError(f"array of dtype {ref.dtype!r} and shape {ref.shape} is not allowed "
                                f"(dtypes: {ARRAY_DTYPES}, at most 4 dimensions)")
        dtype = np.dtype(ref.dtype)
        expected = math.prod(ref.shape) * dtype.itemsize
        if len(frames[ref.frame]) != expected:
            raise ProtocolError(f"array frame {ref.frame} holds {len(frames[ref.frame])} bytes; dtype {ref.dtype} "
                                f"and shape {ref.shape} need {expected}")
        arrays.append(np.frombuffer(frames[ref.frame], dtype).reshape(ref.shape))
    if len(frames) != len(arrays) + 1:
        raise ProtocolError(f"message has {len(frames) - 1} data frames but names {len(arrays)} arrays")
    _check_finite(message)
    return message, arrays


def _array_refs(message: Message) -> list[ArrayRef]:
    if isinstance(message, ObservationMsg):
        return [r for r in (message.image, message.lidar) if r is not None]
    return []


def _check_finite(message: Message) -> None:
    """Times must be finite; a decision's numbers are checked against the action schema later."""
    for name in ("t", "timestamp", "deadline"):
        value = getattr(message, name, 0.0)
        if not math.isfinite(value):
            raise ProtocolError(f"{type(message).__name__}.{name} = {value} is not finite")


# -- contracts <-> messages ------------------------------------------------------------------
def observation_message(obs: Observation, seq: int, t: float,
                        privileged: bool = True) -> tuple[ObservationMsg, list[np.ndarray]]:
    """An Observation as a message plus its arrays (image, lidar)."""
    arrays: list[np.ndarray] = []
    refs: dict[str, ArrayRef | None] = {"image": None, "lidar": None}
    for name in ("image", "lidar"):
        value = getattr(obs, name)
        if value is not None:
            arr = np.asarray(value)
            arrays.append(arr)
            refs[name] = ArrayRef(len(arrays), arr.dtype.name, tuple(int(d) for d in arr.shape))
    priv = _plain(dict(obs.privileged)) if privileged else {}
    msg = ObservationMsg(seq=seq, t=t, timestamp=float(obs.timestamp), state={k: float(v) for k, v in obs.state.items()},
                         instruction=obs.instruction, image=refs["image"], lidar=refs["lidar"], privileged=priv)
    return msg, arrays


def observation_from(msg: ObservationMsg, arrays: Sequence[np.ndarray]) -> Observation:
    """The Observation a message carries (arrays in the order the message names them)."""
    it = iter(arrays)
    image = np.array(next(it)) if msg.image is not None else None
    lidar = np.array(next(it)) if msg.lidar is not None else None
    return Observation(timestamp=msg.timestamp, state=dict(msg.state), image=image, lidar=lidar,
                       instruction=msg.instruction, privileged=dict(msg.privileged))


def decision_message(decision: Decision, seq: int, t: float, answers: int, deadline: float) -> DecisionMsg:
    return DecisionMsg(seq=seq, t=t, answers=answers, deadline=deadline, action=_plain(dict(decision.action)),
                       policy_id=decision.policy_id, thought=decision.thought, raw_output=decision.raw_output,
                       parse_status=decision.parse_status, decision_id=decision.decision_id)


def decision_from(msg: DecisionMsg) -> Decision:
    return Decision(action=dict(msg.action), policy_id=msg.policy_id, thought=msg.thought, raw_output=msg.raw_output,
                    parse_status=msg.parse_status, decision_id=msg.decision_id or f"bridge-{msg.seq}")


def _plain(value: Any) -> Any:
    """Numpy scalars and tuples as plain msgpack types (the privileged dict holds a few)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_json(message: Message) -> bytes:
    """JSON of a message (for recordings: readable in Foxglove and by any tool)."""
    return msgspec.json.encode(message)


def message_schema(kind: type) -> bytes:
    """JSON schema of one message type (recorded beside its channel)."""
    return msgspec.json.encode(msgspec.json.schema(kind))
