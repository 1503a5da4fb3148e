"""The car's closed control loop: state -> MPC -> command -> twin, recorded as a trace.

One function serves every caller that drives the car with the MPC (the instruction
task, the demo, the expert's evaluation, benchmarks), so they all measure the same thing.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from agents.control.mpc import FrenetMPC, mpc_state
from agents.control.mpc_params import MPCParams
from safety.car.guard import CarGuard
from twin.car.actuation import Command
from twin.car.twin import CarTwin

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


def drive(twin: CarTwin, mpc: FrenetMPC, params: MPCParams, duration_s: float,
          guard: CarGuard | None = None) -> Trace:
    """Drive an already reset twin with the MPC under `params` for `duration_s` simulated seconds.

    With a guard, every command passes the shield and constraint costs are summed."""
    mpc.set_params(params)
    mpc.reset()
    costs: dict[str, float] = {}
    if guard is not None:
        guard.reset()
    steps = int(round(duration_s * twin.config.control_hz))
    rows = {name: np.zeros(steps) for name in TRACE_FIELDS}
    solve_times: list[float] = []
    fallbacks = fixes = 0
    crash_time = None
    for k in range(steps):
        st = twin.state
        if st.crashed:
            # A crashed car stands still for the rest of the drive; the metrics see that.
            out_speed, out_steer = 0.0, st.steer
        else:
            out = mpc.control(mpc_state(st.s, st.d, st.alpha, st.v, st.steer))
            solve_times.append(out.solve_time_s)
            fallbacks += out.status != "solved"
            out_speed, out_steer = out.speed, out.steer
        if guard is not None:
            verdict, report, step_costs = guard.step(Command(out_speed, out_steer))
            out_speed, out_steer = verdict.executed["speed"], verdict.executed["steer"]
            for name, value in step_costs.indicators.items():
                costs[name] = costs.get(name, 0.0) + value
        else:
            report = twin.step(Command(out_speed, out_steer))
        fixes += bool(report.command_fixes)
        st = twin.state
        for name, value in (("t", st.t), ("x", st.x), ("y", st.y), ("s", st.s), ("d", st.d), ("alpha", st.alpha),
                            ("v", st.v), ("steer", st.steer), ("ax", st.ax), ("ay", st.ay),
                            ("progress", st.progress), ("speed_cmd", out_speed), ("steer_cmd", out_steer)):
            rows[name][k] = value
        if st.crashed and crash_time is None:
            crash_time = st.t
    shield = guard.counter.as_dict() if guard is not None else {}
    return Trace(rows, crash_time is not None, crash_time, np.array(solve_times), fallbacks, fixes, shield, costs)
