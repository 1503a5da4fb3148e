"""Sensors every twin can mount: a planar lidar, an RGB camera, odometry/IMU noise.

Each sensor has a frozen params dataclass (randomizable through its bounds) and a
function that reads the PyBullet world. Noise, dropout and bias are drawn from the
generator passed in (the env's `np_random`), so the same seed gives the same readings.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pybullet as pb

from twin.core.config import bounded, check_bounds


@dataclasses.dataclass(frozen=True)
class LidarParams:
    """A planar scanning lidar (defaults: f1tenth_gym's Hokuyo)."""

    beams: int = bounded(1080, 1, 4096)
    """Number of beams, evenly spread over the field of view."""
    fov: float = bounded(4.7, 0.1, 2 * math.pi)
    """Field of view (rad), centred on the sensor's forward axis."""
    max_range: float = bounded(30.0, 0.5, 100.0)
    """Range reported when nothing is hit or a beam drops out (m)."""
    noise_std: float = bounded(0.01, 0.0, 1.0)
    """Standard deviation of Gaussian range noise (m)."""
    dropout: float = bounded(0.0, 0.0, 1.0)
    """Probability that a beam returns nothing (reported as max_range)."""
    bias: float = bounded(0.0, -0.5, 0.5)
    """Constant offset added to every range (m)."""
    mount_height: float = bounded(0.15, 0.0, 1.0)
    """Height of the scan plane above the floor (m); above the car's own body."""

    def __post_init__(self) -> None:
        check_bounds(self)


class Lidar:
    """Ray directions precomputed once; `scan` casts them from a pose with one rayTestBatch."""

    def __init__(self, params: LidarParams) -> None:
        self.params = params
        n = int(params.beams)
        self.angles = np.linspace(-params.fov / 2, params.fov / 2, n)
        self._from = np.zeros((n, 3))
        self._to = np.zeros((n, 3))

    def scan(self, client: pb, x: float, y: float, yaw: float, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        ang = self.angles + yaw
        self._from[:, 0] = x
        self._from[:, 1] = y
        self._from[:, 2] = p.mount_height
        self._to[:, 0] = x + p.max_range * np.cos(ang)
        self._to[:, 1] = y + p.max_range * np.sin(ang)
        self._to[:, 2] = p.mount_height
        hits = client.rayTestBatch(self._from, self._to, numThreads=1)
        ranges = np.fromiter((h[2] for h in hits), dtype=np.float64, count=len(hits)) * p.max_range
        if p.noise_std > 0:
            ranges += rng.normal(0.0, p.noise_std, ranges.shape)
        ranges += p.bias
        if p.dropout > 0:
            ranges[rng.random(ranges.shape) < p.dropout] = p.max_range
        return np.clip(ranges, 0.0, p.max_range).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class CameraParams:
    """A pinhole RGB camera rendered by PyBullet's TinyRenderer (no GPU needed)."""

    width: int = bounded(64, 8, 1024)
    """Image width (px)."""
    height: int = bounded(64, 8, 1024)
    """Image height (px)."""
    fov_deg: float = bounded(90.0, 20.0, 160.0)
    """Vertical field of view (deg)."""
    mount_forward: float = bounded(0.25, -2.0, 2.0)
    """Camera position along the body's forward axis (m)."""
    mount_height: float = bounded(0.2, 0.0, 5.0)
    """Camera height above the floor (m)."""
    pitch_deg: float = bounded(-12.0, -90.0, 30.0)
    """Downward tilt; negative looks down (deg)."""
    yaw_deg: float = bounded(0.0, -45.0, 45.0)
    """Yaw offset from the body's forward axis (deg)."""
    noise_std: float = bounded(0.0, 0.0, 60.0)
    """Standard deviation of per-pixel Gaussian noise (0-255 scale)."""
    far: float = bounded(40.0, 1.0, 200.0)
    """Far clipping distance (m)."""

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclasses.dataclass(frozen=True)
class LightingParams:
    """Scene lighting used by the camera."""

    azimuth_deg: float = bounded(45.0, -180.0, 180.0)
    """Direction the light comes from, around the vertical (deg)."""
    elevation_deg: float = bounded(60.0, 5.0, 90.0)
    """Height of the light above the horizon (deg)."""
    ambient: float = bounded(0.6, 0.0, 1.0)
    """Ambient light coefficient."""
    diffuse: float = bounded(0.35, 0.0, 1.0)
    """Diffuse light coefficient."""
    specular: float = bounded(0.05, 0.0, 1.0)
    """Specular light coefficient."""

    def __post_init__(self) -> None:
        check_bounds(self)


def render_camera(
    client: pb,
    eye: tuple[float, float, float],
    yaw: float,
    params: CameraParams,
    lighting: LightingParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """An (height, width, 3) uint8 image seen from `eye` looking along `yaw` (rad)."""
    heading = yaw + math.radians(params.yaw_deg)
    pitch = math.radians(params.pitch_deg)
    fwd = (math.cos(heading) * math.cos(pitch), math.sin(heading) * math.cos(pitch), math.sin(pitch))
    target = (eye[0] + fwd[0], eye[1] + fwd[1], eye[2] + fwd[2])
    view = client.computeViewMatrix(eye, target, (0.0, 0.0, 1.0))
    w, h = int(params.width), int(params.height)
    proj = client.computeProjectionMatrixFOV(params.fov_deg, w / h, 0.03, params.far)
    az, el = math.radians(lighting.azimuth_deg), math.radians(lighting.elevation_deg)
    light = (math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el))
    img = client.getCameraImage(
        w,
        h,
        view,
        proj,
        lightDirection=light,
        lightAmbientCoeff=lighting.ambient,
        lightDiffuseCoeff=lighting.diffuse,
        lightSpecularCoeff=lighting.specular,
        shadow=0,
        renderer=pb.ER_TINY_RENDERER,
    )
    rgb = np.asarray(img[2], dtype=np.uint8).reshape(h, w, 4)[:, :, :3]
    if params.noise_std > 0:
        noisy = rgb.astype(np.float32) + rng.normal(0.0, params.noise_std, rgb.shape)
        rgb = np.clip(noisy, 0, 255).astype(np.uint8)
    return rgb


@dataclasses.dataclass(frozen=True)
class OdometryParams:
    """Noise of wheel odometry and the IMU."""

    speed_noise_std: float = bounded(0.02, 0.0, 2.0)
    """Gaussian noise on measured speed (m/s)."""
    yaw_rate_noise_std: float = bounded(0.01, 0.0, 2.0)
    """Gaussian noise on measured yaw rate (rad/s)."""
    accel_noise_std: float = bounded(0.05, 0.0, 5.0)
    """Gaussian noise on each measured acceleration (m/s^2)."""
    speed_bias: float = bounded(0.0, -1.0, 1.0)
    """Constant offset of measured speed (m/s)."""

    def __post_init__(self) -> None:
        check_bounds(self)


def read_odometry(
    params: OdometryParams, speed: float, yaw_rate: float, ax: float, ay: float, rng: np.random.Generator
) -> dict[str, float]:
    """Noisy speed, yaw rate and body-frame accelerations."""
    n = rng.normal(0.0, 1.0, 4)
    return {
        "speed": speed + params.speed_bias + params.speed_noise_std * float(n[0]),
        "yaw_rate": yaw_rate + params.yaw_rate_noise_std * float(n[1]),
        "ax": ax + params.accel_noise_std * float(n[2]),
        "ay": ay + params.accel_noise_std * float(n[3]),
    }
