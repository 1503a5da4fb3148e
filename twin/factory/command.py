"""The low-level command of the factory cell (shared by its twin, its shield and its policies)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class FactoryCommand:
    """One control period's command to the cell."""

    arm_speed: float
    """Arm tool speed (m/s) along its current motion."""
    belt_speed: float
    """Conveyor belt speed (m/s)."""
    release: bool = False
    """Open the gripper (drop what it holds) this period."""
