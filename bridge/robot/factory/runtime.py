"""The factory cell's side: the line runs here, part decisions arrive over the bridge.

Every control period the cell commands belt and arm through its own guard (the factory
shield, `safety.factory.guard.FactoryGuard`, the code the twin runs: ISO/TS 15066 speed and
separation, belt stop on a jam, no release outside a bin). When a part reaches the inspection
line the cell sends its frame and waits for a decision with the belt stopped (an inspection
stop: an undecided part never rides on toward the robot); the person, the arm and the rest
of the cell go on. A decision is applied only if the shared gate finds it fresh, names one of
accept / reject / hold, and its part is still waiting; if no decision comes within
`ask_again_s`, the cell asks again with a fresh frame.

Silence for the client's `silence_timeout_s` stops belt and arm (the cell's backup command)
until the link is heard again. Every decision, refusal, stop and resume is in the cell's
audit log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from agents.tasks.factory.envs import inspection_observation
from agents.tasks.factory.metrics import line_metrics
from bridge.client import BridgeClient
from bridge.protocol import DecisionMsg, Refused, decision_from
from bridge.robot.gate import UNPACED_WAIT_S, DecisionGate
from safety.audit.log import AuditLog
from safety.audit.records import decision_body
from safety.factory.guard import FactoryGuard
from safety.factory.spec import FactorySafetySpec
from twin.core.config import bounded, check_bounds
from twin.core.contracts import Observation
from twin.factory.command import FactoryCommand
from twin.factory.twin import DECISIONS, FactoryTwin

WAITING, RUNNING, STOPPED = "waiting", "running", "safe-stop"
"""No session yet (all stopped); running; stopped after silence."""


@dataclasses.dataclass(frozen=True)
class CellConfig:
    """The cell-side loop."""

    parts: int = bounded(8, 1, 100_000)
    """Stop after this many decisions."""
    max_seconds: float = bounded(300.0, 1.0, 1e6)
    """Stop after this much line time in any case (a run otherwise ends when the last decided part
    lies in its bin)."""
    arm_speed: float = bounded(0.6, 0.0, 10.0)
    """Arm tool speed commanded (m/s); the shield may lower it."""
    ask_again_s: float = bounded(2.0, 0.05, 3600.0)
    """Send a fresh observation of a waiting part after this long without a decision."""
    realtime: bool = True
    """Keep the control period in wall time."""

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclasses.dataclass
class CellReport:
    """What happened in the cell."""

    decisions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Per decided part: its id, the decision, the ground truth, and the observation it answered."""
    refused: dict[str, int] = dataclasses.field(default_factory=dict)
    safe_stops: list[dict[str, float]] = dataclasses.field(default_factory=list)
    costs: dict[str, float] = dataclasses.field(default_factory=dict)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    timeline: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    reason: str = ""


class CellRuntime:
    """Run the (emulated) cell `twin` with part decisions from `client`."""

    def __init__(self, twin: FactoryTwin, client: BridgeClient, config: CellConfig | None = None,
                 safety: FactorySafetySpec | None = None, audit: AuditLog | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.twin, self.client = twin, client
        self.config = config or CellConfig()
        self.clock = clock or client.clock
        self.guard = FactoryGuard(twin, safety or FactorySafetySpec())
        self.gate: DecisionGate[tuple[int, Observation]] = DecisionGate(client, audit, self.clock)
        self.mode = WAITING
        self._asked: dict[int, float] = {}

    def _take(self, message: DecisionMsg, report: CellReport) -> None:
        why = self.gate.check(message)
        decision = message.action.get("decision")
        if why is None and decision not in DECISIONS:
            why = f"invalid action: decision {decision!r} is not one of {list(DECISIONS)}"
        if why is None and self.gate.sent[message.answers][0] not in {p.id for p in self.twin.awaiting()}:
            why = "not awaited: that part was decided already or left the line"
        if why is not None:
            return self.gate.refuse(message, why)
        part_id, observation = self.gate.accepted(message)
        self.twin.decide(part_id, str(decision))
        part = self.twin.parts[part_id]
        report.decisions.append({"part_id": part_id, "decision": decision, "defective": part.spec.defective,
                                 "defect": part.spec.defect, "answers": message.answers, "observation": observation})
        self.gate.log("decision", decision_body(observation, decision_from(message), executed={"decision": decision},
                                                context={"robot": self.client.robot.name, "part_id": part_id,
                                                         "answers": message.answers, "robot_time": self.clock()}))

    def _ask(self, now: float, decided: int) -> None:
        waiting = self.twin.awaiting()
        if not waiting or self.mode != RUNNING:
            return
        part = waiting[0]
        if now - self._asked.get(part.id, -1e9) < self.config.ask_again_s:
            return
        obs = inspection_observation(self.twin, part, self.twin.inspection_image(), decided / self.config.parts)
        seq = self.client.send_observation(obs)
        if seq is not None:
            self.gate.remember(seq, (part.id, obs))
            self._asked[part.id] = now

    def _in_flight(self, report: CellReport) -> bool:
        """A decided part still on its way to a bin (the run ends when the last one lands)."""
        return any(self.twin.parts[d["part_id"]].status not in ("binned", "dropped") for d in report.decisions
                   if d["part_id"] in self.twin.parts)

    def run(self) -> CellReport:
        period = 1.0 / self.twin.config.control_hz
        report = CellReport()
        self.guard.reset()
        min_separation = float("inf")
        stop: dict[str, float] | None = None
        next_tick = self.clock()
        while self.twin.t < self.config.max_seconds and (len(report.decisions) < self.config.parts
                                                          or self._in_flight(report)):
            now = self.clock()
            if self.mode == WAITING and self.client.session is not None:
                self.mode = RUNNING
                self.gate.log("armed", {"robot_time": now})
            elif self.mode == RUNNING and self.gate.silent():  # the silence watchdog
                self.mode = STOPPED
                stop = {"last_heard": self.client.last_heard, "commanded": now}
                report.safe_stops.append(stop)
                self.gate.log("safe_stop", {"reason": "silence", "robot_time": now,
                                            "silent_for_s": now - self.client.last_heard})
            elif self.mode == STOPPED and not self.gate.silent():
                self.mode = RUNNING
                self.gate.log("resume", {"robot_time": now})
            asking = len(report.decisions) < self.config.parts  # after the last one, parts pass undecided (held)
            if asking:
                self._ask(now, len(report.decisions))
            if self.mode != RUNNING:
                command = FactoryCommand(0.0, 0.0)  # backup: belt and arm stand still
            else:
                belt = 0.0 if asking and self.twin.awaiting() else self.twin.params.belt.speed
                command = FactoryCommand(self.config.arm_speed, belt)
            verdict, step, costs = self.guard.step(command)
            for name, value in costs.indicators.items():
                report.costs[name] = report.costs.get(name, 0.0) + value
            min_separation = min(min_separation, step.separation)
            report.timeline.append({"t": self.twin.t, "mode": self.mode, "belt": step.belt_speed,
                                    "tool_speed": step.tool_speed, "separation": min(step.separation, 5.0),
                                    "intervened": verdict.intervened})
            next_tick += period
            wait = max(0.0, next_tick - self.clock()) if self.config.realtime else UNPACED_WAIT_S
            for message, _ in self.client.poll(wait):
                if isinstance(message, DecisionMsg):
                    self._take(message, report)
                elif isinstance(message, Refused):
                    self.gate.refuse(message, f"policy side refused: {message.reason}")
            self.gate.log_link_events()
        report.reason = "done" if len(report.decisions) >= self.config.parts else "line time limit reached"
        report.refused = dict(self.gate.refused)
        report.metrics = line_metrics(self.twin, min_separation, self.guard.counter.interventions)
        return report
