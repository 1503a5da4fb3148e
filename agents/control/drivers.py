"""Scripted command-level drivers: no MPC, one cheap rule per control period.

`PurePursuit` is the classic geometric path tracker (steer toward a point a speed-dependent
distance ahead on the centerline, slow for curvature): the fast scripted system under test
of scenario campaigns. `RecklessDriver` draws random throttle and steering from its own
seeded generator: the shield's stress test.
"""

from __future__ import annotations

import math

import numpy as np

from twin.car.actuation import Command
from twin.car.tracks import Track
from twin.car.twin import CarState


class PurePursuit:
    """Follow the centerline at a target speed, slowing where the track curves."""

    def __init__(self, track: Track, wheelbase: float, speed: float, lat_accel: float = 6.0,
                 lookahead_base: float = 0.6, lookahead_gain: float = 0.25) -> None:
        self.track, self.wheelbase, self.speed = track, wheelbase, speed
        self.lat_accel, self.lookahead_base, self.lookahead_gain = lat_accel, lookahead_base, lookahead_gain

    def reset(self) -> None:
        pass

    def __call__(self, st: CarState) -> Command:
        lookahead = self.lookahead_base + self.lookahead_gain * abs(st.v)
        gx, gy = self.track.to_cartesian(st.s + lookahead, 0.0)
        dx, dy = float(gx) - st.x, float(gy) - st.y
        alpha = math.atan2(dy, dx) - st.yaw
        steer = math.atan2(2.0 * self.wheelbase * math.sin(alpha), max(math.hypot(dx, dy), 1e-3))
        # The speed the tightest curvature within braking reach allows (v^2 kappa <= a_lat).
        ahead = st.s + np.linspace(0.0, 1.0 + 0.5 * abs(st.v), 8)
        kappa = float(np.max(np.abs(self.track.curvature_at(ahead))))
        speed = self.speed if kappa < 1e-6 else math.copysign(min(abs(self.speed), math.sqrt(self.lat_accel / kappa)),
                                                              self.speed)
        return Command(speed, steer)


class RecklessDriver:
    """Random throttle (mostly forward) and random steering, redrawn every control period."""

    def __init__(self, rng: np.random.Generator, speed_scale: float, steer_max: float) -> None:
        self.rng, self.speed_scale, self.steer_max = rng, speed_scale, steer_max

    def reset(self) -> None:
        pass

    def __call__(self, st: CarState) -> Command:
        throttle = self.rng.uniform(0.3, 1.0) * self.rng.choice([1, 1, 1, -1])
        return Command(float(throttle * self.speed_scale), float(self.rng.uniform(-1, 1) * self.steer_max))


class ReplayDriver:
    """Plays back a recorded sequence of commands, one per control period (a robot's log as a scenario);
    after the last one it holds the steering and stops."""

    def __init__(self, commands: tuple[tuple[float, float], ...]) -> None:
        self.commands = commands
        self.k = 0

    def reset(self) -> None:
        self.k = 0

    def __call__(self, st: CarState) -> Command:
        k, self.k = self.k, self.k + 1
        if k < len(self.commands):
            return Command(*self.commands[k])
        return Command(0.0, self.commands[-1][1] if self.commands else 0.0)
