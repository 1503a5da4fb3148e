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

For a staged rollout (`bridge.rollout`) a session also takes an `envelope` (the shield's
tightened limits on this rung), a distance and an area limit (the emulated car brakes to a
stop once past them, as a robot's own geofence would), and reports what a rung's gates
measure, per control period: the shield's verdict, the constraint costs on the car's true
state (the emulator knows them; a real robot reports what it can) and the robot's events
(refusals, safe stops, link faults) on the same clock. Given a `witness_log` (the ladder's
`rollout.log`), the robot co-signs its head before it drives and refuses the session when the
ladder's history was cut back or rewritten since it last co-signed (`bridge.robot.gate`).
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
from bridge.robot.car.runtime import TRACE_FIELDS, CarRuntime, RuntimeConfig, RuntimeReport, stop_latencies
from bridge.robot.gate import SESSION_REFUSED, open_robot_side, witness_before_session
from safety.audit.log import AuditLog, iter_entries
from safety.car.guard import CarGuard
from safety.car.shield import CarShield, CarShieldState
from safety.car.spec import CarSafetySpec
from safety.verdict import BACKUP, MODIFIED, Verdict
from twin.car.actuation import Command
from twin.car.twin import CarParams, CarTwin, CarTwinConfig
from twin.core.config import ConfigError, bounded, check_bounds, parse_config


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


PERIOD_FIELDS = ("t", "robot_time", "x", "y", "s", "d", "v", "ax", "ay", "speed", "steer", "distance", "limited",
                 "cost_collision", "cost_speed", "cost_lateral_accel")
"""What `TwinCar` records after each write: the car's true state, the executed command, the distance driven,
whether a limit held it, and each constraint's cost indicator (1: violated in that period)."""


class TwinCar:
    """A `CarRobot` that is a twin: read is the twin's state (and frame), write steps it.

    Every write is recorded (`periods`, see PERIOD_FIELDS) with the constraint costs of the
    `envelope`, measured on the twin's true state. Past `distance_limit_m` of driving, or
    outside the `area_s` stretch of track, the car is held: every later write brakes it."""

    def __init__(self, config: CarTwinConfig, seed: int, start_s: float = 0.0, start_v: float = 0.0,
                 envelope: CarSafetySpec | None = None, distance_limit_m: float = 0.0,
                 area_s: tuple[float, ...] = ()) -> None:
        self.twin = CarTwin(config)
        self.twin.reset(np.random.default_rng(seed), s=start_s, v=start_v)
        self.track = config.track
        self.vehicle = config.params.vehicle
        self.control_hz = config.control_hz
        self.estopped = False
        self.estops: list[float] = []
        """Twin times of every e-stop."""
        self.costs = CarGuard(self.twin, envelope or CarSafetySpec())
        self.distance_limit_m, self.area_s = distance_limit_m, tuple(area_s)
        self.limit: dict[str, Any] | None = None
        """Which limit held the car, and when (twin time); None while none has."""
        self.clock: Any = None
        """The robot's clock (set once the link is open), stamped on each period to place robot events."""
        self.periods: dict[str, list] = {name: [] for name in PERIOD_FIELDS}

    def read(self, frame: bool = False) -> CarReading:
        return CarReading(self.twin.state, None, self.twin.camera() if frame else None)

    def write(self, command: Command) -> None:
        held = self.estopped or self.limit is not None
        before = self.twin.state
        executed = Command(0.0, command.steer) if held else command
        report = self.twin.step(executed)
        st = self.twin.state
        indicators = self.costs.costs(report.contacts).indicators
        distance = (self.periods["distance"][-1] if self.periods["distance"] else 0.0) + \
            float(np.hypot(st.x - before.x, st.y - before.y))
        row = {"t": st.t, "robot_time": self.clock() if self.clock else float("nan"), "x": st.x, "y": st.y,
               "s": st.s, "d": st.d, "v": st.v, "ax": st.ax, "ay": st.ay, "speed": executed.speed,
               "steer": executed.steer, "distance": distance, "limited": held,
               **{f"cost_{name}": float(value) for name, value in indicators.items()}}
        for name in PERIOD_FIELDS:
            self.periods[name].append(float(row[name]))
        if self.limit is None:
            if self.distance_limit_m and distance >= self.distance_limit_m:
                self.limit = {"reason": f"distance limit of {self.distance_limit_m} m reached", "t": st.t}
            elif self.area_s and not _in_stretch(st.s, self.area_s, self.twin.track.length):
                self.limit = {"reason": f"left the area s in [{self.area_s[0]}, {self.area_s[1]}] m at s = {st.s:.2f} m",
                              "t": st.t}

    def estop(self) -> None:
        self.estopped = True
        self.estops.append(self.twin.state.t)

    def close(self) -> None:
        self.twin.close()


def _in_stretch(s: float, stretch: tuple[float, ...], length: float) -> bool:
    """s lies in [start, end) of the track, the stretch possibly crossing the start line."""
    s, a, b = s % length, stretch[0] % length, stretch[1] % length
    return a <= s < b if a <= b else (s >= a or s < b)


class VerdictLog:
    """The runtime's shield with every verdict kept, in order: a rollout counts interventions per period."""

    def __init__(self, shield: CarShield) -> None:
        self.shield = shield
        self.kinds: list[str] = []

    def filter(self, state: CarShieldState, command: Command) -> Verdict:
        verdict = self.shield.filter(state, command)
        self.kinds.append(verdict.kind)
        return verdict

    def __getattr__(self, name: str) -> Any:  # reset, spec, ...: the shield's own
        return getattr(self.shield, name)


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
    envelope: CarSafetySpec = CarSafetySpec()
    """The shield's limits on this robot (a rollout rung tightens them: speed cap, zones, clearance)."""
    realtime: bool = True
    """Keep the control period in wall time; False: as fast as possible (a rollout's sim rung)."""
    max_wait_s: float = bounded(60.0, 0.1, 1e6)
    """Give up when no first decision came within this long (the car never moved)."""
    distance_limit_m: float = bounded(0.0, 0.0, 1e6)
    """Driven this far, the car brakes to a stop and stays (m); 0: no limit."""
    area_s: tuple[float, ...] = ()
    """(s_start, s_end): the stretch of track the car may drive in (m, may cross the start line); leaving it
    brings the car to a stop; empty: anywhere."""
    witness_log: str = ""
    """A log this robot co-signs into its witness store before it drives (a rollout ladder's rollout.log); when
    that log was cut back or rewritten since it last co-signed, the robot refuses the session. Empty: none."""
    witness_log_key: str = ""
    """The witnessed log's trusted public key (PEM)."""
    witness_store: str = ""
    """This robot's witness store (its key and the heads it co-signed; a real robot keeps it on the robot)."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.area_s and len(self.area_s) != 2:
            raise ConfigError(f"EmulatorConfig.area_s = {self.area_s!r} must be (s_start, s_end) or empty")
        if self.witness_log and not (self.witness_log_key and self.witness_store):
            raise ConfigError("EmulatorConfig.witness_log needs witness_log_key (its public key) and witness_store "
                              "(this robot's witness folder)")


def twin_config(cfg: EmulatorConfig) -> CarTwinConfig:
    """The emulated car's twin: the instruction task's twin with the gap applied."""
    return CarTwinConfig(track=cfg.track, control_hz=cfg.control_hz, physics_dt=0.01, lidar=False, camera=True,
                         params=cfg.gap.apply(CarParams()))


def run_emulator(cfg: EmulatorConfig) -> dict[str, Any]:
    """Drive one session; returns (and writes to out/trace.json) the report."""
    # first: the link's clock starts when it opens
    robot = TwinCar(twin_config(cfg), cfg.seed, cfg.start_s, envelope=cfg.envelope,
                    distance_limit_m=cfg.distance_limit_m, area_s=cfg.area_s)
    # before the link opens (its timers start then): co-sign the log that governs this session, or refuse it
    witnessed = witness_before_session(Path(cfg.witness_store), Path(cfg.witness_log), Path(cfg.witness_log_key)) \
        if cfg.witness_log else None
    refused = witnessed[1]["reason"] if witnessed and witnessed[0] == SESSION_REFUSED else None
    side = open_robot_side(cfg.out, RobotDescription("car", cfg.name, cfg.control_hz, cfg.track), cfg.endpoint,
                           cfg.heartbeat_s, cfg.silence_timeout_s, cfg.gap.clock_offset_s, cfg.client_key, cfg.server_key)
    client, recorder = side.client, side.recorder
    robot.clock = client.clock
    kinds: list[str] = []
    try:
        with AuditLog(side.audit_path, side.signing_key) as audit:
            if witnessed:
                audit.append(*witnessed)
            if refused is None:
                runtime = CarRuntime(robot, client, parse_instruction(cfg.instruction),
                                     RuntimeConfig(duration_s=cfg.duration_s, decide_every_s=cfg.decide_every_s,
                                                   max_wait_s=cfg.max_wait_s, realtime=cfg.realtime),
                                     cfg.envelope, audit)
                verdicts = runtime.shield = VerdictLog(runtime.shield)
                report = runtime.run()
                kinds = verdicts.kinds
            else:  # nothing is driven: the link was opened but never used
                report = RuntimeReport({name: [] for name in TRACE_FIELDS}, reason=refused)
    finally:
        side.close()
        robot.close()
    periods = {name: values[:len(kinds)] for name, values in robot.periods.items()}  # not the final stop
    periods["intervened"] = [float(kind in (MODIFIED, BACKUP)) for kind in kinds]
    result = {"reason": report.reason, "applied": report.applied, "refused": report.refused,
              "safe_stops": report.safe_stops, "stop_latencies_s": stop_latencies(report),
              "shield_interventions": report.shield_interventions, "observations_sent": report.observations_sent,
              "link": dict(client.counts), "clock_offset_s": client.clock_offset, "messages_recorded": recorder.count,
              "trace": report.trace, "gap": dataclasses.asdict(cfg.gap), "periods": periods,
              "events": robot_events(side.audit_path, periods), "estops": robot.estops, "limit": robot.limit,
              "envelope": dataclasses.asdict(cfg.envelope), "session_refused": refused}
    (cfg.out / "trace.json").write_text(json.dumps(result))
    return result


def robot_events(audit_path: Path, periods: dict[str, list]) -> list[dict[str, Any]]:
    """The robot's logged events (refusals, safe stops, resumes, link events) placed on the twin's clock
    by the robot time stamped on each period."""
    robot_t, twin_t = np.asarray(periods["robot_time"]), np.asarray(periods["t"])
    events = []
    for entry in iter_entries(audit_path):
        body = entry["body"]
        if entry["kind"] not in ("refusal", "safe_stop", "resume", "armed", "link") or "robot_time" not in body:
            continue
        t = float(np.interp(body["robot_time"], robot_t, twin_t)) if len(robot_t) else float("nan")
        detail = body.get("event") or body.get("reason") or ""
        events.append({"t": t, "kind": entry["kind"], "detail": str(detail)})
    return events


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    cfg = parse_config(EmulatorConfig, argv, __doc__.split("\n\n")[0], prog)
    result = run_emulator(cfg)
    print(json.dumps({k: v for k, v in result.items() if k not in ("trace", "periods")}))  # per period: trace.json
    sys.stdout.flush()


if __name__ == "__main__":
    main()
