"""The cell's robot arm (Franka Panda from pybullet_data) and its pick-and-place sequence.

The arm is driven kinematically: its joints follow their targets at a commanded joint
speed, as an industrial servo tracks its trajectory; what we study is where and how fast
it moves next to a person, not its motor dynamics. Targets come from PyBullet's inverse
kinematics, checked by forward kinematics: a pose it cannot reach within 1 cm raises
UnreachableError naming the pose. The gripper is a suction cup: a part within reach of
the cup is held kinematically until released over a bin; a miss is reported.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pybullet as pb

from twin.core.config import ConfigError

JOINTS = tuple(range(7))
EE_LINK = 11
HOME = (0.0, -0.2, 0.0, -2.0, 0.0, 1.9, 0.785)
DOWN = pb.getQuaternionFromEuler([math.pi, 0.0, 0.0])
REACH = 1.0
"""Metres of tool travel per radian of joint travel, at most (the Panda's reach with its hand):
dividing a tool speed by it gives a joint speed that never moves the tool faster."""
CUP_GAP = 0.012
"""Height of the suction cup above a part's top when it grips (m)."""


class UnreachableError(ConfigError):
    """An arm pose outside the arm's workspace."""


@dataclasses.dataclass
class PickTask:
    """Move one part into one bin."""

    part_id: int
    bin_name: str
    phase: str = "approach"
    target: np.ndarray | None = None
    elapsed: float = 0.0


class Arm:
    """Kinematic Panda with IK and a suction gripper."""

    def __init__(self, client: pb, body: int) -> None:
        self.c = client
        self.body = body
        self.home = np.array(HOME)
        self.reset()

    def reset(self) -> None:
        self.q = self.home.copy()
        self._apply(self.q)
        self.task: PickTask | None = None
        self.held: int | None = None
        self.held_offset = 0.0

    def hold(self) -> None:
        """Put the joints back where the arm is meant to be (after a physics step)."""
        self._apply(self.q)

    def _apply(self, q: np.ndarray) -> None:
        for j, v in zip(JOINTS, q):
            self.c.resetJointState(self.body, j, float(v))

    def ee_position(self) -> np.ndarray:
        return np.array(self.c.getLinkState(self.body, EE_LINK, computeForwardKinematics=True)[4])

    def ik(self, target: tuple[float, float, float]) -> np.ndarray:
        """Joint angles that put the cup at `target`, pointing down; UnreachableError otherwise."""
        saved = self.q.copy()
        q = saved
        for _ in range(4):  # a few IK passes from the last solution converge on the pose
            self._apply(q)
            sol = self.c.calculateInverseKinematics(self.body, EE_LINK, list(target), DOWN, maxNumIterations=200,
                                                    residualThreshold=1e-5)
            q = np.array(sol[:7])
        self._apply(q)
        error = float(np.linalg.norm(self.ee_position() - np.asarray(target)))
        self._apply(saved)
        if error > 0.01:
            raise UnreachableError(f"arm cannot reach {tuple(round(v, 3) for v in target)} (IK error {error:.3f} m); "
                                   "move the pick station or bins into the arm's workspace")
        return q

    def move_toward(self, q_target: np.ndarray, joint_speed: float, dt: float) -> bool:
        """Step the joints toward q_target at up to joint_speed (rad/s); True once there."""
        delta = q_target - self.q
        step = joint_speed * dt
        biggest = float(np.max(np.abs(delta)))
        if biggest <= step or biggest < 1e-6:
            self.q = q_target.copy()
        else:
            self.q = self.q + delta * (step / biggest)  # all joints arrive together
        self._apply(self.q)
        return bool(np.max(np.abs(q_target - self.q)) < 1e-6)
