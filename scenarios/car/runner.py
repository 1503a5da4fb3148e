"""Car scenarios: one episode of the car twin under a scenario's sample vector and seed.

The twin, its shield and the controller are built once per runner and reused; each
episode resets them from (sample vector, seed), so the same pair gives the same episode.
Events change the twin through its own parameter paths (`CarTwin.apply`), except a box
appearing on the track, which only the world and a lidar can know about.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from agents.control.drivers import PurePursuit, RecklessDriver, ReplayDriver
from agents.control.loop import Controller, MPCController, drive_with
from agents.control.mpc import FrenetMPC, MPCConfig
from agents.control.mpc_params import DEFAULT, clamp_dict
from agents.policies.car_expert import FixedParamsPolicy, ScriptedCarExpert
from agents.policies.named import python_policy
from agents.tasks.car.instruction_env import instruction_observation
from agents.tasks.car.instructions import parse_instruction
from safety.car.guard import CarGuard
from safety.verdict import Verdict
from scenarios.events import Disturbances, EventClock
from scenarios.space import SampleSpace
from scenarios.spec import Scenario
from scenarios.systems import adapter_policy, safety_spec
from scenarios.worlds import CAR
from twin.car.actuation import Command
from twin.car.twin import CarState, CarTwin, CarTwinConfig
from twin.car.world import Obstacle
from twin.core.config import get_path, path_bounds

PARAM_ACTIONS = {
    "friction": lambda p, tw: {"vehicle.mu": tw.params.vehicle.mu * p["scale"]},
    "lidar_dropout": lambda p, tw: {"lidar.dropout": p["fraction"]},
    "delay_spike": lambda p, tw: {"actuation.delay_s": p["delay_s"]},
    "steering_bias": lambda p, tw: {"actuation.steer_offset": p["offset"]},
    "motor_fade": lambda p, tw: {"actuation.motor_gain": p["gain"]},
    "camera_glare": lambda p, tw: {"lighting.ambient": p["ambient"]},
}
"""Event actions that are parameter changes: action -> (params, twin) -> {path: value}."""


def _box_distance(px: np.ndarray, py: np.ndarray, cx: float, cy: float, half: float) -> float:
    """Smallest distance from points to an axis-aligned square (0 inside)."""
    dx = np.maximum(np.abs(px - cx) - half, 0.0)
    dy = np.maximum(np.abs(py - cy) - half, 0.0)
    return float(np.min(np.hypot(dx, dy)))


class CarRunner:
    """Runs episodes of one car scenario."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.space = SampleSpace(scenario)
        w, sysspec = scenario.world, scenario.system
        declared = {path for path, _ in scenario.nominal}
        rest = tuple(t for t in CAR.default_randomization if t.field not in declared) if w.randomize_rest else ()
        self.static = tuple(Obstacle(s=s, d=d, size=size) for s, d, size in sysspec.obstacles)
        self.twin = CarTwin(CarTwinConfig(track=w.track, control_hz=w.control_hz, lidar=w.lidar,
                                          randomization=rest, obstacles=self.static))
        self.spec = safety_spec("car", sysspec)
        self.guard = CarGuard(self.twin, self.spec, shield=sysspec.shield)
        self.instruction = parse_instruction(sysspec.instruction)
        self.mpc = FrenetMPC(self.twin.track, MPCConfig(dt=1.0 / w.control_hz))
        veh = self.twin.config.params.vehicle
        corners = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1], [1, 0], [-1, 0], [0, 1], [0, -1]], float)
        self._footprint = corners * np.array([veh.length / 2, veh.width / 2])

    # -- the system under test ---------------------------------------------------------------
    def controller(self, seed: int) -> tuple[Controller, dict[str, Any]]:
        """The controller for one episode, and what the policy decided (for the record)."""
        policy = self.scenario.system.policy
        veh = self.twin.params.vehicle
        target = self.instruction.target_speed if self.instruction.target_speed is not None else 3.0
        if policy == "pure-pursuit":
            return PurePursuit(self.twin.track, veh.wheelbase, target), {"policy_id": "pure-pursuit"}
        if policy == "replay":
            return ReplayDriver(self.scenario.system.commands), {"policy_id": "replay"}
        if policy == "reckless":
            rng = np.random.default_rng([seed, 1])
            return RecklessDriver(rng, 5.0, veh.steer_max), {"policy_id": "reckless-random"}
        if policy == "default":
            agent = FixedParamsPolicy()
        elif policy == "expert":
            agent = ScriptedCarExpert()
        elif policy.startswith("adapter:"):
            agent = adapter_policy(policy.removeprefix("adapter:"), "car")
        else:
            agent = python_policy(policy)
        obs = instruction_observation(self.twin.state, self.twin.track, None, self.instruction, veh.width)
        decision = agent.decide(obs)
        params, notes = clamp_dict(decision.action) if decision.action else (DEFAULT, {"action": "empty: default used"})
        return MPCController(self.mpc, params), {"policy_id": decision.policy_id, "action": params.as_dict(),
                                                 "thought": decision.thought, "clamped": notes}

    # -- one episode ----------------------------------------------------------------------------
    def run(self, z: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Signals (one array per declared signal, one entry per control step) and episode facts."""
        sampled = self.space.values(z)
        twin = self.twin
        rng = np.random.default_rng([seed, 0])
        draws = dict(twin.randomizer.draw_reset(rng))
        draws.update(sampled.draws)
        twin.reset(rng, draws=draws, obstacles=self.static)
        if self.scenario.system.start:  # a recorded drive starts where the robot was
            twin.set_state(*self.scenario.system.start)
        controller, decision = self.controller(seed)
        hooks = _Hooks(self, EventClock(self.scenario.events, sampled.events),
                       Disturbances(self.scenario.disturbances, sampled.disturbances, self.scenario.world.duration_s,
                                    np.random.default_rng([seed, 2])))
        trace = drive_with(twin, controller, self.scenario.world.duration_s, self.guard, hooks)
        signals = {k: np.asarray(v, float) for k, v in hooks.rows.items()}
        info = {"decision": decision, "events_fired": hooks.events.fired, "crashed": trace.crashed,
                "crash_time": trace.crash_time, "shield": trace.shield, "costs": trace.costs,
                "disturbance_loglik": hooks.disturbances.loglik,
                "obstacles": [[*map(float, twin.track.to_cartesian(ob.s, ob.d)), ob.size, ob in hooks.appeared]
                              for ob in (*self.static, *hooks.appeared)],
                "trace": {k: trace[k] for k in ("x", "y", "v", "speed_cmd", "steer_cmd")}}
        return signals, info

    def close(self) -> None:
        self.twin.close()


class _Hooks:
    """The scenario's part of the control loop: events, disturbances, signals."""

    def __init__(self, runner: CarRunner, events: EventClock, disturbances: Disturbances) -> None:
        self.runner, self.events, self.disturbances = runner, events, disturbances
        self.rows: dict[str, list[float]] = {name: [] for name in CAR.signals}
        self.obstacles = list(runner.static)
        self.appeared: list[Obstacle] = []
        self.restore: list[tuple[float, dict[str, Any] | None, Obstacle | None]] = []
        self.noise: dict[str, float] = {}
        self.signals: dict[str, float] = self._signals(runner.twin, None, None)

    def before(self, twin: CarTwin) -> None:
        t = twin.t
        for when, values, obstacle in [r for r in self.restore if r[0] <= t + 1e-9]:
            self.restore.remove((when, values, obstacle))
            if values is not None:
                twin.apply(values)
            if obstacle is not None:
                self.obstacles.remove(obstacle)
                twin.world.set_obstacles(tuple(self.obstacles))
        for event, params in self.events.due(t, self.signals):
            self._act(twin, event.action, params)
        self.noise = self.disturbances.at(t)

    def _act(self, twin: CarTwin, action: str, params: dict[str, float]) -> None:
        defaults = {p.name: p.default for p in CAR.actions[action].params}
        p = {**defaults, **params}
        if action == "obstacle":
            st = twin.state
            ob = Obstacle(s=(st.s + p["ahead_m"]) % twin.track.length, d=p["d"], size=p["size"])
            self.obstacles.append(ob)
            self.appeared.append(ob)
            twin.world.set_obstacles(tuple(self.obstacles))
            self.restore.append((twin.t + p["duration_s"], None, ob))
            return
        values = {}
        for path, value in PARAM_ACTIONS[action](p, twin).items():
            low, high = path_bounds(twin.params, path)
            values[path] = float(min(high, max(low, value)))  # a field never leaves its declared range
        previous = {path: get_path(twin.params, path) for path in values}
        twin.apply(values)
        self.restore.append((twin.t + p["duration_s"], previous, None))

    def sense(self, state: CarState) -> CarState:
        if not self.noise:
            return state
        return dataclasses.replace(state, v=state.v + self.noise.get("speed_sense", 0.0),
                                   d=state.d + self.noise.get("lateral_sense", 0.0))

    def actuate(self, command: Command) -> Command:
        if not self.noise:
            return command
        return Command(command.speed + self.noise.get("speed", 0.0), command.steer + self.noise.get("steer", 0.0))

    def after(self, twin: CarTwin, verdict: Verdict | None, executed: Command) -> None:
        self.signals = self._signals(twin, verdict, executed)
        for name, value in self.signals.items():
            self.rows[name].append(value)

    def _signals(self, twin: CarTwin, verdict: Verdict | None, executed: Command | None) -> dict[str, float]:
        st = twin.state
        spec = self.runner.spec
        return {
            "t": st.t, "s": st.s, "d": st.d, "speed": st.v, "v": st.v, "progress": st.progress,
            "crashed": float(st.crashed), "clearance": self._clearance(twin, st),
            "zone_limit": spec.speed_limit(st.s, twin.track.length),
            "lat_accel": abs(st.ay), "a_lat_max": spec.a_lat_max,
            "intervened": float(verdict is not None and verdict.intervened),
            "braking": float(executed is not None and executed.speed < st.v - 0.5), "mu": twin.mu_at(st.s),
        }

    def _clearance(self, twin: CarTwin, st: CarState) -> float:
        c, s = math.cos(st.yaw), math.sin(st.yaw)
        fp = self.runner._footprint
        px, py = st.x + fp[:, 0] * c - fp[:, 1] * s, st.y + fp[:, 0] * s + fp[:, 1] * c
        clearance = float(np.min(self.runner.guard.shield.map.lookup(px, py)))
        for ob in self.obstacles:
            if ob in self.runner.static:
                continue  # mapped: already in the clearance map
            ox, oy = twin.track.to_cartesian(ob.s, ob.d)
            clearance = min(clearance, _box_distance(px, py, float(ox), float(oy), ob.size / 2))
        return min(clearance, 0.0) if st.crashed else clearance

