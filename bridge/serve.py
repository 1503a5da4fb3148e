"""Serve a policy over the bridge.

    python -m bridge.serve --policy expert --world car --endpoint tcp://127.0.0.1:5555
    (or: shakedown bridge serve ...)

`--policy` names what to serve: `default` (the default MPC parameters), `expert` (the
scripted expert, which reads the emulator's ground truth), `heuristic` (factory inspector),
an adapter directory (the VLM agent as trained), or a stable-baselines3 run folder.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

from bridge.keys import KeyPair, ServerSecurity, load_keys
from bridge.recording import Recorder
from bridge.server import PolicyServer, ServerConfig
from twin.core.config import ConfigError, parse_config
from twin.core.contracts import Policy


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """A policy served to robots over ZeroMQ."""

    policy: str = "expert"
    """default | expert | heuristic | an adapter directory | an SB3 run folder."""
    world: str = "car"
    """'car' or 'factory': which task's policy (and safe default)."""
    endpoint: str = "tcp://127.0.0.1:5555"
    """Where to listen (loopback by default; a robot on the network needs CURVE keys)."""
    heartbeat_s: float = 0.1
    """Heartbeat period to every robot."""
    decision_lifetime_s: float = 10.0
    """A decision may be applied until its observation is this old (robot clock)."""
    server_key: str = ""
    """CURVE: this server's secret certificate (shakedown bridge keys); empty: no encryption."""
    allowed_clients: str = ""
    """CURVE: folder of the robots' public certificates allowed in."""
    record: str = ""
    """MCAP file to record every message to; empty: none."""


def load_policy(spec: str, world: str) -> Policy:
    """The policy a spec names (see ServeConfig.policy)."""
    if world not in ("car", "factory"):
        raise ConfigError(f"world {world!r} must be 'car' or 'factory'")
    if spec == "default" and world == "car":
        from agents.policies.car_expert import FixedParamsPolicy

        return FixedParamsPolicy()
    if spec == "expert":
        from agents.policies.car_expert import ScriptedCarExpert
        from agents.policies.inspectors import ScriptedInspector

        return ScriptedCarExpert() if world == "car" else ScriptedInspector()
    if spec in ("heuristic", "default") and world == "factory":
        from agents.policies.inspectors import HeuristicInspector

        return HeuristicInspector()
    path = Path(spec)
    if (path / "model.zip").exists():
        from agents.policies.sb3 import SB3Policy

        return SB3Policy(path)
    if path.is_dir():
        from agents.vlm.loading import agent_from_adapter

        return agent_from_adapter(path, world, merge=True)
    raise ConfigError(f"--policy {spec!r} is neither default, expert, heuristic, an adapter directory nor an SB3 run")


def serve(cfg: ServeConfig) -> PolicyServer:
    """A started server for `cfg` (call `stop()`, or `serve_forever()` instead of this)."""
    security = None
    if cfg.server_key:
        if not cfg.allowed_clients:
            raise ConfigError("--server-key needs --allowed-clients, the folder of robot certificates to accept")
        keys: KeyPair = load_keys(cfg.server_key)
        security = ServerSecurity(keys, Path(cfg.allowed_clients))
    recorder = Recorder(cfg.record, side="policy") if cfg.record else None
    return PolicyServer(load_policy(cfg.policy, cfg.world),
                        ServerConfig(endpoint=cfg.endpoint, heartbeat_s=cfg.heartbeat_s,
                                     decision_lifetime_s=cfg.decision_lifetime_s), security, recorder)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = parse_config(ServeConfig, argv, __doc__.split("\n\n")[0], prog)
    server = serve(cfg)
    endpoint = server.start()
    print(f"serving {server.policy.policy_id} at {endpoint}", flush=True)
    try:
        server.serve_forever()
    finally:
        if server.recorder is not None:
            server.recorder.close()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
