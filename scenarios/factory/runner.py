"""Factory scenarios: one episode of the inspection line under a scenario's sample vector and seed.

The twin, its guard and the inspector are built once per runner and reused; each episode
resets them from (sample vector, seed), so the same pair gives the same episode. The line
runs as the inspection env runs it (belt at the cell's belt speed, arm at the task's
nominal speed, every command through the FactoryGuard) and the inspector decides every part
that crosses the inspection line, through the same observation the env gives it. Events
go through the twin's own injections, except an operator's arm-speed override, which is a
change of the command; disturbances perturb the command before the guard and the
separation the shield senses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from agents.policies.inspectors import HeuristicInspector, ScriptedInspector
from agents.policies.named import python_policy
from agents.tasks.factory.envs import FactoryTaskConfig, inspection_observation
from safety.factory.guard import MOVING, FactoryGuard
from safety.factory.shield import FactoryShieldState
from safety.factory.spec import FactorySafetySpec
from scenarios.events import Disturbances, EventClock
from scenarios.space import SampleSpace
from scenarios.spec import Scenario
from scenarios.systems import safety_spec
from scenarios.worlds import FACTORY
from twin.core.bullet import PHYSICS_HZ
from twin.core.config import ConfigError, path_bounds
from twin.core.contracts import Policy
from twin.factory.command import FactoryCommand
from twin.factory.params import FactoryParams
from twin.factory.person import PATROL_Y
from twin.factory.twin import DECISIONS, EVENTS, FactoryStepReport, FactoryTwin, FactoryTwinConfig

NOMINAL_ARM_SPEED = FactoryTaskConfig().arm_speed
"""Arm tool speed the line commands (m/s), the inspection env's; the shield may lower it."""
CELL_EDGE_Y = PATROL_Y + path_bounds(FactoryParams(), "person.patrol_offset")[0]
"""The cell's edge on the person's side (m): the nearest any patrol line comes to the belt. The person
only crosses it on a visit into the cell, so 'in the cell' is 'nearer the belt than this'."""
COMMAND_ACTIONS = ("arm_speed",)
"""Actions that override the line's command; every other declared action is one of the twin's own injections."""
if set(FACTORY.actions) != {*EVENTS, *COMMAND_ACTIONS}:  # the declaration, the twin and this runner must agree
    raise ImportError(f"scenarios.worlds declares factory actions {sorted(FACTORY.actions)}, but the factory runner "
                      f"runs {sorted({*EVENTS, *COMMAND_ACTIONS})}: keep them in step")


def check_control_hz(hz: float) -> None:
    """The factory's physics runs at 240 Hz: a control period must be a whole number of physics steps."""
    ratio = PHYSICS_HZ / hz
    if abs(ratio - round(ratio)) > 1e-9:
        divisors = [d for d in range(1, 101) if PHYSICS_HZ % d == 0]
        raise ConfigError(f"world.control_hz {hz:g} must divide the factory's {PHYSICS_HZ:g} Hz physics rate evenly; "
                          f"choose one of {divisors} Hz")


def iso_min(spec: FactorySafetySpec, tool_speed: float) -> float:
    """Protective separation needed at a measured tool speed (m): 0 while the arm stands still, as the
    guard counts it (a person may come up to a stopped robot: that is what the protective stop is for)."""
    return spec.protective_separation(tool_speed) if tool_speed > MOVING else 0.0


def _time(twin: FactoryTwin) -> float:
    """The twin's clock to the nanosecond: k steps of 1/hz summed read k/hz (not 3.9999999999999947), so a
    trigger on t fires on the same step whatever the rounding of the sum."""
    return round(twin.t, 9)


class _SensedGuard(FactoryGuard):
    """The FactoryGuard whose shield senses the separation with an error (the `separation_sense` channel).

    A subclass here rather than a hook in safety/: only scenarios perturb what the shield senses."""

    separation_error = 0.0
    """m added to the separation the shield senses this step."""

    def state(self) -> FactoryShieldState:
        st = super().state()
        return dataclasses.replace(st, separation=st.separation + self.separation_error) if self.separation_error else st


def _policy(name: str) -> Policy:
    if name == "heuristic":
        return HeuristicInspector()
    if name == "expert":
        return ScriptedInspector()
    return python_policy(name)


class FactoryRunner:
    """Runs episodes of one factory scenario."""

    def __init__(self, scenario: Scenario) -> None:
        w, sysspec = scenario.world, scenario.system
        check_control_hz(w.control_hz)
        self.scenario = scenario
        self.space = SampleSpace(scenario)
        declared = {path for path, _ in scenario.nominal}
        rest = tuple(t for t in FACTORY.default_randomization if t.field not in declared) if w.randomize_rest else ()
        self.twin = FactoryTwin(FactoryTwinConfig(control_hz=w.control_hz, randomization=rest))
        spec = safety_spec("factory", sysspec)
        if "control_period" not in dict(sysspec.safety):
            # The shield must account for the time a command is held, which is this world's control period.
            spec = dataclasses.replace(spec, control_period=1.0 / w.control_hz)
        self.spec = spec
        self.guard = _SensedGuard(self.twin, spec, shield=sysspec.shield)
        self.policy = _policy(sysspec.policy)
        self.steps = max(1, round(w.duration_s * w.control_hz))

    # -- one episode ----------------------------------------------------------------------------
    def run(self, z: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Signals (one array per declared signal, one entry per control step) and episode facts."""
        sampled = self.space.values(z)
        twin, guard = self.twin, self.guard
        rng = np.random.default_rng([seed, 0])
        draws = dict(twin.randomizer.draw_reset(rng))
        draws.update(sampled.draws)
        twin.reset(rng, draws=draws)
        guard.reset()
        guard.separation_error = 0.0
        episode = _Episode(self, EventClock(self.scenario.events, sampled.events),
                           Disturbances(self.scenario.disturbances, sampled.disturbances, self.scenario.world.duration_s,
                                        np.random.default_rng([seed, 2])))
        for _ in range(self.steps):
            episode.step()
        signals = {k: np.asarray(v, float) for k, v in episode.rows.items()}
        info = {"decision": episode.decisions, "events_fired": episode.events.fired, "shield": guard.counter.as_dict(),
                "costs": episode.costs, "disturbance_loglik": episode.disturbances.loglik, "counters": dict(twin.counters),
                "trace": {k: np.asarray(v, float) for k, v in episode.trace.items()}}
        return signals, info

    def close(self) -> None:
        self.twin.close()


class _Episode:
    """The scenario's part of one episode: events, disturbances, the inspector, signals."""

    def __init__(self, runner: FactoryRunner, events: EventClock, disturbances: Disturbances) -> None:
        self.runner, self.events, self.disturbances = runner, events, disturbances
        self.twin = runner.twin
        self.rows: dict[str, list[float]] = {name: [] for name in FACTORY.signals}
        self.trace: dict[str, list[float]] = {k: [] for k in ("arm_cmd", "arm_executed", "person_x", "person_y")}
        self.costs: dict[str, float] = {}
        self.decisions: dict[str, Any] = {"policy_id": getattr(runner.policy, "policy_id", type(runner.policy).__name__),
                                          "decided": 0, **{d: 0 for d in DECISIONS}, "invalid": 0}
        self.false_accepts = self.false_rejects = 0
        self.override: tuple[float, float] | None = None
        """(until, speed) of an operator's arm-speed override."""
        self.signals = self._signals(None, False, 0.0)

    def step(self) -> None:
        twin = self.twin
        t = _time(twin)
        if self.override is not None and t >= self.override[0] - 1e-9:
            self.override = None
        for event, params in self.events.due(t, self.signals):
            self._act(event.action, params)
        noise = self.disturbances.at(t)
        self._inspect()
        arm = self.override[1] if self.override is not None else NOMINAL_ARM_SPEED
        command = FactoryCommand(arm + noise.get("arm_speed", 0.0), twin.params.belt.speed + noise.get("belt_speed", 0.0))
        self.runner.guard.separation_error = noise.get("separation_sense", 0.0)
        verdict, report, costs = self.runner.guard.step(command)
        for name, value in costs.indicators.items():
            self.costs[name] = self.costs.get(name, 0.0) + value
        self.signals = self._signals(report, verdict.intervened, costs.indicators["jam_running"])
        for name, value in self.signals.items():
            self.rows[name].append(value)
        for key, value in (("arm_cmd", command.arm_speed), ("arm_executed", verdict.executed["arm_speed"]),
                           ("person_x", twin.person.pos[0]), ("person_y", twin.person.pos[1])):
            self.trace[key].append(float(value))

    def _act(self, action: str, params: dict[str, float]) -> None:
        p = {**{q.name: q.default for q in FACTORY.actions[action].params}, **params}
        if action == "arm_speed":
            self.override = (_time(self.twin) + p["duration_s"], p["speed"])
        else:  # one of the twin's injections (checked when this module loads)
            given = {"duration": p.get("duration_s"), "magnitude": p.get("magnitude")}
            self.twin.inject(action, **{k: v for k, v in given.items() if v is not None})

    def _inspect(self) -> None:
        """The inspector decides every part waiting at the inspection line, as the inspection env asks it."""
        twin = self.twin
        for part in twin.awaiting():
            frame = twin.inspection_image()
            obs = inspection_observation(twin, part, frame, twin.t / self.runner.scenario.world.duration_s)
            answer = (self.runner.policy.decide(obs).action or {}).get("decision")
            if answer not in DECISIONS:
                self.decisions["invalid"] += 1
                answer = "hold"  # an unreadable answer is the safe one: a person looks at the part
            twin.decide(part.id, answer)
            self.decisions["decided"] += 1
            self.decisions[answer] += 1
            self.false_accepts += answer == "accept" and part.spec.defective
            self.false_rejects += answer == "reject" and not part.spec.defective

    def _signals(self, report: FactoryStepReport | None, intervened: bool, jam_running: float) -> dict[str, float]:
        twin = self.twin
        tool_speed = report.tool_speed if report is not None else 0.0
        separation = twin.separation
        return {
            "t": _time(twin), "separation": separation, "iso_min": iso_min(self.runner.spec, tool_speed),
            "tool_speed": tool_speed, "belt_speed": report.belt_speed if report is not None else 0.0,
            "jammed": float(twin.jammed), "contact": float(separation <= 0.0),
            "dropped": float(twin.counters["dropped"]), "binned": float(twin.counters["binned"]),
            # The margin keeps a patrol walked at the lowest offset, exactly on the edge, outside.
            "person_in_cell": float(twin.person.pos[1] < CELL_EDGE_Y - 1e-6), "intervened": float(intervened),
            "jam_running": float(jam_running), "false_accepts": float(self.false_accepts),
            "false_rejects": float(self.false_rejects),
        }
