"""The default randomization of the car twin: physics, actuation, sensing, appearance.

Ranges follow common sim-to-real practice for 1:10 cars (friction +-30 %, mass +-15 %,
tens of milliseconds of actuation delay, a few milliradians of steering offset).
Replace or extend this tuple to randomize differently; nothing else hard-codes ranges.
"""

from __future__ import annotations

from twin.core.randomization import Normal, Term, Uniform

CAR_RANDOMIZATION: tuple[Term, ...] = (
    # physics
    Term("vehicle.mu", Uniform(0.8, 1.2)),
    Term("friction_patches", Uniform(0.75, 1.15)),
    Term("vehicle.mass", Uniform(3.2, 4.3)),
    # actuation
    Term("actuation.motor_gain", Uniform(0.85, 1.15)),
    Term("actuation.steer_offset", Normal(0.0, 0.01, -0.03, 0.03)),
    Term("actuation.delay_s", Uniform(0.0, 0.04)),
    # sensing
    Term("lidar.noise_std", Uniform(0.005, 0.03)),
    Term("lidar.dropout", Uniform(0.0, 0.02)),
    Term("lidar.bias", Uniform(-0.02, 0.02)),
    Term("odometry.speed_noise_std", Uniform(0.01, 0.05)),
    Term("camera.pitch_deg", Uniform(-16.0, -8.0)),
    Term("camera.fov_deg", Uniform(80.0, 100.0)),
    Term("camera.mount_height", Uniform(0.17, 0.23)),
    # appearance
    Term("lighting.azimuth_deg", Uniform(-180.0, 180.0)),
    Term("lighting.elevation_deg", Uniform(30.0, 85.0)),
    Term("lighting.ambient", Uniform(0.45, 0.75)),
    Term("appearance.floor_rgb", Uniform(0.35, 0.75)),
    Term("appearance.track_rgb", Uniform(0.15, 0.4)),
    Term("appearance.wall_rgb", Uniform(0.1, 0.95)),
)
"""Drawn once per episode from the env's seeded generator."""
