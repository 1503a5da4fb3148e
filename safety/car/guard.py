"""The safety layer between any controller and the car: shield, constraint costs, counts.

Every caller that commands the car (the gym env, the MPC loop, later the bridge's robot
side) goes through one `CarGuard`, so the shield and the cost accounting are the same
everywhere. Constraint costs are measured on the car's actual state after each step:
per constraint an indicator, a magnitude (how far past the limit) and a robustness
margin (how far inside it; negative when violated).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from safety.car.clearance import clearance_map
from safety.car.shield import CarShield, CarShieldState, lidar_points
from safety.car.spec import CarSafetySpec
from safety.verdict import InterventionCounter, StepCosts, Verdict
from twin.car.actuation import Command
from twin.car.twin import CarTwin, StepReport
from twin.car.vehicle import VehicleParams

SPEED_TOLERANCE = 0.05
"""Measured speed may exceed a limit by this much (m/s) before it counts: speed-loop ripple."""


def spec_for_vehicle(spec: CarSafetySpec, vehicle: VehicleParams, control_hz: float) -> CarSafetySpec:
    """The spec with a car's own geometry and control period filled in (a twin's or a robot's)."""
    return dataclasses.replace(spec, control_period=1.0 / control_hz, wheelbase=vehicle.wheelbase,
                               car_length=vehicle.length, car_width=vehicle.width, steer_max=vehicle.steer_max)


def spec_for_twin(spec: CarSafetySpec, twin: CarTwin) -> CarSafetySpec:
    """The spec with the twin's own geometry and control period filled in."""
    return spec_for_vehicle(spec, twin.config.params.vehicle, twin.config.control_hz)


class CarGuard:
    """Shield every command to one twin and account for the constraints after every step."""

    def __init__(self, twin: CarTwin, spec: CarSafetySpec | None = None, shield: bool = True) -> None:
        self.twin = twin
        self.spec = spec_for_twin(spec or CarSafetySpec(), twin)
        self.enabled = shield
        self.shield = CarShield(self.spec, clearance_map(twin.config.track, twin.config.obstacles))
        self.counter = InterventionCounter()
        self._beams: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        self.shield.reset(self.twin.state.steer)
        self.counter = InterventionCounter()

    def filter(self, command: Command, lidar_ranges: np.ndarray | None = None) -> Verdict:
        """The shield's verdict on `command`; with the shield disabled, a pass-through verdict."""
        st = self.twin.state
        if not self.enabled:
            verdict = Verdict("passed", {"speed": command.speed, "steer": command.steer},
                              {"speed": command.speed, "steer": command.steer})
        else:
            points = None
            if lidar_ranges is not None:
                lp = self.twin.params.lidar
                if self._beams is None or len(self._beams[0]) != len(lidar_ranges):
                    angles = np.linspace(-lp.fov / 2, lp.fov / 2, len(lidar_ranges))
                    self._beams = (np.cos(angles), np.sin(angles))
                points = lidar_points(*self._beams, lidar_ranges, lp.max_range)  # float32 as scanned: no copy
            verdict = self.shield.filter(CarShieldState(st.x, st.y, st.yaw, st.v, st.steer, st.s, points), command)
        self.counter.add(verdict)
        return verdict

    def step(self, command: Command, lidar_ranges: np.ndarray | None = None) -> tuple[Verdict, StepReport, StepCosts]:
        """Shield the command, step the twin with the executed one, account for the constraints."""
        verdict = self.filter(command, lidar_ranges)
        report = self.twin.step(Command(verdict.executed["speed"], verdict.executed["steer"]))
        return verdict, report, self.costs(report.contacts)

    def costs(self, contacts: tuple[str, ...]) -> StepCosts:
        st = self.twin.state
        sp = self.spec
        limit = sp.v_reverse_max if st.v < 0 else sp.speed_limit(st.s, self.twin.track.length)
        c, s = math.cos(st.yaw), math.sin(st.yaw)
        off = self.shield.offset
        room = self.shield.map.lookup(np.array([st.x + off * c, st.x - off * c]),
                                      np.array([st.y + off * s, st.y - off * s]))
        margins = {
            "collision": float(room.min()) - self.shield.radius,
            "speed": limit - abs(st.v),
            "lateral_accel": sp.a_lat_max - abs(st.ay),
        }
        indicators = {
            "collision": float(bool(contacts)),
            "speed": float(margins["speed"] < -SPEED_TOLERANCE),
            "lateral_accel": float(margins["lateral_accel"] < 0),
        }
        magnitudes = {k: max(0.0, -v) if indicators[k] else 0.0 for k, v in margins.items()}
        magnitudes["collision"] = indicators["collision"]
        return StepCosts(indicators, magnitudes, margins)
