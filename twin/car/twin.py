"""The race-car twin: a car on a track, stepped at the control rate, with its sensors.

`CarTwin` owns one PyBullet scene and advances the single-track model in physics
substeps; it knows nothing of rewards or policies (the gym envs and the control loop
add those). All randomness comes from the generator given to `reset`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from twin.car.actuation import ActuationParams, Command, DelayLine, sanitize
from twin.car.tracks import Track, load_track
from twin.car.vehicle import VehicleParams, VehicleState, input_limits, integrate
from twin.car.world import AppearanceParams, CarWorld, Obstacle
from twin.core.config import ConfigError, bounded, check_bounds
from twin.core.randomization import Draws, Randomizer, Term, streams
from twin.core.sensors import (
    CameraParams,
    Lidar,
    LidarParams,
    LightingParams,
    OdometryParams,
    read_odometry,
    render_camera,
)

CAR_STREAMS = ("world", "lidar", "camera", "odometry")
"""Independent random streams of a car episode (twin.core.randomization.streams): interval redraws, then each sensor's noise."""


@dataclasses.dataclass(frozen=True)
class CarParams:
    """Everything about the car's world that randomization may change."""

    vehicle: VehicleParams = VehicleParams()
    """Mass, geometry, tyres, limits."""
    actuation: ActuationParams = ActuationParams()
    """Delay, motor gain, steering offset."""
    lidar: LidarParams = LidarParams()
    """Lidar geometry and noise."""
    camera: CameraParams = CameraParams()
    """Front camera pose, field of view and noise."""
    lighting: LightingParams = LightingParams()
    """Light direction and strength."""
    odometry: OdometryParams = OdometryParams()
    """Odometry and IMU noise."""
    appearance: AppearanceParams = AppearanceParams()
    """Colours of floor, track, walls, car."""
    friction_patches: tuple[float, ...] = bounded((1.0,) * 8, 0.1, 2.0)
    """Friction multiplier of each of N equal-length track sections, in order of s."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if not self.friction_patches:
            raise ConfigError("CarParams.friction_patches needs at least one patch")


@dataclasses.dataclass(frozen=True)
class CarTwinConfig:
    """How a car twin is built."""

    track: str = "oval"
    """Named track or 'procedural-<seed>' (see twin.car.tracks)."""
    control_hz: float = bounded(50.0, 1.0, 500.0)
    """Rate at which commands are taken and sensors read (Hz)."""
    physics_dt: float = bounded(0.01, 0.0005, 0.05)
    """Integration step of the vehicle model (s); the control period is a whole number of them."""
    lidar: bool = True
    """Whether `sense` casts the lidar."""
    camera: bool = False
    """Whether `sense` renders the front camera."""
    params: CarParams = CarParams()
    """Nominal world parameters; each episode starts from these."""
    randomization: tuple[Term, ...] = ()
    """Declared randomization of `params` (see twin.car.randomization for a default set)."""
    obstacles: tuple[Obstacle, ...] = ()
    """Static obstacles on the track."""

    def __post_init__(self) -> None:
        check_bounds(self)
        steps = (1.0 / self.control_hz) / self.physics_dt
        if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
            raise ConfigError(
                f"CarTwinConfig: control period 1/{self.control_hz} s is not a whole number of "
                f"physics steps of {self.physics_dt} s; pick rates that divide evenly"
            )

    @property
    def substeps(self) -> int:
        return round((1.0 / self.control_hz) / self.physics_dt)


@dataclasses.dataclass(frozen=True)
class CarState:
    """A snapshot of the car, in world and track (Frenet) coordinates."""

    t: float
    x: float
    y: float
    yaw: float
    v: float
    yaw_rate: float
    steer: float
    s: float
    """Arc length along the centerline, wrapped to [0, track length)."""
    d: float
    """Lateral offset from the centerline, positive left."""
    alpha: float
    """Heading relative to the centerline tangent (rad)."""
    ax: float
    """Longitudinal acceleration (m/s^2)."""
    ay: float
    """Lateral acceleration (m/s^2)."""
    progress: float
    """Signed distance travelled along the centerline since reset (m)."""
    crashed: bool
    """The car has touched a wall or obstacle this episode (it then stays stopped)."""


@dataclasses.dataclass(frozen=True)
class StepReport:
    """What happened in one control step besides the motion."""

    contacts: tuple[str, ...]
    """What the car touched this step ('wall', 'obstacle')."""
    command_fixes: dict[str, str]
    """Fields of the command that were clamped or replaced, with the reason."""
    redraws: Draws
    """Interval randomization draws made this step."""


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


class CarTwin:
    """A PyBullet car twin; `reset` then `step(Command)` at `config.control_hz`."""

    def __init__(self, config: CarTwinConfig | None = None) -> None:
        self.config = config or CarTwinConfig()
        self.track: Track = load_track(self.config.track)
        self.randomizer = Randomizer(self.config.params, self.config.randomization)
        nominal = self.config.params.vehicle
        self.world = CarWorld(self.track, nominal.length, nominal.width)
        self.world.set_obstacles(self.config.obstacles)
        self.params = self.config.params
        self.draws: Draws = {}
        self._streams = streams(np.random.default_rng(0), *CAR_STREAMS)
        self._lidar = Lidar(self.params.lidar)
        self._reset_state(0.0, 0.0, 0.0)

    # -- episode -------------------------------------------------------------------
    def reset(
        self,
        rng: np.random.Generator,
        s: float = 0.0,
        d: float = 0.0,
        v: float = 0.0,
        draws: Draws | None = None,
        obstacles: tuple[Obstacle, ...] | None = None,
    ) -> Draws:
        """Start an episode at Frenet (s, d) with speed v; returns the randomization draws.

        `draws` replays a recorded episode's draws instead of drawing new ones.
        """
        self.draws = dict(draws) if draws is not None else self.randomizer.draw_reset(rng)
        self._streams = streams(rng, *CAR_STREAMS)
        self.params = self.randomizer.apply(self.config.params, self.draws)
        if (self.params.lidar.beams, self.params.lidar.fov) != (self._lidar.params.beams, self._lidar.params.fov):
            self._lidar = Lidar(self.params.lidar)
        self._lidar.params = self.params.lidar
        self.world.set_obstacles(self.config.obstacles if obstacles is None else obstacles)
        self.world.apply_appearance(self.params.appearance)
        self._reset_state(s, d, v)
        return self.draws

    def _reset_state(self, s: float, d: float, v: float) -> None:
        x, y = self.track.to_cartesian(s, d)
        yaw = float(self.track.heading[self.track.index(s)])
        self.vs = VehicleState(x=float(x), y=float(y), yaw=yaw, v=v)
        self.t = 0.0
        self._s, self._d, self._idx = self.track.frenet(self.vs.x, self.vs.y)
        self._progress = 0.0
        self._ax = 0.0
        self.crashed = False
        self.delay = DelayLine(self.params.actuation.delay_s, Command(v, 0.0))
        self.world.place_car(self.vs.x, self.vs.y, self.vs.yaw)

    def set_state(self, x: float, y: float, yaw: float, v: float, steer: float = 0.0, yaw_rate: float = 0.0,
                  slip: float = 0.0) -> None:
        """Put the car exactly at this state (a logged one, to replay a recording from it): pose (m, rad),
        speed (m/s), steering angle, yaw rate and slip angle. The clock, the parameters and the commands
        still in the actuation delay line are kept, so a replay can fill the delay line with the logged
        commands and then put the car back at the logged state; a crash is cleared (the car is placed anew)."""
        self.vs = VehicleState(x=float(x), y=float(y), steer=float(steer), v=float(v), yaw=float(yaw),
                               yaw_rate=float(yaw_rate), slip=float(slip))
        self._s, self._d, self._idx = self.track.frenet(self.vs.x, self.vs.y)
        self.crashed = False
        self.world.place_car(self.vs.x, self.vs.y, self.vs.yaw)

    # -- stepping -------------------------------------------------------------------
    def mu_at(self, s: float) -> float:
        patches = self.params.friction_patches
        k = min(len(patches) - 1, int(s / self.track.length * len(patches)))
        return self.params.vehicle.mu * patches[k]

    def step(self, command: Command) -> StepReport:
        """Advance one control period under `command` (clamped to the car's limits, reported)."""
        p = self.params
        veh = p.vehicle
        command, fixes = sanitize(command, veh.v_min, veh.v_max, veh.steer_max)
        self.delay.push(self.t, command)
        dt = self.config.physics_dt
        v_before = self.vs.v
        t_prev = self.t
        if not self.crashed:
            mu = self.mu_at(self._s)
            for _ in range(self.config.substeps):
                active = self.delay.at(self.t)
                accel = p.actuation.motor_gain * p.actuation.speed_gain * (active.speed - self.vs.v)
                sv, a = input_limits(veh, self.vs, active.steer + p.actuation.steer_offset, accel)
                self.vs = integrate(veh, mu, self.vs, sv, a, dt)
                self.t += dt
        else:
            self.t += dt * self.config.substeps
        period = self.t - t_prev
        self._ax = (self.vs.v - v_before) / period
        s_old = self._s
        self._s, self._d, self._idx = self.track.frenet(self.vs.x, self.vs.y, hint=self._idx)
        ds = self._s - s_old
        if ds > self.track.length / 2:
            ds -= self.track.length
        elif ds < -self.track.length / 2:
            ds += self.track.length
        self._progress += ds
        self.world.place_car(self.vs.x, self.vs.y, self.vs.yaw)

        contacts = tuple(self.world.contacts())
        if not contacts and abs(self._d) > self.track.half_width:
            contacts = ("wall",)  # left the track between two checks: count it as a wall hit
        if contacts and not self.crashed:
            self.crashed = True
            self.vs = dataclasses.replace(self.vs, v=0.0, yaw_rate=0.0, slip=0.0)
        redraws = self.randomizer.draw_interval(self._streams["world"], t_prev, self.t)
        if redraws:
            self.draws.update(redraws)
            self.apply(redraws)
        return StepReport(contacts=contacts, command_fixes=fixes, redraws=redraws)

    def apply(self, values: Draws) -> None:
        """Change parameters mid-episode by their randomization paths ({'vehicle.mu': 0.4}): interval
        redraws and scenario events go through here, so sensors and actuators see the change at once."""
        self.params = self.randomizer.apply(self.params, values)
        self._lidar.params = self.params.lidar
        self.delay.delay_s = self.params.actuation.delay_s
        if any(path.startswith(("appearance.", "lighting.")) for path in values):
            self.world.apply_appearance(self.params.appearance)

    # -- reading -----------------------------------------------------------------------
    @property
    def state(self) -> CarState:
        vs = self.vs
        alpha = _wrap(vs.yaw + vs.slip - float(self.track.heading[self._idx]))
        return CarState(
            t=self.t, x=vs.x, y=vs.y, yaw=vs.yaw, v=vs.v, yaw_rate=vs.yaw_rate, steer=vs.steer,
            s=self._s, d=self._d, alpha=alpha, ax=self._ax, ay=vs.v * vs.yaw_rate,
            progress=self._progress, crashed=self.crashed,
        )

    def lidar(self) -> np.ndarray:
        """A lidar scan (float32 ranges, one per beam) from the car's current pose."""
        return self._lidar.scan(self.world.client, self.vs.x, self.vs.y, self.vs.yaw, self._streams["lidar"])

    def camera(self) -> np.ndarray:
        """The front camera image, (height, width, 3) uint8."""
        cam = self.params.camera
        eye = (
            self.vs.x + cam.mount_forward * math.cos(self.vs.yaw),
            self.vs.y + cam.mount_forward * math.sin(self.vs.yaw),
            cam.mount_height,
        )
        return render_camera(self.world.client, eye, self.vs.yaw, cam, self.params.lighting, self._streams["camera"])

    def odometry(self) -> dict[str, float]:
        st = self.state
        return read_odometry(self.params.odometry, st.v, st.yaw_rate, st.ax, st.ay, self._streams["odometry"])

    def sense(self) -> dict[str, Any]:
        """The enabled sensors' readings: 'odometry' always, 'lidar' and 'camera' if on."""
        out: dict[str, Any] = {"odometry": self.odometry()}
        if self.config.lidar:
            out["lidar"] = self.lidar()
        if self.config.camera:
            out["camera"] = self.camera()
        return out

    def close(self) -> None:
        self.world.close()
