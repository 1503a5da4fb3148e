"""A precomputed clearance map of a track: distance to the nearest wall or known obstacle.

The shield asks "how far can the car go along this arc before its footprint comes within
the clearance of something?" many times per control step. A grid of distances, built
once per track, answers each question with one vectorised lookup instead of a geometric
query per point. Cells outside the drivable area hold negative distances. Lookups
subtract the cell's half diagonal, so the grid never reports more room than there is.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from matplotlib.path import Path as PolyPath
from scipy.spatial import cKDTree

from twin.car.tracks import Track, load_track
from twin.car.world import Obstacle


class ClearanceMap:
    """Distances (m) on a regular grid over the track."""

    def __init__(self, track: Track, obstacles: tuple[Obstacle, ...] = (), resolution: float = 0.05) -> None:
        self.track = track
        self.resolution = resolution
        left, right = track.boundaries()
        lo = np.minimum(left.min(0), right.min(0)) - 1.0
        hi = np.maximum(left.max(0), right.max(0)) + 1.0
        nx, ny = (np.ceil((hi - lo) / resolution)).astype(int)
        xs = lo[0] + (np.arange(nx) + 0.5) * resolution
        ys = lo[1] + (np.arange(ny) + 0.5) * resolution
        gx, gy = np.meshgrid(xs, ys)
        cells = np.stack([gx.ravel(), gy.ravel()], axis=1)

        surface_pts = [_densify(left, 0.02), _densify(right, 0.02)]
        inside_outer = PolyPath(left).contains_points(cells) ^ PolyPath(right).contains_points(cells)
        blocked = ~inside_outer
        for ob in obstacles:
            corners = _obstacle_corners(track, ob)
            surface_pts.append(_densify(corners, 0.02))
            blocked |= PolyPath(corners).contains_points(cells)
        dist, _ = cKDTree(np.concatenate(surface_pts)).query(cells)
        grid = np.where(blocked, -dist, dist) - resolution * math.sqrt(0.5)
        # A border of blocked cells: lookups clip into it instead of testing bounds.
        self.grid = np.pad(grid.reshape(ny, nx).astype(np.float32), 1, constant_values=-1.0)
        self.origin = lo - resolution
        self._flat = self.grid.ravel()
        self._nx = self.grid.shape[1]
        self._max = np.array(self.grid.shape[::-1]) - 1

    def lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Clearance at points (outside the grid: -1, i.e. blocked)."""
        ix = np.clip(((x - self.origin[0]) / self.resolution).astype(np.int64), 0, self._max[0])
        iy = np.clip(((y - self.origin[1]) / self.resolution).astype(np.int64), 0, self._max[1])
        return self._flat[iy * self._nx + ix]


def _densify(poly: np.ndarray, step: float) -> np.ndarray:
    closed = np.vstack([poly, poly[:1]])
    out = []
    for a, b in zip(closed[:-1], closed[1:]):
        n = max(1, int(np.linalg.norm(b - a) / step))
        t = np.arange(n)[:, None] / n
        out.append(a + (b - a) * t)
    return np.concatenate(out)


def _obstacle_corners(track: Track, ob: Obstacle) -> np.ndarray:
    cx, cy = track.to_cartesian(ob.s, ob.d)
    h = ob.size / 2
    return np.array([[cx - h, cy - h], [cx + h, cy - h], [cx + h, cy + h], [cx - h, cy + h]])


@functools.lru_cache(maxsize=16)
def clearance_map(track_name: str, obstacles: tuple[Obstacle, ...] = ()) -> ClearanceMap:
    """The (cached) clearance map of a named track with its static obstacles."""
    return ClearanceMap(load_track(track_name), obstacles)
