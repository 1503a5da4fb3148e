"""A precomputed clearance map of a track: distance to the nearest wall or known obstacle.

The shield asks "how far can the car go along this arc before its footprint comes within
the clearance of something?" many times per control step. A grid of distances, built
once per track, answers each question with one vectorised lookup instead of a geometric
query per point. Cells outside the drivable area hold negative distances. Lookups
subtract the cell's half diagonal, so the grid never reports more room than there is.

The lookup of one point is a numba kernel (`clearance_at`): the shield's arc check calls it
from its own compiled loop, one sample at a time, so it can stop at the first sample without
room; `ClearanceMap.lookup` runs the same kernel over arrays.
"""

from __future__ import annotations

import functools
import math

import numba
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
        self.x0, self.y0 = float(self.origin[0]), float(self.origin[1])

    def lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Clearance (float32) at points, the shape of x and y broadcast (outside the grid: -1, i.e. blocked)."""
        bx, by = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        flat = _lookup_points(self.grid, self.x0, self.y0, self.resolution, bx.ravel(), by.ravel())
        return flat.reshape(bx.shape)


@numba.njit(cache=True)
def _cell(v: float, last: int) -> int:
    """Index of the cell holding grid coordinate v, clamped to [0, last]; NaN: 0 (the blocked border)."""
    if v >= last:
        return last
    if v >= 0.0:
        return int(v)  # truncation is the floor here
    return 0


@numba.njit(cache=True)
def clearance_at(grid: np.ndarray, x0: float, y0: float, resolution: float, x: float, y: float) -> np.float32:
    """Clearance at one point of the padded grid of a ClearanceMap (its grid, x0, y0, resolution):
    the cell's distance, or the border's -1 anywhere off the grid."""
    ix = _cell((x - x0) / resolution, grid.shape[1] - 1)
    iy = _cell((y - y0) / resolution, grid.shape[0] - 1)
    return grid[iy, ix]


@numba.njit(cache=True)
def _lookup_points(grid: np.ndarray, x0: float, y0: float, resolution: float, x: np.ndarray,
                   y: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape[0], dtype=grid.dtype)
    for i in range(x.shape[0]):
        out[i] = clearance_at(grid, x0, y0, resolution, x[i], y[i])
    return out


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


@functools.lru_cache(maxsize=128)
def clearance_map(track_name: str, obstacles: tuple[Obstacle, ...] = ()) -> ClearanceMap:
    """The (cached) clearance map of a named track with its static obstacles. A map takes ~0.5 s to build and
    ~1 MB to keep; 128 holds every width of the three training tracks that training draws (twin.car.tracks.at_widths)."""
    return ClearanceMap(load_track(track_name), obstacles)
