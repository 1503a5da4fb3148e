"""RobotxR1's kinematic Frenet MPC, solved by real-time iteration on OSQP.

State x = [s, n, alpha, v, delta] (arc length, lateral offset, heading error, speed,
steering angle); input u = [a, ddelta]. Cost per stage:
    qn (n - n_ref)^2 + qalpha alpha^2 + qv (v - v_target)^2 + qac a^2 + qddelta ddelta^2
with soft track bounds (inflated by track_safety_margin), soft lateral acceleration
limit alat_max and soft speed bounds [v_min, v_max]; hard input and steering bounds.

Why RTI on OSQP rather than a full NLP solver: acados (RobotxR1's solver) runs SQP-RTI,
one QP per control period around the previous, shifted solution. OSQP is a well-kept
sparse QP solver with warm starts, so each period costs one sparse QP of fixed
structure: the solve time is bounded and small, which a 20-50 Hz loop needs. The QP's
sparsity pattern is built once and only its values are updated each period.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import osqp
import scipy.sparse as sp

from agents.control.mpc_params import DEFAULT, MPCParams
from twin.car.tracks import Track
from twin.core.config import bounded, check_bounds

NX, NU = 5, 2
S, N_, ALPHA, V, DELTA = range(NX)
INF = 1e20


@dataclasses.dataclass(frozen=True)
class MPCConfig:
    """Fixed settings of the MPC (the tunable ones are MPCParams)."""

    horizon: int = bounded(40, 5, 200)
    """Number of prediction steps N."""
    dt: float = bounded(0.05, 0.005, 0.5)
    """Prediction step (s); N * dt is the horizon in time (RobotxR1: 40 x 0.05 s)."""
    wheelbase: float = bounded(0.33, 0.1, 1.0)
    """Wheelbase of the kinematic model (m)."""
    car_width: float = bounded(0.31, 0.05, 1.0)
    """Width used to keep the body, not just its centre, inside the track (m)."""
    steer_max: float = bounded(0.4, 0.05, 1.0)
    """Steering angle bound (rad)."""
    steer_rate_max: float = bounded(3.0, 0.05, 10.0)
    """Steering rate bound (rad/s); the car's servo does 3.2 rad/s."""
    slack_quadratic: float = bounded(100.0, 0.0, 1e6)
    """Quadratic penalty on violating a soft constraint."""
    slack_linear: float = bounded(10.0, 0.0, 1e6)
    """Linear penalty on violating a soft constraint."""
    speed_lookahead_s: float = bounded(0.1, 0.0, 1.0)
    """The speed command is the predicted speed this far ahead (covers the speed loop's lag)."""
    v_cap: float = bounded(4.0, 0.5, 20.0)
    """Top of the track's reference speed profile (m/s)."""
    a_lat_ref: float = bounded(2.5, 0.5, 20.0)
    """Lateral acceleration the reference speed profile is planned for (m/s^2)."""
    raceline_fraction: float = bounded(0.9, 0.0, 1.0)
    """How far toward the walls (fraction of the free half width) the racing line cuts corners."""
    max_iter: int = bounded(400, 10, 100000)
    """OSQP iteration cap; bounds the worst-case solve time."""

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclasses.dataclass(frozen=True)
class MPCOutput:
    """One control period's result."""

    speed: float
    """Speed command (m/s)."""
    steer: float
    """Steering angle command (rad)."""
    status: str
    """'solved', or why the previous plan (or a stop) was used instead."""
    solve_time_s: float
    """Wall time of this call (s)."""
    plan: np.ndarray
    """Predicted states, shape (N+1, 5)."""


def _f(x: np.ndarray, u: np.ndarray, kappa: np.ndarray, L: float) -> np.ndarray:
    """Continuous dynamics, vectorised over leading axes."""
    s, n, al, v, de = (x[..., i] for i in range(NX))
    denom = 1.0 - n * kappa
    s_dot = v * np.cos(al) / denom
    return np.stack([s_dot, v * np.sin(al), v * np.tan(de) / L - kappa * s_dot, u[..., 0], u[..., 1]], axis=-1)


def _rk4(x: np.ndarray, u: np.ndarray, kappa: np.ndarray, dt: float, L: float) -> np.ndarray:
    k1 = _f(x, u, kappa, L)
    k2 = _f(x + 0.5 * dt * k1, u, kappa, L)
    k3 = _f(x + 0.5 * dt * k2, u, kappa, L)
    k4 = _f(x + dt * k3, u, kappa, L)
    return x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def _jacobians(x: np.ndarray, kappa: np.ndarray, dt: float, L: float) -> tuple[np.ndarray, np.ndarray]:
    """Discrete A (N,5,5) and B (N,5,2) by second-order expansion of the continuous Jacobian."""
    n_, al, v, de = x[:, N_], x[:, ALPHA], x[:, V], x[:, DELTA]
    D = 1.0 - n_ * kappa
    c, s = np.cos(al), np.sin(al)
    Ac = np.zeros((len(x), NX, NX))
    Ac[:, S, N_] = v * c * kappa / D**2
    Ac[:, S, ALPHA] = -v * s / D
    Ac[:, S, V] = c / D
    Ac[:, N_, ALPHA] = v * c
    Ac[:, N_, V] = s
    Ac[:, ALPHA, N_] = -kappa * Ac[:, S, N_]
    Ac[:, ALPHA, ALPHA] = -kappa * Ac[:, S, ALPHA]
    Ac[:, ALPHA, V] = np.tan(de) / L - kappa * Ac[:, S, V]
    Ac[:, ALPHA, DELTA] = v / (L * np.cos(de) ** 2)
    Bc = np.zeros((NX, NU))
    Bc[V, 0] = 1.0
    Bc[DELTA, 1] = 1.0
    I = np.eye(NX)
    A2 = Ac @ Ac
    A = I + Ac * dt + A2 * (dt * dt / 2)
    B = (I * dt + Ac * (dt * dt / 2)) @ Bc
    return A, B


class _Pattern:
    """Rows/cols of a sparse matrix given in a fixed entry order, and that order's CSC permutation."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> None:
        self.perm = np.lexsort((rows, cols))
        self.shape = shape
        self.indices = rows[self.perm].astype(np.int64)
        self.indptr = np.r_[0, np.cumsum(np.bincount(cols, minlength=shape[1]))].astype(np.int64)

    def matrix(self, values: np.ndarray) -> sp.csc_matrix:
        return sp.csc_matrix((values[self.perm], self.indices, self.indptr), shape=self.shape)

    def data(self, values: np.ndarray) -> np.ndarray:
        return values[self.perm]


class FrenetMPC:
    """Call `reset()` at episode start and `control(state)` once per control period."""

    def __init__(self, track: Track, config: MPCConfig | None = None, params: MPCParams = DEFAULT) -> None:
        self.track = track
        self.cfg = config or MPCConfig()
        self.params = params
        cfg = self.cfg
        self._v_profile = track.speed_profile(cfg.v_cap, cfg.a_lat_ref, a_long=3.0)
        free = track.half_width - cfg.car_width / 2 - DEFAULT.track_safety_margin
        self._raceline = track.racing_line(cfg.raceline_fraction * free)
        self._build_structure()
        self._solver: osqp.OSQP | None = None
        self._u_guess = np.zeros((cfg.horizon, NU))

    def set_params(self, params: MPCParams) -> None:
        self.params = params

    def reset(self) -> None:
        self._u_guess = np.zeros((self.cfg.horizon, NU))
        self._solver = None

    # -- QP structure ------------------------------------------------------------------
    def _build_structure(self) -> None:
        N = self.cfg.horizon
        self.nz = NX * (N + 1) + NU * N + 3 * N
        self.oU = NX * (N + 1)
        self.oS = self.oU + NU * N
        xi = lambda k, j: k * NX + j  # noqa: E731 - index of state j at stage k
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        r = 0
        # initial state: x_0 = x0
        rows.append(np.arange(NX)); cols.append(np.arange(NX)); r += NX
        self.r_dyn = r
        # dynamics: x_{k+1} - A x_k - B u_k = c_k ; order: identity, A, B entries
        k_, i_ = np.meshgrid(np.arange(N), np.arange(NX), indexing="ij")
        rows.append((r + k_ * NX + i_).ravel()); cols.append(xi(k_ + 1, i_).ravel())
        k_, i_, j_ = np.meshgrid(np.arange(N), np.arange(NX), np.arange(NX), indexing="ij")
        rows.append((r + k_ * NX + i_).ravel()); cols.append(xi(k_, j_).ravel())
        k_, i_, j_ = np.meshgrid(np.arange(N), np.arange(NX), np.arange(NU), indexing="ij")
        rows.append((r + k_ * NX + i_).ravel()); cols.append((self.oU + k_ * NU + j_).ravel())
        r += NX * N
        ks = np.arange(1, N + 1)
        sl = lambda g: self.oS + g * N + (ks - 1)  # noqa: E731 - slack of group g at stages 1..N
        # soft bounds, two rows each (lower with +slack, upper with -slack)
        self.r_soft = r
        for var, g in ((N_, 0), (V, 2)):
            for _sign in (1, -1):
                rows += [r + ks - 1, r + ks - 1]; cols += [xi(ks, var), sl(g)]; r += N
        self.r_alat = r
        for _sign in (1, -1):
            rows += [r + ks - 1, r + ks - 1, r + ks - 1]; cols += [xi(ks, V), xi(ks, DELTA), sl(1)]; r += N
        # hard bounds: steering angle, inputs, slacks >= 0
        self.r_box = r
        rows.append(r + ks - 1); cols.append(xi(ks, DELTA)); r += N
        rows.append(r + np.arange(NU * N)); cols.append(self.oU + np.arange(NU * N)); r += NU * N
        rows.append(r + np.arange(3 * N)); cols.append(self.oS + np.arange(3 * N)); r += 3 * N
        self.m = r
        self.A_pat = _Pattern(np.concatenate(rows), np.concatenate(cols), (self.m, self.nz))
        self._n_dyn_entries = N * (NX + NX * NX + NX * NU)
        idx = np.arange(self.nz)
        self.P_pat = _Pattern(idx, idx, (self.nz, self.nz))

    def _a_values(self, A: np.ndarray, B: np.ndarray, gv: np.ndarray, gd: np.ndarray) -> np.ndarray:
        N = self.cfg.horizon
        ones_n = np.ones(N)
        soft = []
        for _ in range(2):  # n and v groups
            soft += [ones_n, ones_n, ones_n, -ones_n]
        alat = [gv, gd, ones_n, gv, gd, -ones_n]
        return np.concatenate(
            [np.ones(NX), np.ones(N * NX), -A.ravel(), -B.ravel(), *soft, *alat, np.ones(N + NU * N + 3 * N)]
        )

    # -- control -----------------------------------------------------------------------
    def _references(self, s: np.ndarray, p: MPCParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.track.index(s)
        v_t = np.clip(self._v_profile[idx], p.v_min, p.v_max)
        return self.track.curvature[idx], self._raceline[idx], v_t

    def control(self, x0: np.ndarray) -> MPCOutput:
        """Commands for the current state x0 = [s, n, alpha, v, delta]."""
        t0 = time.perf_counter()
        cfg, p = self.cfg, self.params
        N, dt, L = cfg.horizon, cfg.dt, cfg.wheelbase
        x0 = np.asarray(x0, dtype=float)
        # Linearisation point: roll the shifted previous inputs out from the current state.
        u_bar = self._u_guess
        x_bar = np.empty((N + 1, NX))
        x_bar[0] = x0
        kappa = np.empty(N)
        for k in range(N):
            kappa[k] = self.track.curvature[self.track.index(x_bar[k, S])]
            x_bar[k + 1] = _rk4(x_bar[k], u_bar[k], kappa[k], dt, L)
        A, B = _jacobians(x_bar[:N], kappa, dt, L)
        c = x_bar[1:] - np.einsum("kij,kj->ki", A, x_bar[:N]) - np.einsum("kij,kj->ki", B, u_bar)

        _, n_ref, v_t = self._references(x_bar[1:, S], p)
        # lateral acceleration v^2 tan(delta) / L, linearised
        vb, db = x_bar[1:, V], x_bar[1:, DELTA]
        g = vb * vb * np.tan(db) / L
        gv = 2 * vb * np.tan(db) / L
        gd = vb * vb / (L * np.cos(db) ** 2)
        g_off = g - gv * vb - gd * db

        half = self.track.half_width - cfg.car_width / 2 - p.track_safety_margin
        half = max(half, 0.0)

        # cost: 1/2 z'Pz + q'z
        P = np.full(self.nz, 1e-6)
        q = np.zeros(self.nz)
        xs = lambda j: np.arange(1, N + 1) * NX + j  # noqa: E731
        P[xs(N_)] += 2 * p.qn
        q[xs(N_)] += -2 * p.qn * n_ref
        P[xs(ALPHA)] += 2 * p.qalpha
        P[xs(V)] += 2 * p.qv
        q[xs(V)] += -2 * p.qv * v_t
        P[self.oU + 0 : self.oS : 2] += 2 * p.qac
        P[self.oU + 1 : self.oS : 2] += 2 * p.qddelta
        P[self.oS :] += 2 * cfg.slack_quadratic
        q[self.oS :] += cfg.slack_linear

        l = np.empty(self.m)
        u = np.empty(self.m)
        l[:NX] = u[:NX] = x0
        l[self.r_dyn : self.r_soft] = u[self.r_dyn : self.r_soft] = c.ravel()
        r = self.r_soft
        for lo, hi in ((-half, half), (p.v_min, p.v_max)):
            l[r : r + N], u[r : r + N] = lo, INF
            l[r + N : r + 2 * N], u[r + N : r + 2 * N] = -INF, hi
            r += 2 * N
        l[r : r + N], u[r : r + N] = -p.alat_max - g_off, INF
        l[r + N : r + 2 * N], u[r + N : r + 2 * N] = -INF, p.alat_max - g_off
        r += 2 * N
        l[r : r + N], u[r : r + N] = -cfg.steer_max, cfg.steer_max
        r += N
        l[r : r + 2 * N : 2], u[r : r + 2 * N : 2] = p.a_min, p.a_max
        l[r + 1 : r + 2 * N : 2], u[r + 1 : r + 2 * N : 2] = -cfg.steer_rate_max, cfg.steer_rate_max
        r += 2 * N
        l[r:], u[r:] = 0.0, INF

        a_vals = self._a_values(A, B, gv, gd)
        if self._solver is None:
            self._solver = osqp.OSQP()
            # adaptive_rho_interval fixed: OSQP's default ties rho updates to wall time,
            # which would make the same episode solve differently on a busier machine.
            self._solver.setup(
                P=self.P_pat.matrix(P), q=q, A=self.A_pat.matrix(a_vals), l=l, u=u,
                verbose=False, warm_starting=True, polishing=False, adaptive_rho_interval=25,
                max_iter=cfg.max_iter, eps_abs=1e-3, eps_rel=1e-3,
            )
        else:
            self._solver.update(q=q, l=l, u=u, Px=self.P_pat.data(P), Ax=self.A_pat.data(a_vals))
        z0 = np.concatenate([x_bar.ravel(), u_bar.ravel(), np.zeros(3 * N)])
        self._solver.warm_start(x=z0)
        res = self._solver.solve(raise_error=False)  # a failed solve is handled below, not raised
        status = str(res.info.status)
        if res.info.status_val in (1, 2):  # solved, solved inaccurate
            z = res.x
            plan = z[: self.oU].reshape(N + 1, NX)
            u_opt = z[self.oU : self.oS].reshape(N, NU)
            self._u_guess = np.vstack([u_opt[1:], u_opt[-1:]])
            status = "solved"
        else:
            # Keep driving the previous plan (already shifted) and say so.
            plan = x_bar
            self._u_guess = np.vstack([u_bar[1:], u_bar[-1:]])
            status = f"fallback: {status}"
        t_cmd = cfg.speed_lookahead_s
        speed = float(np.interp(t_cmd, np.arange(N + 1) * dt, plan[:, V]))
        steer = float(np.clip(plan[1, DELTA], -cfg.steer_max, cfg.steer_max))
        return MPCOutput(speed=speed, steer=steer, status=status, solve_time_s=time.perf_counter() - t0, plan=plan)


def mpc_state(s: float, d: float, alpha: float, v: float, steer: float) -> np.ndarray:
    """The MPC's state vector from Frenet quantities."""
    return np.array([s, d, alpha, v, steer], dtype=float)
