"""`CarRobot`: what the robot-side runtime needs from a car, real or emulated.

Three verbs, as on any drive-by-wire car: read the sensors (`read`), write the actuators
(`write`), and cut the drive (`estop`). The emulator (`bridge.robot.car.emulator.TwinCar`) is the
first implementation. A real F1TENTH plugs in the same way: `read` returns the localisation
(pose on the map, Frenet s/d from the same track file), the VESC's speed and the servo's
steering angle, and the latest lidar scan and camera frame; `write` publishes an
AckermannDriveStamped to the VESC driver (ROS 2) or sends the duty/servo values directly;
`estop` commands zero current and full brake. Nothing else of the runtime changes.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from twin.car.actuation import Command
from twin.car.twin import CarState
from twin.car.vehicle import VehicleParams


@dataclasses.dataclass(frozen=True)
class CarReading:
    """One read of the car's sensors."""

    state: CarState
    """Pose, speed, steering, Frenet coordinates, accelerations (from localisation and odometry)."""
    lidar: np.ndarray | None = None
    """The latest scan (ranges, m), if the car has a lidar."""
    frame: np.ndarray | None = None
    """The latest camera frame (H, W, 3) uint8, when one was asked for."""


class CarRobot(Protocol):
    """A car the runtime can drive."""

    track: str
    """The map it drives on (a track name the twin knows, or a map file's name)."""
    vehicle: VehicleParams
    """Its geometry and limits (the shield needs wheelbase, size and steering limit)."""
    control_hz: float
    """Rate of the fast loop."""

    def read(self, frame: bool = False) -> CarReading:
        """Sensors now; `frame=True` also grabs a camera frame (costly: only for decisions)."""

    def write(self, command: Command) -> None:
        """Actuators: speed (m/s) and steering angle (rad) for the next control period."""

    def estop(self) -> None:
        """Cut the drive and brake, at once."""
