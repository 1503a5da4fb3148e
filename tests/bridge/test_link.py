"""The policy side and the link, on real sockets on loopback: the same decisions remotely as
locally, handshakes that refuse other protocols, CURVE keys, bad input that harms nothing."""

import time

import numpy as np
import pytest
import zmq

from agents.policies.car_expert import ScriptedCarExpert
from agents.tasks.car.instruction_env import CarInstructionEnv, CarTaskConfig
from bridge.client import BridgeClient, ClientConfig, RemotePolicy, robot_for
from bridge.keys import ClientSecurity, ServerSecurity, load_keys, load_public, make_keys
from bridge.protocol import MAX_MESSAGE_BYTES, Heartbeat, Hello, encode, observation_message
from bridge.server import PolicyServer, ServerConfig
from tests.bridge.conftest import wait_for
from twin.core.contracts import Decision, Observation


def _server(policy, **cfg) -> PolicyServer:
    server = PolicyServer(policy, ServerConfig(endpoint="tcp://127.0.0.1:0", **cfg))
    server.start()
    return server


def test_remote_policy_gives_the_local_policys_decisions():
    env = CarInstructionEnv(CarTaskConfig(tracks=("oval", "kidney"), duration_s=0.5))
    expert = ScriptedCarExpert()
    server = _server(expert)
    try:
        with RemotePolicy(robot_for("car"), ClientConfig(endpoint=server.endpoint), timeout_s=5.0) as remote:
            assert remote.policy_id == expert.policy_id
            for seed in range(6):
                _, info = env.reset(seed=seed)
                obs = info["observation"]
                local, far = expert.decide(obs), remote.decide(obs)
                assert far.action == local.action and far.thought == local.thought and far.parse_status == "ok"
    finally:
        server.stop()
        env.close()


def test_handshake_refuses_another_protocol_or_schema():
    server = _server(ScriptedCarExpert())
    try:
        for kwargs, said in (({"protocol": 99}, "protocol 99"), ({"schema": "0123456789abcdef"}, "schema")):
            client = BridgeClient(robot_for("car"), ClientConfig(endpoint=server.endpoint), **kwargs)
            with pytest.raises(ConnectionRefusedError, match=said):
                client.connect(3.0)
            client.close()
        assert server.counts["refused_sessions"] == 2
    finally:
        server.stop()


class _Slow:
    policy_id = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def decide(self, observation: Observation) -> Decision:
        time.sleep(self.seconds)
        return Decision({"qv": 1.0}, self.policy_id)


def test_a_late_answer_is_never_returned_for_a_newer_question():
    """openpi once executed a late reply as the answer to the next request; here a timed-out
    decide() returns the safe default, and the late decision is not taken for the next one."""
    server = _server(_Slow(0.6))
    try:
        with RemotePolicy(robot_for("car"), ClientConfig(endpoint=server.endpoint), timeout_s=0.3) as remote:
            obs = Observation(0.0, {"speed": 0.0})
            first = remote.decide(obs)
            assert first.parse_status.startswith("fallback: no decision within 0.3 s")
            assert first.action["qv"] != 1.0  # the default parameters, not a guess
            time.sleep(0.5)  # the late answer to the first question arrives meanwhile
            remote.timeout_s = 2.0
            second = remote.decide(obs)
            assert second.parse_status == "ok" and second.action == {"qv": 1.0}
            assert server.counts["decisions"] == 2
    finally:
        server.stop()


def test_heartbeats_flow_while_the_policy_thinks():
    """A slow policy (a language model) is not a dead link: the server's I/O thread keeps beating."""
    server = _server(_Slow(1.0), heartbeat_s=0.05)
    try:
        client = BridgeClient(robot_for("car"), ClientConfig(endpoint=server.endpoint, silence_timeout_s=0.5))
        client.connect(3.0)
        client.send_observation(Observation(0.0, {"speed": 0.0}))
        alive = []
        deadline = time.monotonic() + 0.9
        while time.monotonic() < deadline:
            client.poll(0.05)
            alive.append(client.alive())
        assert all(alive[2:])
        client.close()
    finally:
        server.stop()


def test_curve_keys_admit_the_allowed_robot_and_refuse_any_other(tmp_path):
    _, server_secret = make_keys(tmp_path / "server", "server")
    robot_public, robot_secret = make_keys(tmp_path / "allowed", "robot")
    _, stranger_secret = make_keys(tmp_path / "strangers", "stranger")
    server = PolicyServer(ScriptedCarExpert(), ServerConfig(endpoint="tcp://127.0.0.1:0"),
                          ServerSecurity(load_keys(server_secret), tmp_path / "allowed"))
    server.start()
    server_public = load_public(tmp_path / "server" / "server.key")
    try:
        good = ClientSecurity(load_keys(robot_secret), server_public)
        with RemotePolicy(robot_for("car"), ClientConfig(endpoint=server.endpoint), security=good,
                          connect_timeout_s=5.0) as remote:
            assert remote.policy_id == "scripted-expert-v1"
        bad = ClientSecurity(load_keys(stranger_secret), server_public)
        with pytest.raises(TimeoutError, match="CURVE key"):
            RemotePolicy(robot_for("car"), ClientConfig(endpoint=server.endpoint), security=bad, connect_timeout_s=1.0)
        plain = BridgeClient(robot_for("car"), ClientConfig(endpoint=server.endpoint))  # no key at all
        with pytest.raises(TimeoutError):
            plain.connect(1.0)
        plain.close()
        assert wait_for(lambda: server.counts["auth_failures"] >= 2, 3.0), dict(server.counts)
        assert server.counts["sessions"] == 1
    finally:
        server.stop()


def test_malformed_truncated_and_oversized_input_harms_no_one():
    server = _server(ScriptedCarExpert())
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.connect(server.endpoint)
    try:
        from bridge.protocol import PROTOCOL_VERSION, SCHEMA_HASH, decode

        raw.send_multipart(encode(Hello(1, 0.0, PROTOCOL_VERSION, SCHEMA_HASH, robot_for("car"))))
        assert raw.poll(3000)
        raw.recv_multipart()  # welcome
        msg, arrays = observation_message(Observation(0.0, {"speed": 0.0}, image=np.zeros((8, 8, 3), np.uint8)), 2, 0.0)
        frames = [bytes(f) for f in encode(msg, arrays)]
        raw.send_multipart([frames[0], frames[1][:10]])  # truncated frame
        raw.send_multipart([b"\x93\x01\x02"])           # not a message at all
        replies = []
        while raw.poll(1000):
            replies.append(decode(raw.recv_multipart())[0])
            if sum(type(r).__name__ == "Refused" for r in replies) == 2:
                break
        refusals = [r.reason for r in replies if type(r).__name__ == "Refused"]
        assert len(refusals) == 2 and all(r.startswith("malformed message") for r in refusals)
        big = ctx.socket(zmq.DEALER)
        big.connect(server.endpoint)
        big.send_multipart([encode(Heartbeat(1, 0.0))[0], b"\0" * (MAX_MESSAGE_BYTES + 10)])
        time.sleep(0.3)
        big.close(0)
        # The server still serves a well-behaved robot.
        with RemotePolicy(robot_for("car"), ClientConfig(endpoint=server.endpoint), timeout_s=5.0) as remote:
            d = remote.decide(Observation(0.0, {"half_width": 1.0}, privileged={"category": "smooth"}))
            assert d.parse_status == "ok"
        assert server.counts["malformed"] == 2
    finally:
        raw.close(0)
        ctx.term()
        server.stop()


def test_bridge_commands(tmp_path, capsys):
    from shakedown.cli import main

    assert main(["bridge", "keys", str(tmp_path), "--name", "robot-7"]) == 0
    assert (tmp_path / "robot-7.key").exists() and (tmp_path / "robot-7.key_secret").exists()
    for command, said in (("serve", "Heartbeat period"), ("emulate", "The declared reality gap"),
                          ("record", "Where robots connect instead")):
        assert main(["bridge", command, "--help"]) == 0
        assert said in " ".join(capsys.readouterr().out.replace("│", " ").split())


def test_a_busy_caller_does_not_mistake_its_own_pause_for_a_dead_link():
    """Heartbeats that queued up while the caller was busy (rendering, an env reset) count: the
    session is kept, not torn down and reopened (found when a slow env.reset under load did it)."""
    server = _server(ScriptedCarExpert(), heartbeat_s=0.05)
    try:
        client = BridgeClient(robot_for("car"), ClientConfig(endpoint=server.endpoint, reconnect_after_s=0.3))
        client.connect(3.0)
        time.sleep(0.8)  # busy elsewhere, not polling
        client.poll(0.0)
        assert client.counts["reconnects"] == 0 and client.alive()
        client.close()
    finally:
        server.stop()
