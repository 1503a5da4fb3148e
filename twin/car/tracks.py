"""Closed race tracks: a smooth centerline and a width, with Frenet coordinates.

A track is built from a few control points through a periodic cubic spline and
resampled at a fixed arc-length step, so s (arc length), curvature, heading and the
left normal are plain arrays. `frenet(x, y)` projects a point onto the centerline
(s along it, d positive to the left). Named tracks are split into the ones training may
use and the ones kept for evaluation (`HELD_OUT`); `procedural(seed)` makes more.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.interpolate import CubicSpline

from twin.core.config import ConfigError

SAMPLE_SPACING = 0.05
"""Arc-length step of the resampled centerline (m)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Track:
    """A closed track resampled at `SAMPLE_SPACING`; all arrays have one row per centerline sample."""

    name: str
    """The track's name ('oval', 'procedural-7', ...)."""
    width: float
    """Wall-to-wall width (m), constant along the track."""
    s: np.ndarray
    """Arc length of each sample (m), from 0 to just below `length`."""
    xy: np.ndarray
    """Centerline points, shape (n, 2)."""
    heading: np.ndarray
    """Tangent direction of the centerline (rad)."""
    curvature: np.ndarray
    """Signed curvature (1/m), positive for left turns."""
    length: float
    """Total centerline length (m)."""

    @property
    def half_width(self) -> float:
        return self.width / 2.0

    @property
    def normal(self) -> np.ndarray:
        """Unit left normal of each sample, shape (n, 2)."""
        return np.stack([-np.sin(self.heading), np.cos(self.heading)], axis=1)

    def index(self, s: float | np.ndarray) -> np.ndarray:
        """Nearest sample index of arc length(s) s (wrapped onto the loop)."""
        return np.round(np.mod(s, self.length) / SAMPLE_SPACING).astype(int) % len(self.s)

    def curvature_at(self, s: float | np.ndarray) -> np.ndarray:
        return self.curvature[self.index(s)]

    def to_cartesian(self, s: float | np.ndarray, d: float | np.ndarray) -> np.ndarray:
        """World (x, y) of Frenet (s, d); shape (..., 2)."""
        i = self.index(s)
        ds = np.mod(s, self.length) - self.s[i]
        ds = np.where(ds > self.length / 2, ds - self.length, ds)
        t = np.stack([np.cos(self.heading[i]), np.sin(self.heading[i])], axis=-1)
        return self.xy[i] + t * np.asarray(ds)[..., None] + self.normal[i] * np.asarray(d)[..., None]

    def frenet(self, x: float, y: float, hint: int | None = None, window: int = 60) -> tuple[float, float, int]:
        """(s, d, index) of a point. With `hint` (the last index) only a window is searched."""
        n = len(self.s)
        if hint is None:
            idx = np.arange(n)
        else:
            idx = np.arange(hint - window, hint + window + 1) % n
        dx = self.xy[idx, 0] - x
        dy = self.xy[idx, 1] - y
        k = int(idx[np.argmin(dx * dx + dy * dy)])
        h = self.heading[k]
        ex, ey = x - self.xy[k, 0], y - self.xy[k, 1]
        along = ex * math.cos(h) + ey * math.sin(h)
        d = -ex * math.sin(h) + ey * math.cos(h)
        return float((self.s[k] + along) % self.length), float(d), k

    def boundaries(self) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) wall polylines, each (n, 2)."""
        off = self.normal * self.half_width
        return self.xy + off, self.xy - off

    def racing_line(self, amplitude: float) -> np.ndarray:
        """Lateral offset d_ref(s) of a simple racing line: toward the inside of each curve.

        A heuristic (smoothed curvature scaled to `amplitude`), not an optimal line; it gives
        the default MPC a line that differs from the centerline, as RobotxR1's does.
        """
        k = _smooth_periodic(self.curvature, window=int(1.5 / SAMPLE_SPACING))
        peak = float(np.max(np.abs(k))) or 1.0
        return amplitude * np.clip(k / (0.4 * peak), -1.0, 1.0)

    def speed_profile(self, v_cap: float, a_lat: float, a_long: float) -> np.ndarray:
        """Reference speed per sample: lateral-acceleration limited, then accel/decel limited."""
        k = np.maximum(np.abs(_smooth_periodic(self.curvature, window=int(0.5 / SAMPLE_SPACING))), 1e-6)
        v = np.minimum(v_cap, np.sqrt(a_lat / k))
        for _ in range(2):  # two laps of forward/backward passes settle the periodic profile
            for i in range(len(v)):
                v[i] = min(v[i], math.sqrt(v[i - 1] ** 2 + 2 * a_long * SAMPLE_SPACING))
            for i in range(len(v) - 1, -1, -1):
                j = (i + 1) % len(v)
                v[i] = min(v[i], math.sqrt(v[j] ** 2 + 2 * a_long * SAMPLE_SPACING))
        return v


def _smooth_periodic(x: np.ndarray, window: int) -> np.ndarray:
    window = max(1, window)
    kernel = np.ones(window) / window
    padded = np.concatenate([x[-window:], x, x[:window]])
    return np.convolve(padded, kernel, mode="same")[window:-window]


def from_control_points(name: str, points: np.ndarray, width: float) -> Track:
    """A track through closed control points (the first point is not repeated at the end)."""
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 4:
        raise ConfigError(f"track {name!r}: need at least 4 control points of shape (n, 2)")
    if not 0.8 <= width <= 5.0:
        raise ConfigError(f"track {name!r}: width {width} m outside [0.8, 5.0]")
    closed = np.vstack([pts, pts[:1]])
    chord = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))]
    spline = CubicSpline(chord, closed, bc_type="periodic")
    # Resample densely, then by arc length so samples are SAMPLE_SPACING apart.
    u = np.linspace(0.0, chord[-1], 20 * len(pts) * 50)
    dense = spline(u)
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))]
    length = float(arc[-1])
    n = int(length / SAMPLE_SPACING)
    s = np.arange(n) * (length / n)
    uu = np.interp(s, arc, u)
    xy = spline(uu)
    d1 = spline(uu, 1)
    d2 = spline(uu, 2)
    heading = np.arctan2(d1[:, 1], d1[:, 0])
    curvature = (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) / np.linalg.norm(d1, axis=1) ** 3
    track = Track(name=name, width=width, s=s, xy=xy, heading=heading, curvature=curvature, length=length)
    _check_drivable(track)
    return track


MIN_TURN_RADIUS = 0.33 / math.tan(0.4189)
"""The car's tightest turning radius at full lock (wheelbase / tan(steer max)), m."""


def _check_drivable(track: Track) -> None:
    radius = 1.0 / max(float(np.max(np.abs(track.curvature))), 1e-9)
    need = track.half_width + MIN_TURN_RADIUS * 0.5
    if radius < need:
        raise ConfigError(
            f"track {track.name!r}: tightest radius {radius:.2f} m is below {need:.2f} m "
            "(half width + car turning margin); widen the curves or narrow the track"
        )


def _ellipse_points(a: float, b: float, n: int = 12, wobble: tuple[float, ...] = ()) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones_like(t)
    for k, amp in enumerate(wobble, start=2):
        r = r + amp * np.cos(k * t)
    return np.stack([a * r * np.cos(t), b * r * np.sin(t)], axis=1)


def _named() -> dict[str, tuple[np.ndarray, float]]:
    return {
        "oval": (np.array([[0, -4], [6, -4], [10, 0], [6, 4], [0, 4], [-6, 4], [-10, 0], [-6, -4]], float), 2.0),
        "kidney": (_ellipse_points(10.0, 7.0, 16, wobble=(0.12,)), 2.0),
        "chicane": (
            np.array([[0, -5], [5, -5], [8, -3], [11, -5], [15, -4], [16, 0], [13, 4],
                      [8, 5], [3, 3], [-2, 5], [-6, 4], [-7, 0], [-5, -4]], float) * 1.5,
            1.8,
        ),
        "sprint": (
            np.array([[0, -6], [7, -6], [12, -3], [12, 2], [8, 3], [5, 6], [0, 7],
                      [-6, 6], [-9, 2], [-7, -1], [-8, -4], [-5, -6]], float) * 1.8,
            1.9,
        ),
    }


TRAIN_TRACKS: tuple[str, ...] = ("oval", "kidney", "chicane")
"""Named tracks that training may use."""
HELD_OUT: tuple[str, ...] = ("sprint",)
"""Named tracks kept out of training, for evaluation and the demo."""
NAMED_TRACKS: tuple[str, ...] = TRAIN_TRACKS + HELD_OUT


def procedural(seed: int, width: float = 2.0) -> Track:
    """A random star-shaped closed track; the same seed gives the same track.

    Radii at evenly spaced angles get a few low Fourier harmonics with random phases;
    candidates with curves too tight for the car are rejected and redrawn.
    """
    rng = np.random.default_rng(seed)
    for _ in range(200):
        n = 24
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        base = rng.uniform(7.0, 11.0)
        r = np.full(n, base)
        for k in range(2, 5):
            r += rng.uniform(0.0, 0.18 * base / k) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
        pts = np.stack([r * np.cos(t) * rng.uniform(0.8, 1.2), r * np.sin(t)], axis=1)
        try:
            return from_control_points(f"procedural-{seed}", pts, width)
        except ConfigError:
            continue
    raise ConfigError(f"procedural track seed {seed}: no drivable track found; try another seed")


WIDTH_SEP = "@"
"""Separates a track's name from a width it is rebuilt at: 'oval@1.8' is the oval, 1.8 m wall to wall."""


def at_width(name: str, width: float) -> str:
    """The name of track `name` rebuilt `width` m wide (same centre line), e.g. at_width('oval', 1.8) -> 'oval@1.8'."""
    return f"{name.split(WIDTH_SEP)[0]}{WIDTH_SEP}{width:g}"


def at_widths(names: tuple[str, ...], low: float, high: float, step: float = 0.02) -> tuple[str, ...]:
    """Each track of `names` at every width from `low` to `high` m in `step`s that it is drivable at (a tight
    track cannot be widened as far: its walls would cross inside its curves). A 0.02 m step keeps each half
    width exact at the two decimals a prompt shows."""
    if not 0.8 <= low <= high <= 5.0:
        raise ConfigError(f"track widths [{low}, {high}] m must satisfy 0.8 <= low <= high <= 5.0")
    widths = np.round(np.arange(low, high + step / 2, step), 6)
    out = []
    for name in names:
        for width in widths:
            wide = at_width(name, float(width))
            try:
                load_track(wide)
            except ConfigError:
                continue  # too wide for this track's curves
            out.append(wide)
    if not out:
        raise ConfigError(f"no track of {list(names)} is drivable at any width in [{low}, {high}] m; narrow the range")
    return tuple(out)


def training_tracks(widths: tuple[float, ...] = ()) -> tuple[str, ...]:
    """The tracks training draws from: TRAIN_TRACKS as they are (`widths` empty), or each of them at every
    drivable width in [low, high] m (`widths` = (low, high))."""
    if not widths:
        return TRAIN_TRACKS
    if len(widths) != 2:
        raise ConfigError(f"track widths {list(widths)}: give none or two numbers, the lowest and highest "
                          f"wall-to-wall width in metres (e.g. 1.6 2.4)")
    return at_widths(TRAIN_TRACKS, float(widths[0]), float(widths[1]))


def load_track(name: str) -> Track:
    """A named track ('oval', 'kidney', 'chicane', 'sprint') or 'procedural-<seed>', optionally at another
    width: '<track>@<width m>' keeps the centre line and moves the walls (training on many widths teaches a
    policy to read the width it is given rather than remember one)."""
    base, sep, width_text = name.partition(WIDTH_SEP)
    width: float | None = None
    if sep:
        try:
            width = float(width_text)
        except ValueError:
            raise ConfigError(f"track {name!r}: the width after {WIDTH_SEP!r} must be a number of metres, "
                              f"e.g. 'oval@1.8'") from None
    named = _named()
    if base in named:
        pts, own = named[base]
        return from_control_points(name, pts, own if width is None else width)
    if base.startswith("procedural-"):
        seed = base.removeprefix("procedural-")
        if seed.isdigit():
            track = procedural(int(seed)) if width is None else procedural(int(seed), width)
            return dataclasses.replace(track, name=name) if sep else track
    raise ConfigError(f"unknown track {name!r}; choose one of {list(NAMED_TRACKS)} or 'procedural-<seed>', "
                      f"optionally at a width in metres ('oval@1.8')")
