"""The hardware emulator: a car twin in its own process, behind the robot-side runtime,
speaking only the bridge protocol, with a declared reality gap.

    python -m bridge.robot.car.emulator --endpoint tcp://127.0.0.1:5555 --instruction "Drive at 2 m/s."
    (or: shakedown bridge emulate ...)

The gap is declared, never hidden: physics parameters off by stated factors (tyre friction,
mass, motor gain), extra actuation delay, extra odometry noise, and an offset between the
robot's clock and the policy side's. With every gap at its neutral value the emulated car
drives exactly the trajectory the in-process twin drives (a test checks it), so any
difference a session shows is the gap's or the link's.

The run folder gets `trace.json` (what the actuators received, per control period),
`audit.log` (+ public key: every decision, refusal, safe stop, link event) and
`session.mcap` (every message in and out).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from agents.tasks.car.instructions import parse_instruction
from bridge.protocol import RobotDescription
from bridge.robot.car.adapter import CarReading
from bridge.robot.car.runtime import CarRuntime, RuntimeConfig, stop_latencies
from bridge.robot.gate import open_robot_side
from safety.audit.log import AuditLog
from safety.car.spec import CarSafetySpec
from twin.car.actuation import Command
from twin.car.twin import CarParams, CarTwin, CarTwinConfig
from twin.core.config import bounded, check_bounds, parse_config


@dataclasses.dataclass(frozen=True)
class RealityGap:
    """How the emulated car differs from the nominal twin (1.0 / 0.0: no difference)."""

    mu_scale: float = bounded(1.0, 0.1, 2.0)
    """Tyre friction, as a factor on the nominal."""
    mass_scale: float = bounded(1.0, 0.5, 2.0)
    """Mass, as a factor on the nominal."""
    motor_gain: float = bounded(1.0, 0.3, 2.0)
    """Motor gain (1: the speed loop reaches what is commanded)."""
    extra_delay_s: float = bounded(0.0, 0.0, 0.3)
    """Actuation delay added to the nominal."""
    odometry_noise_scale: float = bounded(1.0, 0.0, 10.0)
    """Factor on the odometry and IMU noise."""
    clock_offset_s: float = bounded(0.0, -1e6, 1e6)
    """The robot's clock minus the policy side's (the protocol must not care)."""

    def __post_init__(self) -> None:
        check_bounds(self)

    def apply(self, params: CarParams) -> CarParams:
        v, a, o = params.vehicle, params.actuation, params.odometry
        return dataclasses.replace(
            params,
            vehicle=dataclasses.replace(v, mu=min(2.0, v.mu * self.mu_scale), mass=min(10.0, v.mass * self.mass_scale)),
            actuation=dataclasses.replace(a, motor_gain=self.motor_gain, delay_s=a.delay_s + self.extra_delay_s),
            odometry=dataclasses.replace(o, **{f.name: getattr(o, f.name) * self.odometry_noise_scale
                                              for f in dataclasses.fields(o) if f.name.endswith("_std")}),
        )


class TwinCar:
    """A `CarRobot` that is a twin: read is the twin's state (and frame), write steps it."""

    def __init__(self, config: CarTwinConfig, seed: int, start_s: float = 0.0, start_v: float = 0.0) -> None:
        self.twin = CarTwin(config)
        self.twin.reset(np.random.default_rng(seed), s=start_s, v=start_v)
        self.track = config.track
        self.vehicle = config.params.vehicle
        self.control_hz = config.control_hz
        self.estopped = False

    def read(self, frame: bool = False) -> CarReading:
        return CarReading(self.twin.state, None, self.twin.camera() if frame else None)

    def write(self, command: Command) -> None:
        self.twin.step(Command(0.0, command.steer) if self.estopped else command)

    def estop(self) -> None:
        self.estopped = True

    def close(self) -> None:
        self.twin.close()


@dataclasses.dataclass(frozen=True)
class EmulatorConfig:
    """An emulated F1TENTH car that drives with decisions from a policy server."""

    endpoint: str = "tcp://127.0.0.1:5555"
    """The policy server."""
    instruction: str = "Drive at 2 m/s."
    """What the car is asked to do (sent with every observation)."""
    track: str = "sprint"
    """The map (a track name the twin knows)."""
    start_s: float = 0.0
    """Start position along the track (m)."""
    seed: int = 0
    """Seeds the twin's noise."""
    duration_s: float = 10.0
    """Seconds to drive after the first decision."""
    control_hz: float = 20.0
    """Rate of the fast loop (MPC, shield, actuators)."""
    decide_every_s: float = 2.0
    """A fresh observation (and decision) this often."""
    silence_timeout_s: float = 0.5
    """Silent link this long: safe stop."""
    heartbeat_s: float = 0.1
    """Heartbeat period to the policy side."""
    gap: RealityGap = RealityGap()
    """The declared reality gap."""
    out: Path = Path("runs/emulator")
    """Run folder: trace.json, audit.log, session.mcap."""
    client_key: str = ""
    """CURVE: this robot's secret certificate (shakedown bridge keys); empty: no encryption."""
    server_key: str = ""
    """CURVE: the server's public certificate."""
    name: str = "emulator-car-0"
    """This robot's name in the handshake and the logs."""


def twin_config(cfg: EmulatorConfig) -> CarTwinConfig:
    """The emulated car's twin: the instruction task's twin with the gap applied."""
    return CarTwinConfig(track=cfg.track, control_hz=cfg.control_hz, physics_dt=0.01, lidar=False, camera=True,
                         params=cfg.gap.apply(CarParams()))


def run_emulator(cfg: EmulatorConfig) -> dict[str, Any]:
    """Drive one session; returns (and writes to out/trace.json) the report."""
    robot = TwinCar(twin_config(cfg), cfg.seed, cfg.start_s)  # first: the link's clock starts when it opens
    side = open_robot_side(cfg.out, RobotDescription("car", cfg.name, cfg.control_hz, cfg.track), cfg.endpoint,
                           cfg.heartbeat_s, cfg.silence_timeout_s, cfg.gap.clock_offset_s, cfg.client_key, cfg.server_key)
    client, recorder = side.client, side.recorder
    try:
        with AuditLog(side.audit_path, side.signing_key) as audit:
            runtime = CarRuntime(robot, client, parse_instruction(cfg.instruction),
                                 RuntimeConfig(duration_s=cfg.duration_s, decide_every_s=cfg.decide_every_s),
                                 CarSafetySpec(), audit)
            report = runtime.run()
    finally:
        side.close()
        robot.close()
    result = {"reason": report.reason, "applied": report.applied, "refused": report.refused,
              "safe_stops": report.safe_stops, "stop_latencies_s": stop_latencies(report),
              "shield_interventions": report.shield_interventions, "observations_sent": report.observations_sent,
              "link": dict(client.counts), "clock_offset_s": client.clock_offset, "messages_recorded": recorder.count,
              "trace": report.trace, "gap": dataclasses.asdict(cfg.gap)}
    (cfg.out / "trace.json").write_text(json.dumps(result))
    return result


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    cfg = parse_config(EmulatorConfig, argv, __doc__.split("\n\n")[0], prog)
    result = run_emulator(cfg)
    print(json.dumps({k: v for k, v in result.items() if k != "trace"}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
