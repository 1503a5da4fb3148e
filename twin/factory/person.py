"""A person walking beside the cell: a patrol line, and sometimes a visit into the robot's cell."""

from __future__ import annotations

import math

import numpy as np

from twin.factory.params import PersonParams

PATROL_Y = 2.3
PATROL_X = (-1.2, 1.2)
CELL_VISIT = (0.2, 1.25)
"""Where a visit into the cell leads (close beside the arm)."""
VISIT_PAUSE = 1.5


class Person:
    """Kinematic walker; `step` returns the new (x, y)."""

    def __init__(self) -> None:
        self.params = PersonParams()
        self.pos = np.array([PATROL_X[0], PATROL_Y])
        self.goals: list[tuple[float, float, float]] = []
        self.velocity = np.zeros(2)

    def reset(self, rng: np.random.Generator, params: PersonParams) -> None:
        self.params = params
        self.pos = np.array([rng.uniform(*PATROL_X), PATROL_Y + params.patrol_offset])
        self.goals = []
        self._forward = bool(rng.random() < 0.5)
        self.velocity = np.zeros(2)

    def visit_cell(self) -> None:
        """Walk into the cell now (an injected event), then back to the patrol."""
        y = PATROL_Y + self.params.patrol_offset
        self.goals = [(CELL_VISIT[0], CELL_VISIT[1], VISIT_PAUSE), (CELL_VISIT[0], y, 0.0)]

    def _plan(self, rng: np.random.Generator) -> None:
        y = PATROL_Y + self.params.patrol_offset
        if rng.random() < self.params.enter_probability:
            self.visit_cell()
        else:
            x = PATROL_X[1] if self._forward else PATROL_X[0]
            self._forward = not self._forward
            self.goals = [(x, y, 0.0)]

    def step(self, dt: float, rng: np.random.Generator) -> np.ndarray:
        if not self.goals:
            self._plan(rng)
        gx, gy, pause = self.goals[0]
        d = np.array([gx, gy]) - self.pos
        dist = float(np.hypot(*d))
        step = self.params.speed * dt
        old = self.pos.copy()
        if dist <= step:
            self.pos = np.array([gx, gy])
            if pause > 0:
                self.goals[0] = (gx, gy, pause - dt)
            else:
                self.goals.pop(0)
        else:
            self.pos = self.pos + d / dist * step
        self.velocity = (self.pos - old) / dt
        return self.pos

    @property
    def speed(self) -> float:
        return float(math.hypot(*self.velocity))
