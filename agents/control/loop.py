"""The car's closed control loop: state -> MPC -> command -> twin, recorded as a trace.

One function serves every caller that drives the car with the MPC (the instruction
task, the demo, the expert's evaluation, benchmarks), so they all measure the same thing.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from agents.control.mpc import FrenetMPC, mpc_state
from agents.control.mpc_params import MPCParams
from safety.car.guard import CarGuard
from safety.verdict import Verdict
from twin.car.actuation import Command
from twin.car.twin import CarState, CarTwin

TRACE_FIELDS = ("t", "x", "y", "s", "d", "alpha", "v", "steer", "ax", "ay", "progress", "speed_cmd", "steer_cmd")


@dataclasses.dataclass
class Trace:
    """Per-step record of one drive; every array has one entry per control step."""

    columns: dict[str, np.ndarray]
    crashed: bool
    """The car hit a wall or obstacle."""
    crash_time: float | None
    """When it crashed; after that the car stands still until the drive's end."""
    mpc_solve_times: np.ndarray
    """Wall time of each MPC call (s)."""
    mpc_fallbacks: int
    """Control periods in which the QP was not solved and the previous plan was used."""
    command_fixes: int
    """Commands the twin had to clamp."""
    shield: dict
    """The shield's intervention counts (empty without a guard)."""
    costs: dict[str, float]
    """Constraint cost indicators summed over the drive, by constraint (empty without a guard)."""

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def mpc_solve_p50_ms(self) -> float:
        """Median wall time of the MPC calls (ms): a measurement of this machine, not of the episode."""
        return float(np.median(self.mpc_solve_times) * 1e3) if len(self.mpc_solve_times) else 0.0


class MPCController:
    """The MPC as a per-step controller: state -> command, keeping its solve times."""

    def __init__(self, mpc: FrenetMPC, params: MPCParams) -> None:
        self.mpc, self.params = mpc, params
        self.solve_times: list[float] = []
        self.fallbacks = 0

    def reset(self) -> None:
        self.mpc.set_params(self.params)
        self.mpc.reset()
        self.solve_times, self.fallbacks = [], 0

    def __call__(self, st: CarState) -> Command:
        out = self.mpc.control(mpc_state(st.s, st.d, st.alpha, st.v, st.steer))
        self.solve_times.append(out.solve_time_s)
        self.fallbacks += out.status != "solved"
        return Command(out.speed, out.steer)


class Controller(Protocol):
    """Anything that turns the car's (sensed) state into a command each control period."""

    def reset(self) -> None: ...

    def __call__(self, state: CarState) -> Command: ...


class StepHooks(Protocol):
    """What a scenario adds to the loop: events before a step, disturbed sensing and actuation, signals after it."""

    def before(self, twin: CarTwin) -> None:
        """Called before the controller runs (events fire here)."""

    def sense(self, state: CarState) -> CarState:
        """The state the controller sees."""

    def actuate(self, command: Command) -> Command:
        """The command the car receives after the shield (actuator noise the shield cannot know)."""

    def after(self, twin: CarTwin, verdict: Verdict | None, executed: Command) -> None:
        """Called after the twin stepped."""


def drive(twin: CarTwin, mpc: FrenetMPC, params: MPCParams, duration_s: float,
          guard: CarGuard | None = None, hooks: StepHooks | None = None) -> Trace:
    """Drive an already reset twin with the MPC under `params` for `duration_s` simulated seconds."""
    return drive_with(twin, MPCController(mpc, params), duration_s, guard, hooks)


def drive_with(twin: CarTwin, controller: Controller, duration_s: float, guard: CarGuard | None = None,
               hooks: StepHooks | None = None) -> Trace:
    """Drive an already reset twin with any controller for `duration_s` simulated seconds.

    With a guard, every command passes the shield (given the lidar scan when the twin casts one) and
    constraint costs are summed."""
    controller.reset()
    costs: dict[str, float] = {}
    if guard is not None:
        guard.reset()
    steps = int(round(duration_s * twin.config.control_hz))
    rows = {name: np.zeros(steps) for name in TRACE_FIELDS}
    fixes = 0
    crash_time = None
    for k in range(steps):
        if hooks is not None:
            hooks.before(twin)
        st = twin.state
        if st.crashed:
            # A crashed car stands still for the rest of the drive; the metrics see that.
            command = Command(0.0, st.steer)
        else:
            command = controller(hooks.sense(st) if hooks is not None else st)
        verdict = None
        if guard is not None:
            verdict = guard.filter(command, twin.lidar() if twin.config.lidar else None)
            command = Command(verdict.executed["speed"], verdict.executed["steer"])
        executed = hooks.actuate(command) if hooks is not None else command
        report = twin.step(executed)
        if guard is not None:
            for name, value in guard.costs(report.contacts).indicators.items():
                costs[name] = costs.get(name, 0.0) + value
        if hooks is not None:
            hooks.after(twin, verdict, executed)
        fixes += bool(report.command_fixes)
        st = twin.state
        for name, value in (("t", st.t), ("x", st.x), ("y", st.y), ("s", st.s), ("d", st.d), ("alpha", st.alpha),
                            ("v", st.v), ("steer", st.steer), ("ax", st.ax), ("ay", st.ay),
                            ("progress", st.progress), ("speed_cmd", command.speed), ("steer_cmd", command.steer)):
            rows[name][k] = value
        if st.crashed and crash_time is None:
            crash_time = st.t
    shield = guard.counter.as_dict() if guard is not None else {}
    return Trace(rows, crash_time is not None, crash_time, np.array(getattr(controller, "solve_times", [])),
                 getattr(controller, "fallbacks", 0), fixes, shield, costs)
