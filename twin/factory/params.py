"""Parameters of the factory cell and their default randomization.

The same declarative mechanism as the car (twin.core.randomization): every randomizable field
declares its bounds here, and FACTORY_RANDOMIZATION lists what is drawn per episode.
"""

from __future__ import annotations

import dataclasses

from twin.core.config import ConfigError, bounded, check_bounds
from twin.core.randomization import Normal, Term, Uniform
from twin.core.sensors import CameraParams, LightingParams


@dataclasses.dataclass(frozen=True)
class BeltParams:
    """The conveyor."""

    speed: float = bounded(0.2, 0.0, 1.0)
    """Nominal belt speed (m/s) when the line runs."""
    friction: float = bounded(0.9, 0.1, 2.0)
    """Friction coefficient of the belt surface."""

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclasses.dataclass(frozen=True)
class PartParams:
    """The parts and how their defects look."""

    mass: float = bounded(0.12, 0.02, 1.0)
    """Mass of a part (kg)."""
    size_scale: float = bounded(1.0, 0.7, 1.3)
    """Scale of every part's footprint."""
    base_rgb: tuple[float, float, float] = bounded((0.72, 0.72, 0.76), 0.0, 1.0)
    """Colour of a part's top (brushed metal by default)."""
    defect_rate: float = bounded(0.35, 0.0, 1.0)
    """Probability that a new part has a defect."""
    scratch_width: float = bounded(0.008, 0.002, 0.03)
    """Width of a scratch mark (m)."""
    spot_radius: float = bounded(0.014, 0.004, 0.04)
    """Radius of a colour spot (m)."""
    spot_rgb: tuple[float, float, float] = bounded((0.75, 0.15, 0.1), 0.0, 1.0)
    """Colour of a colour spot (rust by default)."""
    dent_darkness: float = bounded(0.45, 0.1, 0.9)
    """How much darker a dent's patch is than the part (fraction)."""

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclasses.dataclass(frozen=True)
class FeederParams:
    """Where and how often parts arrive."""

    interval_min: float = bounded(2.5, 0.3, 60.0)
    """Shortest time between two parts (s)."""
    interval_max: float = bounded(4.0, 0.3, 60.0)
    """Longest time between two parts (s)."""
    lateral_jitter: float = bounded(0.03, 0.0, 0.12)
    """How far off the belt's centre line a part may land (m)."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.interval_min > self.interval_max:
            raise ConfigError(f"FeederParams: interval_min {self.interval_min} > interval_max {self.interval_max}")


@dataclasses.dataclass(frozen=True)
class PersonParams:
    """The person walking near the cell."""

    speed: float = bounded(1.2, 0.2, 2.5)
    """Walking speed (m/s)."""
    enter_probability: float = bounded(0.15, 0.0, 1.0)
    """Chance, at each turn of the patrol, that the person walks into the robot's cell."""
    patrol_offset: float = bounded(0.0, -0.3, 0.3)
    """Shift of the patrol line away from the cell (m)."""

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclasses.dataclass(frozen=True)
class FactoryParams:
    """Everything about the cell that randomization may change."""

    belt: BeltParams = BeltParams()
    parts: PartParams = PartParams()
    feeder: FeederParams = FeederParams()
    person: PersonParams = PersonParams()
    camera: CameraParams = CameraParams(fov_deg=24.0, mount_height=0.85, pitch_deg=-89.5, far=3.0)
    """The overhead inspection camera (mounted above the inspection point, looking down)."""
    lighting: LightingParams = LightingParams(azimuth_deg=30.0, elevation_deg=70.0, ambient=0.55, diffuse=0.45)
    floor_rgb: tuple[float, float, float] = bounded((0.5, 0.5, 0.48), 0.0, 1.0)
    """Colour of the floor."""
    belt_rgb: tuple[float, float, float] = bounded((0.12, 0.12, 0.13), 0.0, 1.0)
    """Colour of the belt surface."""
    trigger_jitter_s: float = bounded(0.0, 0.0, 0.5)
    """The camera's trigger latency: each part's frame is taken a uniform [0, this] s after it crosses the
    inspection line (rounded up to a control period). 0: the period it crosses, as a perfect trigger would."""

    def __post_init__(self) -> None:
        check_bounds(self)


FACTORY_RANDOMIZATION: tuple[Term, ...] = (
    Term("belt.speed", Uniform(0.15, 0.25)),
    Term("belt.friction", Uniform(0.7, 1.1)),
    Term("parts.mass", Uniform(0.08, 0.2)),
    Term("parts.size_scale", Uniform(0.9, 1.1)),
    Term("parts.base_rgb", Uniform(0.55, 0.85)),
    Term("parts.scratch_width", Uniform(0.006, 0.012)),
    Term("parts.spot_radius", Uniform(0.011, 0.018)),
    Term("parts.spot_rgb", Uniform(0.1, 0.8)),
    Term("parts.dent_darkness", Uniform(0.35, 0.6)),
    Term("feeder.lateral_jitter", Uniform(0.0, 0.04)),
    Term("person.speed", Uniform(0.8, 1.6)),
    Term("person.patrol_offset", Uniform(-0.2, 0.2)),
    Term("camera.fov_deg", Uniform(22.0, 26.0)),
    Term("camera.mount_height", Uniform(0.82, 0.88)),
    Term("camera.noise_std", Uniform(0.0, 6.0)),
    Term("lighting.azimuth_deg", Uniform(-180.0, 180.0)),
    Term("lighting.elevation_deg", Uniform(50.0, 85.0)),
    Term("lighting.ambient", Normal(0.55, 0.05, 0.45, 0.65)),
    Term("floor_rgb", Uniform(0.35, 0.65)),
    Term("belt_rgb", Uniform(0.08, 0.2)),
)
"""Drawn once per episode from the env's seeded generator."""
