"""The PyBullet scene of a car track: floor, track surface, walls, obstacles, the car body.

Walls are one static triangle mesh per track (a BVH in Bullet), so a 1080-beam scan costs
one broadphase query per beam rather than one per wall segment. Colours come from
`AppearanceParams` and can be changed between episodes without rebuilding the scene.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pybullet as pb

from twin.car.tracks import Track
from twin.core.bullet import direct_client
from twin.core.config import ConfigError, bounded, check_bounds

WALL_HEIGHT = 0.3
BODY_HEIGHT = 0.1


@dataclasses.dataclass(frozen=True)
class AppearanceParams:
    """Colours of the scene (RGB in [0, 1])."""

    floor_rgb: tuple[float, float, float] = bounded((0.55, 0.6, 0.55), 0.0, 1.0)
    """Floor outside the track."""
    track_rgb: tuple[float, float, float] = bounded((0.25, 0.25, 0.28), 0.0, 1.0)
    """Driving surface."""
    wall_rgb: tuple[float, float, float] = bounded((0.85, 0.2, 0.15), 0.0, 1.0)
    """Track walls."""
    car_rgb: tuple[float, float, float] = bounded((0.1, 0.3, 0.9), 0.0, 1.0)
    """The car's body."""

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclasses.dataclass(frozen=True)
class Obstacle:
    """A static box on the track, placed in Frenet coordinates."""

    s: float
    """Arc length along the centerline (m)."""
    d: float
    """Lateral offset, positive left (m)."""
    size: float = 0.3
    """Edge length of the (square) box footprint (m)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.s) and math.isfinite(self.d)) or not 0.02 <= self.size <= 3.0:
            raise ConfigError(f"Obstacle(s={self.s}, d={self.d}, size={self.size}): need finite s, d and size in [0.02, 3]")


def _strip_mesh(points: np.ndarray, z0: float, z1: float, two_sided: bool) -> tuple[list, list]:
    """A closed vertical strip through a closed polyline (two triangles per segment and side)."""
    n = len(points)
    verts = [[float(x), float(y), z] for x, y in points for z in (z0, z1)]
    idx: list[int] = []
    for i in range(n):
        a, b, c, d = 2 * i, 2 * i + 1, 2 * ((i + 1) % n), 2 * ((i + 1) % n) + 1
        idx += [a, c, b, b, c, d]
        if two_sided:  # the renderer culls back faces; rays hit either side anyway
            idx += [a, b, c, b, d, c]
    return verts, idx


def _ribbon_mesh(left: np.ndarray, right: np.ndarray, z: float) -> tuple[list, list]:
    n = len(left)
    verts = [[float(p[0]), float(p[1]), z] for pair in zip(left, right) for p in pair]
    idx: list[int] = []
    for i in range(n):
        a, b, c, d = 2 * i, 2 * i + 1, 2 * ((i + 1) % n), 2 * ((i + 1) % n) + 1
        idx += [a, b, c, c, b, d]
    return verts, idx


class CarWorld:
    """A PyBullet DIRECT client holding one track scene and one car body."""

    def __init__(self, track: Track, vehicle_length: float, vehicle_width: float, visual_step: int = 5) -> None:
        self.client = direct_client()
        self.track = track
        c = self.client
        c.setGravity(0, 0, -9.81)
        floor_col = c.createCollisionShape(pb.GEOM_PLANE)
        floor_vis = c.createVisualShape(pb.GEOM_BOX, halfExtents=[200, 200, 0.001])
        self.floor = c.createMultiBody(0, floor_col, floor_vis, basePosition=[0, 0, 0])

        left, right = track.boundaries()
        # Visual meshes are decimated (TinyRenderer cost grows with triangles); collision
        # meshes keep every sample so contacts and scans see the true wall.
        sl = slice(None, None, max(1, visual_step))
        rv, ri = _ribbon_mesh(left[sl], right[sl], 0.002)
        self.surface = c.createMultiBody(0, -1, c.createVisualShape(pb.GEOM_MESH, vertices=rv, indices=ri))

        # Collision: one strip per wall every other sample (chord error < 1 mm on our
        # tightest curve); a car that passes through between checks is caught by the
        # twin's Frenet guard. Visual: a decimated strip.
        wall_verts: list = []
        wall_idx: list = []
        vis_verts: list = []
        vis_idx: list = []
        for boundary in (left, right):
            for pts, verts, idx, two_sided in ((boundary[::2], wall_verts, wall_idx, False),
                                               (boundary[sl], vis_verts, vis_idx, True)):
                v, i = _strip_mesh(pts, 0.0, WALL_HEIGHT, two_sided)
                idx += [k + len(verts) for k in i]
                verts += v
        wall_col = c.createCollisionShape(
            pb.GEOM_MESH, vertices=wall_verts, indices=wall_idx, flags=pb.GEOM_FORCE_CONCAVE_TRIMESH
        )
        wall_vis = c.createVisualShape(pb.GEOM_MESH, vertices=vis_verts, indices=vis_idx)
        self.walls = c.createMultiBody(0, wall_col, wall_vis)

        half = [vehicle_length / 2, vehicle_width / 2, BODY_HEIGHT / 2]
        self.car = c.createMultiBody(
            0,
            c.createCollisionShape(pb.GEOM_BOX, halfExtents=half),
            c.createVisualShape(pb.GEOM_BOX, halfExtents=half),
            basePosition=[0, 0, BODY_HEIGHT / 2 + 0.01],
        )
        self.obstacles: dict[int, Obstacle] = {}

    def set_obstacles(self, obstacles: tuple[Obstacle, ...]) -> None:
        """Replace the obstacles on the track (no-op when unchanged)."""
        if tuple(self.obstacles.values()) == tuple(obstacles):
            return
        for body in self.obstacles:
            self.client.removeBody(body)
        self.obstacles = {}
        for ob in obstacles:
            x, y = self.track.to_cartesian(ob.s, ob.d)
            half = [ob.size / 2, ob.size / 2, WALL_HEIGHT / 2]
            c = self.client
            body = c.createMultiBody(
                0,
                c.createCollisionShape(pb.GEOM_BOX, halfExtents=half),
                c.createVisualShape(pb.GEOM_BOX, halfExtents=half, rgbaColor=[0.95, 0.75, 0.1, 1]),
                basePosition=[float(x), float(y), WALL_HEIGHT / 2],
            )
            self.obstacles[body] = ob

    def apply_appearance(self, a: AppearanceParams) -> None:
        c = self.client
        c.changeVisualShape(self.floor, -1, rgbaColor=[*a.floor_rgb, 1])
        c.changeVisualShape(self.surface, -1, rgbaColor=[*a.track_rgb, 1])
        c.changeVisualShape(self.walls, -1, rgbaColor=[*a.wall_rgb, 1])
        c.changeVisualShape(self.car, -1, rgbaColor=[*a.car_rgb, 1])

    def place_car(self, x: float, y: float, yaw: float) -> None:
        self.client.resetBasePositionAndOrientation(
            self.car, [x, y, BODY_HEIGHT / 2 + 0.01], [0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)]
        )

    def contacts(self) -> list[str]:
        """Names of what the car body touches now: 'wall' and/or 'obstacle'."""
        hit = []
        if self.client.getClosestPoints(self.car, self.walls, 0.0):
            hit.append("wall")
        if any(self.client.getClosestPoints(self.car, body, 0.0) for body in self.obstacles):
            hit.append("obstacle")
        return hit

    def close(self) -> None:
        try:
            self.client.disconnect()
        except pb.error:
            pass
