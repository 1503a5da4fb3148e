"""Replaying a logged drive in the car twin, segment by segment, under chosen parameter values.

Each segment starts from the logged state exactly (`CarTwin.set_state`): pose, speed, steering,
yaw rate, and the slip angle implied by the logged heading to the track. Before that, the
`history` commands executed just before the segment are stepped once, so the actuation delay
line holds what was really in flight; then the car is put back at the logged start and the
segment's logged commands are replayed. The replay is compared with the log as (x, y, measured
speed), where the measured speed is the twin's speed plus `odometry.speed_bias` (the twin's own
odometry offset: logged speed = true speed + bias, so the true start speed is the logged one
minus the bias).

The twin applies its actuation delay in whole physics steps, so a replay is a step function of
`actuation.delay_s`, which a gradient-based fit cannot follow; `predict` therefore blends the
replays at the two neighbouring whole-step delays linearly (exact at whole steps, continuous
between them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from bridge.calibration.log import DriveLog, Segment
from twin.car.actuation import Command
from twin.car.twin import CarParams, CarTwin, CarTwinConfig
from twin.core.config import get_path

PHYSICS_DT = 0.01
"""Integration step of the replaying twin (s): the emulator's, and the twin's default."""
DELAY = "actuation.delay_s"
BIAS = "odometry.speed_bias"


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


class Replay:
    """One twin on the log's track that replays segments of `log` (call `close` when done)."""

    def __init__(self, log: DriveLog, history: int, base: CarParams | None = None) -> None:
        self.log, self.history = log, history
        self.base = base or CarParams()
        self.twin = CarTwin(CarTwinConfig(track=log.track, control_hz=log.control_hz, physics_dt=PHYSICS_DT,
                                          lidar=False, camera=False, params=self.base))
        self._rng = np.random.default_rng(0)  # nothing random is drawn: the replay twin has no randomization
        track = self.twin.track
        heading = np.array([track.heading[track.frenet(x, y)[2]] for x, y in zip(log["x"], log["y"])])
        self.slip = _wrap(log["alpha"] - log["yaw"] + heading)
        """Slip angle of each record: alpha is the heading to the track, yaw + slip that of the velocity."""

    def nominal(self, paths: Sequence[str]) -> dict[str, float]:
        return {p: float(get_path(self.base, p)) for p in paths}

    def observed(self, segments: Sequence[Segment]) -> np.ndarray:
        """Logged (x, y, speed) of each segment's records start .. stop: shape (segments, steps + 1, 3)."""
        return np.stack([np.stack([self.log[f][s.start:s.stop + 1] for f in ("x", "y", "v")], axis=1)
                         for s in segments])

    def predict(self, values: Mapping[str, float], segments: Sequence[Segment],
                offsets: np.ndarray | None = None) -> np.ndarray:
        """The replay of each segment under `values` (paths the twin's randomization uses; the rest stay at the
        base), as (x, y, measured speed) at records start .. stop: shape (segments, steps + 1, 3).

        `offsets` (segments, 4) moves each segment's start away from the logged one by (x, y, yaw, measured
        speed): a fit may estimate the true start, since a logged one carries the sensors' noise."""
        delay = float(values.get(DELAY, get_path(self.base, DELAY)))
        steps = delay / PHYSICS_DT
        low = math.floor(steps + 1e-9)
        weight = max(0.0, steps - low)
        offsets = np.zeros((len(segments), 4)) if offsets is None else offsets
        out = self._replay({**values, DELAY: low * PHYSICS_DT}, segments, offsets)
        if weight > 1e-12:
            upper = self._replay({**values, DELAY: (low + 1) * PHYSICS_DT}, segments, offsets)
            out = (1.0 - weight) * out + weight * upper
        return out

    def _replay(self, values: Mapping[str, float], segments: Sequence[Segment], offsets: np.ndarray) -> np.ndarray:
        log, twin = self.log, self.twin
        bias = float(values.get(BIAS, get_path(self.base, BIAS)))
        speed, steer = log["speed_cmd"], log["steer_cmd"]
        out = np.empty((len(segments), segments[0].steps + 1, 3)) if segments else np.empty((0, 0, 3))
        for i, seg in enumerate(segments):
            twin.reset(self._rng, draws={})  # a fresh clock and delay line
            twin.apply(dict(values))
            a = seg.start
            dx, dy, dyaw, dv = offsets[i]
            start = dict(x=log["x"][a] + dx, y=log["y"][a] + dy, yaw=log["yaw"][a] + dyaw, v=log["v"][a] + dv - bias,
                         steer=log["steer"][a], yaw_rate=log["yaw_rate"][a], slip=self.slip[a])
            twin.set_state(**start)
            for k in range(a - self.history, a):  # fill the delay line with what was in flight
                twin.step(Command(speed[k], steer[k]))
            twin.set_state(**start)
            out[i, 0] = start["x"], start["y"], start["v"] + bias
            for j in range(seg.steps):
                twin.step(Command(speed[a + j], steer[a + j]))
                st = twin.state
                out[i, j + 1] = st.x, st.y, st.v + bias
        return out

    def close(self) -> None:
        self.twin.close()
