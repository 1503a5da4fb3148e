"""The PyBullet scene of the factory cell: floor, conveyor, rails, bins, arm, person.

Layout (metres; the belt runs along +x at y = 0, its surface at z = BELT_TOP):
  feeder x = -1.30 -> inspection camera x = -0.70 -> pick station x = 0.0 -> belt end x = 1.0
  the arm stands beside the pick station at y = +0.5; reject and hold bins beyond it;
  the accept bin catches parts falling off the belt's end; the person patrols at y ~ 2.3.
"""

from __future__ import annotations

import dataclasses

import pybullet as pb
import pybullet_data

from twin.core.bullet import PHYSICS_HZ, direct_client

BELT_TOP = 0.5
BELT_X = (-1.4, 1.0)
BELT_HALF_WIDTH = 0.15
SPAWN_X = -1.3
INSPECT_X = -0.7
PICK_X = 0.0
ARM_BASE = (0.0, 0.5, 0.2)


@dataclasses.dataclass(frozen=True)
class Bin:
    name: str
    center: tuple[float, float]
    half: float
    """Half of the bin's (square) opening (m)."""
    rim: float
    """Height of the bin's rim (m)."""

    def contains(self, x: float, y: float) -> bool:
        return abs(x - self.center[0]) < self.half and abs(y - self.center[1]) < self.half


BINS: dict[str, Bin] = {
    "accept": Bin("accept", (1.2, 0.0), 0.2, 0.25),
    "reject": Bin("reject", (-0.3, 0.8), 0.13, 0.35),
    "hold": Bin("hold", (0.3, 0.8), 0.13, 0.35),
}


def _open_box(c: pb, center: tuple[float, float], half: float, rim: float,
              rgba: tuple[float, ...]) -> int:
    t = 0.01
    parts = [([half, half, t], [0, 0, t])]
    for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ext = [t, half, rim / 2] if sx else [half, t, rim / 2]
        parts.append((ext, [sx * half, sy * half, rim / 2]))
    col = c.createCollisionShapeArray([pb.GEOM_BOX] * 5, halfExtents=[p[0] for p in parts],
                                      collisionFramePositions=[p[1] for p in parts])
    vis = c.createVisualShapeArray([pb.GEOM_BOX] * 5, halfExtents=[p[0] for p in parts],
                                   visualFramePositions=[p[1] for p in parts])
    body = c.createMultiBody(0, col, vis, basePosition=[center[0], center[1], 0.0])
    for i in range(5):
        c.changeVisualShape(body, -1, shapeIndex=i, rgbaColor=list(rgba))
    return body


class FactoryScene:
    """Builds the static scene and the robot; holds the body ids."""

    def __init__(self) -> None:
        self.client = direct_client()
        c = self.client
        c.setAdditionalSearchPath(pybullet_data.getDataPath())
        c.setGravity(0, 0, -9.81)
        c.setTimeStep(1.0 / PHYSICS_HZ)
        self.floor = c.createMultiBody(0, c.createCollisionShape(pb.GEOM_PLANE),
                                       c.createVisualShape(pb.GEOM_BOX, halfExtents=[4, 4, 0.001]))
        length = BELT_X[1] - BELT_X[0]
        self.belt_pos = [(BELT_X[0] + BELT_X[1]) / 2, 0.0, BELT_TOP - 0.02]
        self.belt = c.createMultiBody(0, c.createCollisionShape(pb.GEOM_BOX, halfExtents=[length / 2, BELT_HALF_WIDTH, 0.02]),
                                      c.createVisualShape(pb.GEOM_BOX, halfExtents=[length / 2, BELT_HALF_WIDTH, 0.02]),
                                      basePosition=self.belt_pos)
        frame = c.createMultiBody(0, -1, c.createVisualShape(pb.GEOM_BOX, halfExtents=[length / 2, 0.17, 0.23],
                                                             rgbaColor=[0.35, 0.37, 0.4, 1]),
                                  basePosition=[self.belt_pos[0], 0, 0.23])
        self.rails = []
        for side in (1, -1):
            shape = [length / 2, 0.005, 0.015]
            self.rails.append(c.createMultiBody(
                0, c.createCollisionShape(pb.GEOM_BOX, halfExtents=shape),
                c.createVisualShape(pb.GEOM_BOX, halfExtents=shape, rgbaColor=[0.8, 0.7, 0.1, 1]),
                basePosition=[self.belt_pos[0], side * (BELT_HALF_WIDTH + 0.005), BELT_TOP + 0.015]))
        self.static_bodies = [self.floor, self.belt, frame, *self.rails]
        colours = {"accept": (0.2, 0.6, 0.25, 1), "reject": (0.7, 0.15, 0.1, 1), "hold": (0.85, 0.6, 0.1, 1)}
        self.bins = {name: _open_box(c, b.center, b.half, b.rim, colours[name]) for name, b in BINS.items()}
        pedestal = c.createMultiBody(0, c.createCollisionShape(pb.GEOM_BOX, halfExtents=[0.12, 0.12, ARM_BASE[2] / 2]),
                                     c.createVisualShape(pb.GEOM_BOX, halfExtents=[0.12, 0.12, ARM_BASE[2] / 2],
                                                         rgbaColor=[0.3, 0.3, 0.3, 1]),
                                     basePosition=[ARM_BASE[0], ARM_BASE[1], ARM_BASE[2] / 2])
        self.static_bodies.append(pedestal)
        self.arm = c.loadURDF("franka_panda/panda.urdf", list(ARM_BASE),
                              c.getQuaternionFromEuler([0, 0, -1.5708]), useFixedBase=True)
        # The person: a capsule body with a head, moved kinematically along a path.
        self.person = c.createMultiBody(
            0, c.createCollisionShape(pb.GEOM_CAPSULE, radius=0.2, height=1.3),
            c.createVisualShape(pb.GEOM_CAPSULE, radius=0.2, length=1.3, rgbaColor=[0.2, 0.35, 0.8, 1]),
            basePosition=[0, 2.3, 0.85])

    def apply_colours(self, floor_rgb: tuple[float, ...], belt_rgb: tuple[float, ...]) -> None:
        self.client.changeVisualShape(self.floor, -1, rgbaColor=[*floor_rgb, 1])
        self.client.changeVisualShape(self.belt, -1, rgbaColor=[*belt_rgb, 1])

    def close(self) -> None:
        try:
            self.client.disconnect()
        except pb.error:
            pass


class InspectionStation:
    """A light copy of what the inspection camera sees: floor, belt, rails, and the parts under it.

    Rendering the main scene would pay for the arm's detailed meshes on every frame, though
    the arm is out of view (TinyRenderer processes every mesh: 10x slower at 64x64). Parts
    in view are mirrored here as visual replicas posed from the main simulation.
    """

    VIEW_HALF = 0.25
    """Parts closer than this to the inspection point (along the belt) are mirrored (m)."""

    def __init__(self) -> None:
        self.client = direct_client()
        c = self.client
        self.floor = c.createMultiBody(0, -1, c.createVisualShape(pb.GEOM_BOX, halfExtents=[4, 4, 0.001]))
        length = BELT_X[1] - BELT_X[0]
        self.belt = c.createMultiBody(0, -1, c.createVisualShape(pb.GEOM_BOX, halfExtents=[length / 2, BELT_HALF_WIDTH, 0.02]),
                                      basePosition=[(BELT_X[0] + BELT_X[1]) / 2, 0.0, BELT_TOP - 0.02])
        for side in (1, -1):
            c.createMultiBody(0, -1, c.createVisualShape(pb.GEOM_BOX, halfExtents=[length / 2, 0.005, 0.015],
                                                         rgbaColor=[0.8, 0.7, 0.1, 1]),
                              basePosition=[(BELT_X[0] + BELT_X[1]) / 2, side * (BELT_HALF_WIDTH + 0.005),
                                            BELT_TOP + 0.015])
        self.replicas: dict[int, int] = {}

    def apply_colours(self, floor_rgb: tuple[float, ...], belt_rgb: tuple[float, ...]) -> None:
        self.client.changeVisualShape(self.floor, -1, rgbaColor=[*floor_rgb, 1])
        self.client.changeVisualShape(self.belt, -1, rgbaColor=[*belt_rgb, 1])

    def clear(self) -> None:
        for body in self.replicas.values():
            self.client.removeBody(body)
        self.replicas = {}

    def sync(self, parts: dict[int, tuple], build) -> None:
        """Mirror parts {id: (position, orientation, builder args)}; `build(client, *args)` makes a replica."""
        for pid in list(self.replicas):
            if pid not in parts:
                self.client.removeBody(self.replicas.pop(pid))
        for pid, (pos, orn, args) in parts.items():
            if pid not in self.replicas:
                self.replicas[pid] = build(self.client, *args)
            self.client.resetBasePositionAndOrientation(self.replicas[pid], pos, orn)

    def close(self) -> None:
        try:
            self.client.disconnect()
        except pb.error:
            pass
