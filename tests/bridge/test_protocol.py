"""The wire format: typed messages, arrays as raw frames, nothing pickled, malformed input refused."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.protocol import (
    MAX_MESSAGE_BYTES,
    SCHEMA_HASH,
    DecisionMsg,
    Heartbeat,
    ProtocolError,
    decision_from,
    decision_message,
    decode,
    encode,
    observation_from,
    observation_message,
)
from twin.core.contracts import Decision, Observation


def _obs() -> Observation:
    return Observation(1.5, {"speed": 1.0, "half_width": 0.9}, image=np.arange(64 * 64 * 3, dtype=np.uint8)
                       .reshape(64, 64, 3), lidar=np.linspace(0.1, 30, 1080, dtype=np.float32),
                       instruction="Drive at 2 m/s.", privileged={"category": "velocity", "target_speed": 2.0})


def test_observation_and_decision_round_trip_exactly():
    obs = _obs()
    msg, arrays = observation_message(obs, seq=7, t=3.0)
    back, back_arrays = decode([bytes(f) for f in encode(msg, arrays)])
    assert back == msg and observation_from(back, back_arrays) == obs
    d = Decision({"qv": 30.0, "v_max": 2.0}, "p", thought="faster", raw_output="...", decision_id="abc")
    m = decision_message(d, seq=1, t=0.0, answers=7, deadline=13.0)
    (back_d, _) = decode(encode(m))
    assert decision_from(back_d) == d and back_d.deadline == 13.0 and back_d.answers == 7


def test_nothing_is_pickled():
    frames = encode(*observation_message(_obs(), 1, 0.0))
    assert not any(bytes(f).startswith(b"\x80") for f in frames[:1])  # a pickle stream starts with PROTO 0x80
    assert b"numpy" not in bytes(frames[0])


@pytest.mark.parametrize("mangle, message", [
    (lambda f: [f[0], f[1][:-1], f[2]], "need"),                          # truncated array
    (lambda f: [f[0], f[1]], "refers to frame 2"),                        # a frame missing
    (lambda f: [*f, b"x"], "names 2 arrays"),                             # a frame too many
    (lambda f: [f[0][:-3], *f[1:]], "malformed header"),                  # truncated header
    (lambda f: [b"\x81\xa4type\xa6pickle", *f[1:]], "malformed header"),  # unknown message type
    (lambda f: [b"", *f[1:]], "malformed header"),
    (lambda f: [f[0].replace(b"Drive", b"\x9a\x9arive"), *f[1:]], "malformed header"),  # invalid UTF-8
    (lambda f: [], "empty message"),
])
def test_malformed_messages_are_refused_with_the_reason(mangle, message):
    frames = [bytes(f) for f in encode(*observation_message(_obs(), 1, 0.0))]
    with pytest.raises(ProtocolError, match=message):
        decode(mangle(frames))


def test_object_arrays_and_oversized_messages_are_refused():
    msg, arrays = observation_message(_obs(), 1, 0.0)
    bad = msg.__class__(**{**{f: getattr(msg, f) for f in msg.__struct_fields__},
                           "image": msg.image.__class__(1, "object", (64, 64, 3))})
    with pytest.raises(ProtocolError, match="not allowed"):
        decode([bytes(f) for f in encode(bad, arrays)])
    with pytest.raises(ProtocolError, match="exceeds"):
        decode([encode(Heartbeat(1, 0.0))[0], b"\0" * (MAX_MESSAGE_BYTES + 1)])
    with pytest.raises(ProtocolError, match="not finite"):
        decode(encode(DecisionMsg(1, float("nan"), 1, 1.0, {}, "p")))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=0, max_size=4))
def test_any_bytes_decode_or_raise_protocol_error(frames):
    """Fuzzed frames never crash the receiver with anything but a ProtocolError."""
    try:
        decode(frames)
    except ProtocolError:
        pass


def test_the_schema_hash_names_the_message_definitions():
    assert len(SCHEMA_HASH) == 16 and int(SCHEMA_HASH, 16) >= 0
