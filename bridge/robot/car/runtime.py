"""The robot side: the fast loop runs here, slow decisions arrive over the bridge.

Every control period (20-50 Hz): read the car, run the MPC with the parameters of the last
decision applied, put the command through the shield (`safety.car.shield.CarShield`, the code
the twin runs), write the executed command to the actuators. Every `decide_every_s` the
runtime sends a fresh observation; decisions are taken from the link without ever blocking
the loop (the wait for the next period *is* the poll of the socket).

Two watchdogs guard what reaches the actuators:
- *silence*: no message from the policy side within `silence_timeout_s` (the link or the
  policy process died) -> safe stop: the backup controller commands speed 0 along the MPC's
  steering, through the shield, until the link is back *and* a fresh decision arrives.
- *age*: a decision is refused when its deadline (robot clock) has passed, when it answers an
  observation no newer than the one behind the decision applied last, when it answers no
  observation this robot sent, or when its action is not a valid parameter set (NaN, out of
  range, unknown names: the robot side does not repair what the policy side sent).
Before the first decision the car holds still. Every decision applied, every refusal, every
safe stop and resume and every link event goes into the robot's own audit log. Every period's
executed command goes to the policy side (and the recordings) with the state it was computed
from, so a recording can be replayed in the twin (bridge/calibration).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from agents.control.mpc import FrenetMPC, MPCConfig, mpc_state
from agents.control.mpc_params import DEFAULT, MPCParams, clamp_dict
from agents.tasks.car.instruction_env import instruction_observation
from agents.tasks.car.instructions import Instruction
from bridge.client import BridgeClient
from bridge.protocol import CommandMsg, DecisionMsg, Refused, Stop, decision_from
from bridge.robot.car.adapter import CarReading, CarRobot
from bridge.robot.gate import UNPACED_WAIT_S, DecisionGate
from safety.audit.log import AuditLog
from safety.audit.records import decision_body
from safety.car.clearance import clearance_map
from safety.car.guard import spec_for_vehicle
from safety.car.shield import CarShield, CarShieldState
from safety.car.spec import CarSafetySpec
from twin.car.actuation import Command
from twin.car.tracks import load_track
from twin.car.twin import CarState
from twin.core.config import bounded, check_bounds
from twin.core.contracts import Observation

WAITING, RUNNING, STOPPED = "waiting", "running", "safe-stop"
"""Modes: no decision yet (hold still); driving on the last decision; braking after silence."""
TRACE_FIELDS = ("t", "x", "y", "s", "d", "v", "steer", "speed_cmd", "steer_cmd", "mode")
STATE_FIELDS = ("t", "x", "y", "yaw", "v", "yaw_rate", "steer", "s", "d", "alpha")
"""What each period's command message carries of the state read (calibration replays a recording from it)."""


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """The robot-side loop."""

    duration_s: float = bounded(10.0, 0.05, 1e6)
    """Seconds to drive after the first decision was applied."""
    decide_every_s: float = bounded(2.0, 0.05, 3600.0)
    """Send a fresh observation (for a fresh decision) this often."""
    max_wait_s: float = bounded(60.0, 0.1, 1e6)
    """Give up when no first decision came within this long (the car never moved)."""
    realtime: bool = True
    """Keep the control period in wall time (a real robot, the emulator); False: as fast as possible."""
    send_frames: bool = True
    """Put a camera frame into each observation (a language model reads it)."""

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclasses.dataclass
class RuntimeReport:
    """What happened on the robot side."""

    trace: dict[str, list]
    applied: int = 0
    refused: dict[str, int] = dataclasses.field(default_factory=dict)
    safe_stops: list[dict[str, float]] = dataclasses.field(default_factory=list)
    """Each: when the server was last heard, when the stop was commanded, when the car stood still."""
    shield_interventions: int = 0
    observations_sent: int = 0
    reason: str = ""
    """Why the run ended."""


class CarRuntime:
    """Drive `robot` with decisions from `client` under `instruction`."""

    def __init__(self, robot: CarRobot, client: BridgeClient, instruction: Instruction,
                 config: RuntimeConfig | None = None, safety: CarSafetySpec | None = None,
                 audit: AuditLog | None = None, clock: Callable[[], float] | None = None) -> None:
        self.robot, self.client, self.instruction = robot, client, instruction
        self.config = config or RuntimeConfig()
        self.audit = audit
        self.clock = clock or client.clock
        self.track = load_track(robot.track)
        self.spec = spec_for_vehicle(safety or CarSafetySpec(), robot.vehicle, robot.control_hz)
        self.shield = CarShield(self.spec, clearance_map(robot.track))
        self.mpc = FrenetMPC(self.track, MPCConfig(dt=1.0 / robot.control_hz))
        self.mode = WAITING
        self.params: MPCParams = DEFAULT
        self.applied = 0
        self.gate: DecisionGate[Observation] = DecisionGate(client, audit, self.clock)

    # -- decisions ----------------------------------------------------------------------------
    def _take(self, message: DecisionMsg) -> None:
        """Apply a decision if it passes the age watchdog and the action schema; else refuse it."""
        why = self.gate.check(message)
        params, notes = clamp_dict(message.action)
        if why is None and notes:
            why = f"invalid action: {notes}"
        if why is not None:
            return self.gate.refuse(message, why)
        observation = self.gate.accepted(message)
        now = self.clock()
        first = self.mode == WAITING
        self.params = params
        self.mpc.set_params(params)
        if first:
            self.mpc.reset()
        if self.mode != RUNNING:
            self.gate.log("armed" if first else "resume", {"robot_time": now, "answers": message.answers})
        self.mode = RUNNING
        self.applied += 1
        self.gate.log("decision", decision_body(observation, decision_from(message), executed=params.as_dict(),
                                                context={"robot": self.client.robot.name, "answers": message.answers,
                                                         "deadline": message.deadline, "robot_time": now}))

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> RuntimeReport:
        period = 1.0 / self.robot.control_hz
        report = RuntimeReport(trace={k: [] for k in TRACE_FIELDS})
        reading = self.robot.read()
        self.shield.reset(reading.state.steer)
        start = next_tick = self.clock()
        next_decide = start
        armed_ticks, wanted = 0, int(round(self.config.duration_s * self.robot.control_hz))
        stop: dict[str, float] | None = None
        while armed_ticks < wanted:
            now = self.clock()
            if self.mode == WAITING and now - start > self.config.max_wait_s:
                report.reason = f"no decision within max_wait_s = {self.config.max_wait_s} s; the car never moved"
                break
            if self.mode == RUNNING and self.gate.silent():  # the silence watchdog
                self.mode = STOPPED
                stop = {"last_heard": self.client.last_heard, "commanded": now}
                self.gate.log("safe_stop", {"reason": "silence", "robot_time": now,
                                            "silent_for_s": now - self.client.last_heard})
            if now >= next_decide and self.client.session is not None:
                reading = self.robot.read(frame=self.config.send_frames)
                self._send_observation(reading, report)
                next_decide = now + self.config.decide_every_s
            else:
                reading = self.robot.read()
            command = self._command(reading)
            verdict = self.shield.filter(_shield_state(reading), command)
            report.shield_interventions += verdict.intervened
            executed = Command(verdict.executed["speed"], verdict.executed["steer"])
            self.robot.write(executed)
            if self.mode != WAITING:
                armed_ticks += 1
            if stop is not None and "standstill" not in stop and abs(reading.state.v) < 0.05:
                stop["standstill"] = now
                report.safe_stops.append(stop)
            if self.mode == RUNNING and stop is not None:
                stop = None
            self._record(report, reading, executed)
            self.client.send(CommandMsg(seq=0, t=now, speed=executed.speed, steer=executed.steer,
                                        verdict=verdict.kind, mode=self.mode, state=state_record(reading.state)))
            # The wait for the next period is the poll of the link.
            next_tick += period
            wait = max(0.0, next_tick - self.clock()) if self.config.realtime else UNPACED_WAIT_S
            for message, _ in self.client.poll(wait):
                if isinstance(message, DecisionMsg):
                    self._take(message)
                elif isinstance(message, Refused):
                    self.gate.refuse(message, f"policy side refused: {message.reason}")
                elif isinstance(message, Stop):
                    self.gate.log("link", {"event": "stop", "detail": message.reason, "robot_time": self.clock()})
            self.gate.log_link_events()
        if stop is not None and stop not in report.safe_stops:
            report.safe_stops.append(stop)
        report.reason = report.reason or "done"
        report.applied, report.refused = self.applied, dict(self.gate.refused)
        self.robot.write(Command(0.0, reading.state.steer))
        return report

    def _send_observation(self, reading: CarReading, report: RuntimeReport) -> None:
        obs = instruction_observation(reading.state, self.track, reading.frame, self.instruction,
                                      self.robot.vehicle.width)
        seq = self.client.send_observation(obs)
        if seq is not None:
            self.gate.remember(seq, obs)
            report.observations_sent += 1

    def _command(self, reading: CarReading) -> Command:
        st = reading.state
        if self.mode == WAITING:
            return Command(0.0, st.steer)
        out = self.mpc.control(mpc_state(st.s, st.d, st.alpha, st.v, st.steer))
        if self.mode == STOPPED:  # backup controller: brake to a stop along the planned steering
            return Command(0.0, out.steer)
        return Command(out.speed, out.steer)

    def _record(self, report: RuntimeReport, reading: CarReading, executed: Command) -> None:
        st = reading.state
        for name, value in (("t", st.t), ("x", st.x), ("y", st.y), ("s", st.s), ("d", st.d), ("v", st.v),
                            ("steer", st.steer), ("speed_cmd", executed.speed), ("steer_cmd", executed.steer),
                            ("mode", self.mode)):
            report.trace[name].append(value)


def _shield_state(reading: CarReading) -> CarShieldState:
    st = reading.state
    return CarShieldState(st.x, st.y, st.yaw, st.v, st.steer, st.s, None)


def state_record(state: CarState) -> dict[str, float]:
    """The STATE_FIELDS of a state, as plain floats (for the period's command message)."""
    return {name: float(getattr(state, name)) for name in STATE_FIELDS}


def stop_latencies(report: RuntimeReport) -> list[float]:
    """Seconds from the last message heard to the stop command, per safe stop."""
    return [s["commanded"] - s["last_heard"] for s in report.safe_stops]
