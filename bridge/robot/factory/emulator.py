"""The emulated factory cell: the line twin in its own process, behind the cell-side runtime,
speaking only the bridge protocol, with a declared reality gap.

    python -m bridge.robot.factory.emulator --endpoint tcp://127.0.0.1:5555 --parts 8
    (or: shakedown bridge emulate --world factory ...)

The run folder gets `cell.json` (decisions, costs, metrics, timeline), `audit.log` (+ public
key) and `session.mcap`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from bridge.protocol import RobotDescription
from bridge.robot.factory.runtime import CellConfig, CellRuntime
from bridge.robot.gate import open_robot_side
from safety.audit.log import AuditLog
from twin.core.config import bounded, check_bounds, parse_config
from twin.factory.params import FACTORY_RANDOMIZATION, FactoryParams
from twin.factory.twin import FactoryTwin, FactoryTwinConfig


@dataclasses.dataclass(frozen=True)
class CellGap:
    """How the emulated cell differs from the nominal twin (1.0 / 0.0: no difference)."""

    belt_friction_scale: float = bounded(1.0, 0.2, 2.0)
    """Grip of the belt on the parts, as a factor on the nominal (worn belt < 1)."""
    camera_noise_std: float = bounded(0.0, 0.0, 60.0)
    """Extra pixel noise of the inspection camera (grey levels)."""
    person_speed_scale: float = bounded(1.0, 0.2, 2.0)
    """The person walks this much faster than the nominal."""
    clock_offset_s: float = bounded(0.0, -1e6, 1e6)
    """The cell's clock minus the policy side's (the protocol must not care)."""

    def __post_init__(self) -> None:
        check_bounds(self)

    def apply(self, params: FactoryParams) -> FactoryParams:
        belt, cam, person = params.belt, params.camera, params.person
        return dataclasses.replace(
            params,
            belt=dataclasses.replace(belt, friction=min(2.0, belt.friction * self.belt_friction_scale)),
            camera=dataclasses.replace(cam, noise_std=min(60.0, cam.noise_std + self.camera_noise_std)),
            person=dataclasses.replace(person, speed=min(2.5, person.speed * self.person_speed_scale)))


@dataclasses.dataclass(frozen=True)
class CellEmulatorConfig:
    """An emulated factory cell whose part decisions come from a policy server."""

    endpoint: str = "tcp://127.0.0.1:5555"
    """The policy server."""
    parts: int = 8
    """Parts to decide."""
    seed: int = 0
    """Seeds the cell (parts, person, noise)."""
    randomize: bool = True
    """Domain randomization of the cell, as in the inspection task."""
    silence_timeout_s: float = 0.5
    """Silent link this long: belt and arm stop."""
    heartbeat_s: float = 0.1
    """Heartbeat period to the policy side."""
    ask_again_s: float = 2.0
    """Ask again about a waiting part after this long without a decision."""
    realtime: bool = True
    """Keep the control period in wall time (False: as fast as the twin runs, for tests)."""
    gap: CellGap = CellGap()
    """The declared reality gap."""
    out: Path = Path("runs/emulator-factory")
    """Run folder: cell.json, audit.log, session.mcap."""
    client_key: str = ""
    """CURVE: this cell's secret certificate; empty: no encryption."""
    server_key: str = ""
    """CURVE: the server's public certificate."""
    name: str = "emulator-cell-0"
    """This cell's name in the handshake and the logs."""


def run_cell_emulator(cfg: CellEmulatorConfig) -> dict[str, Any]:
    twin = FactoryTwin(FactoryTwinConfig(params=cfg.gap.apply(FactoryParams()),
                                         randomization=FACTORY_RANDOMIZATION if cfg.randomize else ()))
    twin.reset(np.random.default_rng(cfg.seed))
    side = open_robot_side(cfg.out, RobotDescription("factory", cfg.name, twin.config.control_hz), cfg.endpoint,
                           cfg.heartbeat_s, cfg.silence_timeout_s, cfg.gap.clock_offset_s, cfg.client_key, cfg.server_key)
    client, recorder = side.client, side.recorder
    try:
        with AuditLog(side.audit_path, side.signing_key) as audit:
            report = CellRuntime(twin, client, CellConfig(parts=cfg.parts, ask_again_s=cfg.ask_again_s, realtime=cfg.realtime),
                                 audit=audit).run()
    finally:
        side.close()
        twin.close()
    result = {"reason": report.reason, "decisions": [{k: v for k, v in d.items() if k != "observation"}
                                                      for d in report.decisions],
              "refused": report.refused, "safe_stops": report.safe_stops, "costs": report.costs,
              "metrics": report.metrics, "link": dict(client.counts), "messages_recorded": recorder.count,
              "gap": dataclasses.asdict(cfg.gap), "timeline": report.timeline}
    (cfg.out / "cell.json").write_text(json.dumps(result, default=float))
    result["observations"] = [d["observation"] for d in report.decisions]
    return result


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    cfg = parse_config(CellEmulatorConfig, argv, __doc__.split("\n\n")[0], prog)
    result = run_cell_emulator(cfg)
    print(json.dumps({k: v for k, v in result.items() if k not in ("timeline", "observations")}, default=float))


if __name__ == "__main__":
    main()
