"""The 1:10 car's physical parameters and its single-track dynamics.

The parameters and the model are f1tenth_gym's (the CommonRoad single-track model with
linear tyres, kinematic below `v_switch_kinematic` and in reverse), because that is the
validated model of this car. PyBullet holds the car's body for contacts, ray casts and
rendering; its own wheel contact for a 3.7 kg car at 240 Hz is stiff and would give a
different car than the reference, so the body is moved kinematically along this model.
"""

from __future__ import annotations

import dataclasses
import math

from twin.core.config import bounded, check_bounds

G = 9.81


@dataclasses.dataclass(frozen=True)
class VehicleParams:
    """Physical parameters of the car (defaults: f1tenth_gym)."""

    mass: float = bounded(3.74, 1.0, 10.0)
    """Total mass (kg)."""
    lf: float = bounded(0.15875, 0.05, 0.5)
    """Centre of gravity to front axle (m)."""
    lr: float = bounded(0.17145, 0.05, 0.5)
    """Centre of gravity to rear axle (m)."""
    h_cg: float = bounded(0.074, 0.0, 0.5)
    """Height of the centre of gravity (m)."""
    inertia_z: float = bounded(0.04712, 0.001, 1.0)
    """Yaw moment of inertia (kg m^2)."""
    mu: float = bounded(1.0489, 0.05, 2.0)
    """Tyre-road friction coefficient on a nominal surface."""
    c_sf: float = bounded(4.718, 0.5, 20.0)
    """Front cornering stiffness coefficient (1/rad)."""
    c_sr: float = bounded(5.4562, 0.5, 20.0)
    """Rear cornering stiffness coefficient (1/rad)."""
    steer_max: float = bounded(0.4189, 0.1, 1.0)
    """Steering angle limit, symmetric (rad)."""
    steer_rate_max: float = bounded(3.2, 0.1, 10.0)
    """Steering rate limit (rad/s)."""
    v_min: float = bounded(-5.0, -20.0, 0.0)
    """Lowest (reverse) speed (m/s)."""
    v_max: float = bounded(20.0, 0.5, 40.0)
    """Highest speed (m/s)."""
    a_max: float = bounded(9.51, 0.5, 30.0)
    """Longitudinal acceleration limit (m/s^2)."""
    v_switch: float = bounded(7.319, 0.5, 40.0)
    """Speed above which the motor's power limit lowers the acceleration limit (m/s)."""
    v_kinematic: float = bounded(0.5, 0.05, 2.0)
    """Below this speed (and in reverse) the kinematic model is used (m/s)."""
    width: float = bounded(0.31, 0.1, 1.0)
    """Footprint width (m)."""
    length: float = bounded(0.58, 0.2, 2.0)
    """Footprint length (m)."""

    def __post_init__(self) -> None:
        check_bounds(self)

    @property
    def wheelbase(self) -> float:
        return self.lf + self.lr


@dataclasses.dataclass
class VehicleState:
    """Single-track state; x, y at the centre of gravity."""

    x: float = 0.0
    y: float = 0.0
    steer: float = 0.0
    v: float = 0.0
    yaw: float = 0.0
    yaw_rate: float = 0.0
    slip: float = 0.0

    def as_tuple(self) -> tuple[float, ...]:
        return (self.x, self.y, self.steer, self.v, self.yaw, self.yaw_rate, self.slip)


def _derivative(p: VehicleParams, mu: float, st: tuple[float, ...], sv: float, a: float) -> tuple[float, ...]:
    x, y, delta, v, psi, psi_dot, beta = st
    lwb = p.lf + p.lr
    if v < p.v_kinematic:
        # Kinematic model: no tyre slip; also used in reverse, where the tyre model is invalid.
        tan_d = math.tan(delta)
        return (
            v * math.cos(psi),
            v * math.sin(psi),
            sv,
            a,
            v / lwb * tan_d,
            a / lwb * tan_d + v / (lwb * math.cos(delta) ** 2) * sv,
            0.0,
        )
    f_load = G * p.lr - a * p.h_cg
    r_load = G * p.lf + a * p.h_cg
    k = mu * p.mass / (p.inertia_z * lwb)
    psi_ddot = (
        -k / v * (p.lf**2 * p.c_sf * f_load + p.lr**2 * p.c_sr * r_load) * psi_dot
        + k * (p.lr * p.c_sr * r_load - p.lf * p.c_sf * f_load) * beta
        + k * p.lf * p.c_sf * f_load * delta
    )
    beta_dot = (
        (mu / (v * v * lwb) * (p.c_sr * r_load * p.lr - p.c_sf * f_load * p.lf) - 1.0) * psi_dot
        - mu / (v * lwb) * (p.c_sr * r_load + p.c_sf * f_load) * beta
        + mu / (v * lwb) * p.c_sf * f_load * delta
    )
    return (
        v * math.cos(beta + psi),
        v * math.sin(beta + psi),
        sv,
        a,
        psi_dot,
        psi_ddot,
        beta_dot,
    )


def input_limits(p: VehicleParams, state: VehicleState, steer_target: float, accel: float) -> tuple[float, float]:
    """(steering rate, acceleration) the car can actually apply toward a steering target."""
    sv = max(-p.steer_rate_max, min(p.steer_rate_max, 20.0 * (steer_target - state.steer)))
    a_hi = p.a_max * p.v_switch / state.v if state.v > p.v_switch else p.a_max
    a = max(-p.a_max, min(a_hi, accel))
    if (state.v >= p.v_max and a > 0) or (state.v <= p.v_min and a < 0):
        a = 0.0
    return sv, a


def integrate(p: VehicleParams, mu: float, state: VehicleState, sv: float, a: float, dt: float) -> VehicleState:
    """One RK4 step of length dt with inputs held; steering and speed kept in their limits."""
    s0 = state.as_tuple()
    k1 = _derivative(p, mu, s0, sv, a)
    k2 = _derivative(p, mu, tuple(s + 0.5 * dt * d for s, d in zip(s0, k1)), sv, a)
    k3 = _derivative(p, mu, tuple(s + 0.5 * dt * d for s, d in zip(s0, k2)), sv, a)
    k4 = _derivative(p, mu, tuple(s + dt * d for s, d in zip(s0, k3)), sv, a)
    new = [s + dt / 6.0 * (d1 + 2 * d2 + 2 * d3 + d4) for s, d1, d2, d3, d4 in zip(s0, k1, k2, k3, k4)]
    new[2] = max(-p.steer_max, min(p.steer_max, new[2]))
    new[3] = max(p.v_min, min(p.v_max, new[3]))
    if new[3] < p.v_kinematic:
        # Leaving the dynamic model: yaw rate follows the kinematic one, slip decays to zero.
        new[5] = new[3] / p.wheelbase * math.tan(new[2])
        new[6] = 0.0
    return VehicleState(*new)
