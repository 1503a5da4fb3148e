"""The factory cell over the bridge: the same decisions as locally, the factory shield on the
cell side, belt and arm stopped by a dead link, bad decisions refused and logged."""

import threading

import numpy as np

from agents.policies.inspectors import ScriptedInspector
from bridge.client import BridgeClient, ClientConfig
from bridge.protocol import RobotDescription
from bridge.relay import Relay
from bridge.robot.factory.emulator import CellEmulatorConfig, run_cell_emulator
from bridge.robot.factory.runtime import CellConfig, CellRuntime
from bridge.server import PolicyServer, ServerConfig
from safety.audit import keys as audit_keys
from safety.audit.log import iter_entries
from safety.audit.verify import verify
from tests.bridge.conftest import free_endpoint
from twin.core.contracts import Decision, Observation
from twin.factory.twin import FactoryTwin, FactoryTwinConfig


def _served(policy, **cfg) -> PolicyServer:
    server = PolicyServer(policy, ServerConfig(endpoint="tcp://127.0.0.1:0", **cfg))
    server.start()
    return server


def test_the_cell_gets_the_local_policys_decisions_and_stays_safe(tmp_path):
    server = _served(ScriptedInspector())
    try:
        result = run_cell_emulator(CellEmulatorConfig(endpoint=server.endpoint, parts=3, realtime=False,
                                                      out=tmp_path / "cell"))
    finally:
        server.stop()
    assert result["reason"] == "done" and len(result["decisions"]) == 3 and not result["refused"]
    local = [ScriptedInspector().decide(obs).action["decision"] for obs in result["observations"]]
    assert [d["decision"] for d in result["decisions"]] == local
    assert result["metrics"]["accuracy"] == 1.0 and result["metrics"]["parts_done"] == 3
    assert result["costs"]["collision"] == 0 and result["costs"]["separation"] == 0
    log = tmp_path / "cell" / "audit.log"
    assert verify(log, audit_keys.load_public(tmp_path / "cell" / "audit-key.pub")).ok
    assert sum(e["kind"] == "decision" for e in iter_entries(log)) == 3


def test_a_dead_link_stops_belt_and_arm_until_it_heals(tmp_path):
    server = _served(ScriptedInspector(), heartbeat_s=0.05)
    relay = Relay(free_endpoint(), server.endpoint)
    relay.start()
    cut, heal = threading.Timer(1.0, relay.cut), threading.Timer(2.0, relay.heal)
    cut.start()
    heal.start()
    try:
        result = run_cell_emulator(CellEmulatorConfig(endpoint=relay.endpoint, parts=2, silence_timeout_s=0.3,
                                                      heartbeat_s=0.05, out=tmp_path / "cell"))
    finally:
        relay.stop()
        server.stop()
    assert len(result["safe_stops"]) == 1 and result["reason"] == "done"
    stopped = [row for row in result["timeline"] if row["mode"] == "safe-stop"]
    assert stopped and all(row["belt"] == 0.0 for row in stopped)
    assert all(row["tool_speed"] <= 1e-6 for row in stopped[1:])
    modes = [row["mode"] for row in result["timeline"]]
    assert modes.index("safe-stop") < len(modes) - 1 - modes[::-1].index("running")  # it resumed


class _Wrong:
    policy_id = "wrong"

    def decide(self, observation: Observation) -> Decision:
        return Decision({"decision": "launch"}, self.policy_id)


def test_an_unknown_decision_is_refused_and_logged(tmp_path):
    from safety.audit.log import AuditLog

    server = _served(_Wrong())
    twin = FactoryTwin(FactoryTwinConfig())
    twin.reset(np.random.default_rng(0))
    client = BridgeClient(RobotDescription("factory", "cell", 20.0), ClientConfig(endpoint=server.endpoint))
    signing = audit_keys.generate(tmp_path / "k.pem", tmp_path / "k.pub")
    try:
        with AuditLog(tmp_path / "audit.log", signing) as audit:
            report = CellRuntime(twin, client, CellConfig(parts=1, max_seconds=12.0, ask_again_s=0.5, realtime=False),
                                 audit=audit).run()
    finally:
        client.close()
        server.stop()
        twin.close()
    assert not report.decisions and report.reason == "line time limit reached"
    assert report.refused.get("invalid action", 0) >= 1
    refusals = [e["body"]["reason"] for e in iter_entries(tmp_path / "audit.log") if e["kind"] == "refusal"]
    assert refusals and all("'launch' is not one of" in r for r in refusals)
