"""Fitting the twin's parameters to a logged drive: least squares on replayed trajectories.

`calibrate` cuts the drive into segments, holds some out, and on the rest minimises the
divergence (x, y, measured speed) between the log and its replay in the twin
(`scipy.optimize.least_squares`, trust-region reflective within each parameter's bounds; a
well-kept solver rather than a hand-written one, and its Jacobian at the solution gives the
standard errors). The parameters are the twin's own randomization paths, scaled by their
resolution (below), so the optimiser works in comparable units. Each fitted segment's start is
fitted too (multiple shooting, see `_Problem`): a logged start carries the sensors' noise, and
a replay from a wrong start diverges for the whole segment, which would otherwise be blamed on
the parameters. A first pass from the logged starts gets the parameters close cheaply.

Standard errors are s * sqrt(diag((J^T J)^-1)) (the parameters' block, the starts marginalised)
with s^2 the residual variance, floored at NOISE_FLOOR^2: an emulator's log is noise-free and an
exact model would otherwise claim a precision no real log has. Residuals that stay correlated
along a segment (dynamics the twin lacks) make them optimistic on a real car; the held-out
ADE/FDE is the check that does not depend on them.

A parameter is UNIDENTIFIABLE, reported with why instead of a number, when the divergence does
not change with it at all, or when its standard error exceeds its resolution: a quarter of the
range twin/car/randomization.py draws it from, i.e. a 95 % interval (+-2 std) no narrower than
what randomization already covers. Its effect may be indistinguishable from another's (their
Jacobian columns nearly parallel); the report names that one. Unidentifiable parameters are
dropped one at a time (the worst first: dropping one may make a look-alike identifiable) and
the rest refitted; they stay at their nominal values in the calibrated config.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from bridge.calibration.log import CalibrationError, DriveLog, Segment, cut_segments, read_log
from bridge.calibration.replay import BIAS, DELAY, Replay
from twin.car.randomization import CAR_RANDOMIZATION
from twin.car.twin import CarParams
from twin.core.config import path_bounds

NOISE_FLOOR = 0.01
"""Least residual standard deviation assumed (m for positions, m/s for speed): about a good localisation's
and wheel odometry's noise."""
MAX_DELAY_S = 0.25
"""Largest actuation delay fitted (s); the commands of this long before a segment fill the delay line."""
DIFF_STEP = 1e-4
"""Finite-difference step of the Jacobian, in units of each parameter's resolution."""
ALIKE = 0.95
"""Jacobian columns whose cosine exceeds this are named as look-alikes."""


@dataclasses.dataclass(frozen=True)
class ParamInfo:
    """How one twin parameter is calibrated."""

    name: str
    """What the report calls it."""
    unit: str
    """Its unit."""
    resolution: float | None = None
    """Its resolution when twin/car/randomization.py does not draw it (else a quarter of that range)."""


PARAMETERS: dict[str, ParamInfo] = {
    "vehicle.mu": ParamInfo("friction", "-"),
    "vehicle.mass": ParamInfo("mass", "kg"),
    "actuation.motor_gain": ParamInfo("motor gain", "-"),
    "actuation.steer_offset": ParamInfo("steering offset", "rad"),
    DELAY: ParamInfo("actuation delay", "s"),
    # The twin's only speed-sensor bias is its odometry's offset, and the log's speed is what the robot
    # measured: so the bias is the offset between logged and true speed. Resolution: half the largest
    # speed noise the twin's randomization draws (odometry.speed_noise_std up to 0.05 m/s).
    BIAS: ParamInfo("speed-sensor bias", "m/s", 0.025),
}
"""The parameters calibration can fit, by the twin's randomization paths."""
DEFAULT_PARAMS: tuple[str, ...] = tuple(PARAMETERS)


def resolution(path: str) -> float:
    """A quarter of the range the twin's default randomization draws `path` from (or its declared resolution)."""
    for term in CAR_RANDOMIZATION:
        if term.field == path:
            low, high = term.dist.support()
            return (high - low) / 4.0
    declared = PARAMETERS[path].resolution
    if declared is None:
        raise CalibrationError(f"{path}: the twin's randomization does not draw it and no resolution is declared")
    return declared


def check_params(params: Sequence[str]) -> None:
    """CalibrationError unless `params` names known parameters, each once."""
    unknown = [p for p in params if p not in PARAMETERS]
    if unknown or not params or len(set(params)) != len(params):
        raise CalibrationError(f"params {list(params)}: name each of {list(PARAMETERS)} at most once "
                               f"(unknown: {unknown})")


@dataclasses.dataclass(frozen=True)
class Estimate:
    """One parameter's calibration."""

    path: str
    """The twin's randomization path ('vehicle.mu')."""
    name: str
    """What the report calls it ('friction')."""
    unit: str
    """Its unit."""
    nominal: float
    """The twin's value before calibration."""
    value: float | None
    """The estimate; None when unidentifiable."""
    std: float | None
    """Its standard error; None when unidentifiable."""
    why: str = ""
    """Why it is unidentifiable (empty when it was identified)."""

    @property
    def identified(self) -> bool:
        return self.value is not None


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """One held-out segment: the log and its replays, (x, y, measured speed) per record."""

    t0: float
    """Logged time of the segment's start (s)."""
    observed: np.ndarray
    """What the robot logged, shape (steps + 1, 3)."""
    before: np.ndarray
    """The nominal twin's replay."""
    after: np.ndarray
    """The calibrated twin's replay."""

    def errors(self, which: str) -> np.ndarray:
        """Position error (m) of the 'before' or 'after' replay at each step after the start."""
        return np.linalg.norm(getattr(self, which)[1:, :2] - self.observed[1:, :2], axis=1)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The result of `calibrate`."""

    recording: Path
    """The MCAP recording fitted."""
    sha256: str
    """Hash of the recording's bytes."""
    track: str
    """The track it drove on."""
    control_hz: float
    """Its control rate."""
    log_s: float
    """Seconds of drive in the log."""
    estimates: tuple[Estimate, ...]
    """One per parameter asked for, in the order asked."""
    heldout: tuple[HeldOut, ...]
    """The held-out segments (never seen by the fit)."""
    fit_segments: int
    """Segments the fit used."""
    segment_s: float
    """Length of a segment (s)."""
    holdout: float
    """Fraction of segments held out."""
    seed: int
    """Seeds which segments are held out."""
    rms_before: float
    """RMS residual (m and m/s together) of the nominal twin on the fitted segments."""
    rms_after: float
    """The same for the calibrated twin."""
    seconds: float
    """Wall time of the calibration."""
    notes: tuple[str, ...] = ()
    """Anything the reader should know (a torn recording, an estimate at its bound)."""

    @property
    def params(self) -> dict[str, float]:
        """The identified estimates by path: what the calibrated twin config sets."""
        return {e.path: e.value for e in self.estimates if e.identified}

    @property
    def unidentifiable(self) -> dict[str, str]:
        """Path -> why, for each parameter that could not be identified."""
        return {e.path: e.why for e in self.estimates if not e.identified}

    def _mean(self, which: str, final: bool) -> float:
        if not self.heldout:
            return float("nan")
        return float(np.mean([h.errors(which)[-1] if final else h.errors(which).mean() for h in self.heldout]))

    @property
    def ade_before(self) -> float:
        """Average displacement error (m) of the nominal twin on the held-out segments."""
        return self._mean("before", False)

    @property
    def ade_after(self) -> float:
        """The same for the calibrated twin."""
        return self._mean("after", False)

    @property
    def fde_before(self) -> float:
        """Final displacement error (m) of the nominal twin, averaged over the held-out segments."""
        return self._mean("before", True)

    @property
    def fde_after(self) -> float:
        """The same for the calibrated twin."""
        return self._mean("after", True)

    @property
    def ade_reduction(self) -> float:
        """1 - ADE after / ADE before (NaN when the nominal twin already matched within a tenth of NOISE_FLOOR:
        there was nothing to reduce, e.g. the car stood still)."""
        return 1.0 - self.ade_after / self.ade_before if self.ade_before > NOISE_FLOOR / 10 else float("nan")


@dataclasses.dataclass(frozen=True)
class _Excitation:
    """How much the log exercises each effect (for the reasons a parameter is unidentifiable)."""

    v_max: float
    lat_acc: float
    speed_gap: float
    cmd_step: tuple[float, float]

    @classmethod
    def of(cls, log: DriveLog, v_kinematic: float) -> _Excitation:
        v = np.abs(log["v"])
        lateral = np.abs(log["v"] * log["yaw_rate"])[v > v_kinematic]
        return cls(float(v.max()), float(lateral.max()) if lateral.size else 0.0,
                   float(np.abs(log["speed_cmd"] - log["v"]).max()),
                   (float(np.abs(np.diff(log["speed_cmd"])).max(initial=0.0)),
                    float(np.abs(np.diff(log["steer_cmd"])).max(initial=0.0))))

    def why(self, path: str, v_kinematic: float) -> str:
        if path in ("vehicle.mu", "vehicle.mass"):
            if self.v_max <= v_kinematic:
                return (f"the car never drove faster than {v_kinematic} m/s, below which the twin's tyre model is "
                        "kinematic and tyre forces play no part")
            return (f"the log corners at most {self.lat_acc:.2f} m/s^2 sideways: too little for the tyres' cornering "
                    "forces (friction scales them, mass loads them) to shape the path")
        if path == "actuation.motor_gain":
            return (f"the commanded speed never differs from the speed by more than {self.speed_gap:.2f} m/s: the "
                    "speed loop the gain scales is hardly exercised")
        if path == "actuation.steer_offset":
            return f"the car drove at most {self.v_max:.2f} m/s: a steering offset turns it too little to show"
        if path == DELAY:
            return (f"the commands hardly change (at most {self.cmd_step[0]:.2f} m/s and {self.cmd_step[1]:.3f} rad "
                    "from one period to the next): there is nothing for a delay to shift")
        return f"the car drove at most {self.v_max:.2f} m/s: logged speed and distance travelled barely constrain it"


def _analyse(jac: np.ndarray, residuals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(std in resolution units, Jacobian column norms, cosine matrix of the columns) at a solution."""
    m, p = jac.shape
    s2 = max(float(residuals @ residuals) / max(m - p, 1), NOISE_FLOOR**2)
    norms = np.linalg.norm(jac, axis=0)
    alive = norms > 1e-9
    cosines = np.zeros((p, p))
    std = np.full(p, np.inf)
    if alive.any():
        unit = jac[:, alive] / norms[alive]
        c = unit.T @ unit
        cosines[np.ix_(alive, alive)] = c
        lam, vec = np.linalg.eigh(c)
        lost = lam < 1e-10 * max(1.0, lam.max())  # directions the log does not constrain at all
        var = (vec[:, ~lost] ** 2 / lam[~lost]).sum(axis=1)
        var[(np.abs(vec[:, lost]) > 1e-6).any(axis=1)] = np.inf
        std[alive] = np.sqrt(var * s2) / norms[alive]
    return std, norms, cosines


def calibrate(recording: Path | str, params: tuple[str, ...] = DEFAULT_PARAMS, holdout: float = 0.3,
              segment_s: float = 2.0, seed: int = 0, base: CarParams | None = None) -> Calibration:
    """Fit `params` (the twin's randomization paths, see PARAMETERS) to the drive in an MCAP `recording`.

    The drive is cut into disjoint segments of `segment_s`; a `holdout` fraction of them (drawn with
    `seed`) is never seen by the fit and measures ADE/FDE before (nominal `base` twin) and after.
    Raises CalibrationError for a missing or unreadable recording, unknown params, or a log too short
    to give one segment to fit and one to hold out."""
    started = time.perf_counter()
    params = tuple(params)
    check_params(params)
    if not 0.0 < holdout < 1.0:
        raise CalibrationError(f"holdout = {holdout}: the fraction of segments held out must lie in (0, 1)")
    if segment_s <= 0:
        raise CalibrationError(f"segment_s = {segment_s}: a segment must last longer than 0 s")
    log = read_log(recording)
    history = int(np.ceil(MAX_DELAY_S * log.control_hz)) + 1
    segments = cut_segments(log, segment_s, history)
    if len(segments) < 2:
        raise CalibrationError(
            f"{log.recording}: too short: {log.duration_s:.1f} s of log give {len(segments)} contiguous segment(s) of "
            f"{segment_s} s (after {history / log.control_hz:.2f} s of command history each); calibration needs at "
            "least 2, one to fit and one to hold out: record a longer drive or pass a shorter segment_s")
    rng = np.random.default_rng(seed)
    n_held = min(len(segments) - 1, max(1, round(holdout * len(segments))))
    held = set(rng.choice(len(segments), n_held, replace=False).tolist())
    fit = [s for i, s in enumerate(segments) if i not in held]
    test = [s for i, s in enumerate(segments) if i in held]
    replay = Replay(log, history, base)
    try:
        estimates, values, rms, notes = _fit(replay, log, fit, params)
        nominal = replay.nominal(params)
        observed, before, after = replay.observed(test), replay.predict(nominal, test), replay.predict(values, test)
    finally:
        replay.close()
    heldout = tuple(HeldOut(float(log["t"][s.start]), observed[i], before[i], after[i]) for i, s in enumerate(test))
    if log.recovered:
        notes = ("the recording was torn (its writer was killed); read by a linear pass", *notes)
    return Calibration(log.recording, log.sha256, log.track, log.control_hz, log.duration_s, estimates, heldout,
                       len(fit), segment_s, holdout, seed, rms[0], rms[1], time.perf_counter() - started, tuple(notes))


class _Problem:
    """Least squares on the fitted segments: the parameters, in resolution units counted from ORIGIN at the
    nominal, and each segment's start (x, y, yaw, measured speed) as an offset from the logged one, in
    NOISE_FLOOR units. A logged start carries the sensors' noise, and a replay from a wrong start diverges for
    the whole segment: fitting the starts too (multiple shooting) keeps that out of the parameters. The logged
    start stays a residual, which holds each fitted start near it."""

    ORIGIN = 1.0
    """Where the nominal sits in the solver's units: trust-region reflective sizes its first step by |x0|,
    and a start at 0 would make that step vanish."""
    START_RANGE = 0.5
    """Largest start offset fitted (m, rad, m/s)."""

    def __init__(self, replay: Replay, segments: list[Segment], params: tuple[str, ...]) -> None:
        self.replay, self.segments = replay, segments
        self.nominal = replay.nominal(params)
        self.scale = {p: resolution(p) for p in params}
        self.bounds = {p: path_bounds(replay.base, p) for p in params}
        if DELAY in self.bounds:
            self.bounds[DELAY] = (self.bounds[DELAY][0], min(self.bounds[DELAY][1], MAX_DELAY_S))
        self.observed = replay.observed(segments).ravel()
        self._last: dict[bytes, np.ndarray] = {}

    def values(self, x: np.ndarray, active: Sequence[str]) -> dict[str, float]:
        return {p: self.nominal[p] + self.scale[p] * (xi - self.ORIGIN) for p, xi in zip(active, x)}

    def units(self, p: str, value: float) -> float:
        return self.ORIGIN + (value - self.nominal[p]) / self.scale[p]

    def residuals(self, x: np.ndarray, active: Sequence[str]) -> np.ndarray:
        key = np.asarray(x, float).tobytes() + "|".join(active).encode()
        if key not in self._last:  # the Jacobian starts where the solver just evaluated: replay once, not twice
            starts = x[len(active):]
            offsets = starts.reshape(len(self.segments), 4) * NOISE_FLOOR if starts.size else None
            predicted = self.replay.predict(self.values(x, active), self.segments, offsets)
            self._last = {key: predicted.ravel() - self.observed}
        return self._last[key]

    def jacobian(self, x: np.ndarray, active: Sequence[str]) -> np.ndarray:
        """Forward differences of DIFF_STEP units (scipy's relative steps would vanish near 0), stepping inward
        at a parameter's upper bound. A segment's start moves only its own segment, so one replay moving every
        segment's start at once gives each segment's column of that start coordinate."""
        f0 = self.residuals(x, active)
        jac = np.zeros((f0.size, x.size))
        p, rows = len(active), f0.size // len(self.segments)
        for i, name in enumerate(active):
            h = DIFF_STEP if x[i] + DIFF_STEP <= self.units(name, self.bounds[name][1]) else -DIFF_STEP
            step = x.copy()
            step[i] += h
            jac[:, i] = (self.residuals(step, active) - f0) / h
        for k in range(4 if x.size > p else 0):
            step = x.copy()
            step[p + k::4] += DIFF_STEP
            diff = (self.residuals(step, active) - f0) / DIFF_STEP
            for seg in range(len(self.segments)):
                jac[seg * rows:(seg + 1) * rows, p + 4 * seg + k] = diff[seg * rows:(seg + 1) * rows]
        return jac

    def solve(self, active: Sequence[str], start: dict[str, float], offsets: np.ndarray | None):
        """Least squares from `start`; with `offsets` None the starts stay the logged ones (a cheaper first pass:
        the parameters' columns cost a replay each, the starts' four replays in all)."""
        offsets = np.zeros(0) if offsets is None else offsets.ravel()
        starts = np.full(offsets.size, self.START_RANGE / NOISE_FLOOR)
        lo = np.concatenate([[self.units(p, self.bounds[p][0]) for p in active], -starts])
        hi = np.concatenate([[self.units(p, self.bounds[p][1]) for p in active], starts])
        x0 = np.clip(np.concatenate([[self.units(p, start[p]) for p in active], offsets]), lo, hi)
        # lsmr: the trust-region steps by matrix-vector products; a dense SVD of the Jacobian gains nothing here
        # and is slow under a multi-threaded BLAS on a busy machine
        return least_squares(self.residuals, x0, jac=self.jacobian, bounds=(lo, hi), args=(list(active),),
                             method="trf", tr_solver="lsmr", x_scale=1.0, max_nfev=60)

    def rms(self, values: dict[str, float], offsets: np.ndarray) -> float:
        active = list(values)
        x = np.concatenate([[self.units(p, values[p]) for p in active], offsets.ravel()])
        return float(np.sqrt(np.mean(self.residuals(x, active) ** 2)))


def _fit(replay: Replay, log: DriveLog, segments: list[Segment],
         params: tuple[str, ...]) -> tuple[tuple[Estimate, ...], dict[str, float], tuple[float, float], list[str]]:
    """Least squares with unidentifiable parameters dropped one by one; (estimates, fitted values, RMS before
    and after, notes)."""
    problem = _Problem(replay, segments, params)
    v_kinematic = replay.base.vehicle.v_kinematic
    excitation = _Excitation.of(log, v_kinematic)
    values, active, dropped = dict(problem.nominal), list(params), {}
    offsets = np.zeros((len(segments), 4))
    values.update(problem.values(problem.solve(active, values, None).x, active))
    std, grad = np.zeros(0), np.zeros(0)
    while active:
        p_count = len(active)
        sol = problem.solve(active, values, offsets)
        values.update(problem.values(sol.x, active))
        offsets = sol.x[p_count:].reshape(-1, 4)
        std, norms, cosines = _analyse(sol.jac, sol.fun)
        grad = sol.jac.T @ sol.fun
        bad = [i for i in range(p_count) if not std[i] <= 1.0]
        if not bad:
            break
        dead = [i for i in bad if norms[i] <= 1e-9]
        for i in dead or [max(bad, key=lambda i: std[i])]:
            p = active[i]
            why = ("the divergence does not change with it at all: " if norms[i] <= 1e-9 else
                   f"its standard error ({std[i] * problem.scale[p]:.3g}) exceeds its resolution "
                   f"({problem.scale[p]:.3g}): ")
            why += excitation.why(p, v_kinematic)
            alike = [j for j in range(p_count) if j != i and abs(cosines[i, j]) > ALIKE]
            if alike:
                j = max(alike, key=lambda j: abs(cosines[i, j]))
                why += f"; its effect on the path is {abs(cosines[i, j]):.2f} alike that of {PARAMETERS[active[j]].name}"
            dropped[p] = why
            values[p] = problem.nominal[p]
        active = [p for p in active if p not in dropped]
    fitted = {p: values[p] for p in active}
    estimates, notes = [], []
    for p in params:
        info = PARAMETERS[p]
        if p in dropped:
            estimates.append(Estimate(p, info.name, info.unit, problem.nominal[p], None, None, dropped[p]))
            continue
        k = active.index(p)
        estimates.append(Estimate(p, info.name, info.unit, problem.nominal[p], fitted[p], float(std[k] * problem.scale[p])))
        low, high = problem.bounds[p]
        if (fitted[p] <= low and grad[k] > 1e-12) or (fitted[p] >= high and grad[k] < -1e-12):
            notes.append(f"{info.name} ({p}) ended at its bound {fitted[p]:.4g} and the fit would go further: the log "
                         "asks for a value the twin does not allow, or the twin lacks an effect the car has")
    zero = np.zeros((len(segments), 4))
    return tuple(estimates), fitted, (problem.rms({}, zero), problem.rms(fitted, zero)), notes
