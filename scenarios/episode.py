"""One scenario episode from (scenario, sample vector, seed), judged by its monitors.

The result carries the robustness of every monitor and validity requirement, the failure
signature (which monitor, when, where), the log-likelihood under the nominal model, and a
hash of the trace, so a replay can prove it reproduced the episode bit for bit.
`episode_row` is the campaign's episode function: module level, picklable, and it builds
the world once per worker process (the runner is cached by the scenario's text).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import time
from typing import Any

import numpy as np

from scenarios.loader import load_text
from scenarios.space import loglik
from scenarios.spec import Scenario
from scenarios.stl import parse
from scenarios.worlds import WORLDS


@dataclasses.dataclass(frozen=True)
class Signature:
    """What failed, when and where: shrinking accepts a step only if this stays the same."""

    monitor: str
    """The monitor with the lowest robustness."""
    t: float
    """Time (s) of the sample that decided it."""
    where: float
    """The world's place signal at that time (car: arc length s in m; factory: time)."""

    def same_as(self, other: Signature | None, where_tolerance: float) -> bool:
        """Same monitor, at nearly the same place (a failure that slid elsewhere is another bug)."""
        return other is not None and other.monitor == self.monitor and abs(other.where - self.where) <= where_tolerance


@dataclasses.dataclass(frozen=True)
class EpisodeResult:
    """The verdict on one episode."""

    robustness: float
    """The lowest monitor robustness (< 0: the system failed). +inf when the run was invalid."""
    failed: bool
    """Valid and some monitor's robustness < 0."""
    valid: bool
    """Every validity requirement held (else the sample is rejected, neither pass nor fail)."""
    monitors: dict[str, float]
    """Robustness of each monitor."""
    validity: dict[str, float]
    """Robustness of each validity requirement."""
    signature: Signature | None
    """For a failure: which monitor, when, where."""
    loglik: float
    """Log-likelihood of the sample vector under the nominal model plus that of the seeded white noise."""
    trace_hash: str
    """sha256 of every signal's bytes: the same (scenario, z, seed) must give the same hash."""
    seconds: float
    """Wall time of the episode (a measurement of this machine)."""
    info: dict[str, Any]
    """World-specific facts: the policy's decision, events fired, shield counts, costs."""

    def row(self) -> dict[str, Any]:
        """A JSON-ready dict for the campaign store (no trajectories)."""
        out = dataclasses.asdict(self)
        out["robustness"] = _finite(self.robustness)
        out["info"] = {k: v for k, v in self.info.items() if k != "trace"}
        return out


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


@functools.lru_cache(maxsize=8)
def runner_for(text: str, source: str = "<campaign>") -> Any:
    """The world runner of a scenario (twin, shield, controller built once per process)."""
    scenario = load_text(text, source)
    if scenario.world.kind == "car":
        from scenarios.car.runner import CarRunner

        return CarRunner(scenario)
    from scenarios.factory.runner import FactoryRunner

    return FactoryRunner(scenario)


def judge(scenario: Scenario, signals: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, float],
                                                                         Signature | None]:
    """Robustness of each monitor and validity requirement, and the signature of the worst monitor."""
    t = signals["t"]
    monitors = {name: float(parse(text).robustness(signals, t)) for name, text in scenario.monitors}
    validity = {name: float(parse(text).robustness(signals, t)) for name, text in scenario.validity}
    worst = min(monitors, key=monitors.get)
    signature = None
    if monitors[worst] < 0:
        k = int(parse(dict(scenario.monitors)[worst]).decided_at(signals, t))
        signature = Signature(worst, float(t[k]), float(signals[WORLDS[scenario.world.kind].where][k]))
    return monitors, validity, signature


def trace_hash(signals: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(signals):
        h.update(name.encode())
        h.update(np.ascontiguousarray(signals[name], np.float64).tobytes())
    return h.hexdigest()


def run_episode(text: str, z: Any, seed: int, keep_trace: bool = False) -> tuple[EpisodeResult, dict[str, np.ndarray]]:
    """Run and judge one episode of the scenario whose file text is `text`; also returns its signals."""
    runner = runner_for(text)
    t0 = time.perf_counter()
    z = runner.space.check(z)
    signals, info = runner.run(z, int(seed))
    monitors, validity, signature = judge(runner.scenario, signals)
    valid = all(v >= 0 for v in validity.values())
    robustness = min(monitors.values()) if valid else math.inf
    if not keep_trace:
        info = {k: v for k, v in info.items() if k != "trace"}
    result = EpisodeResult(robustness=robustness, failed=valid and robustness < 0, valid=valid, monitors=monitors,
                           validity=validity, signature=signature if valid else None,
                           loglik=float(loglik(z)) + float(info.get("disturbance_loglik", 0.0)),
                           trace_hash=trace_hash(signals), seconds=time.perf_counter() - t0, info=info)
    return result, signals


def episode_row(payload: dict[str, Any]) -> dict[str, Any]:
    """The campaign's episode function: payload {'scenario': text, 'z': [...], 'seed': int} -> row."""
    result, _ = run_episode(payload["scenario"], payload["z"], payload["seed"])
    return result.row()
