"""Shrinking a failure toward the nominal scenario, keeping the same failure.

First every deviation that is not needed is dropped (its coordinate set to the nominal 0,
largest first, as Hypothesis deletes what it can), then each remaining deviation is
bisected toward 0. A step is accepted only when the *same* failure persists (same monitor,
at nearly the same place): otherwise shrinking slides to an unrelated bug. The seed stays
fixed, so the nuisance randomness is the same in every trial.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from scenarios.episode import EpisodeResult, Signature, run_episode, runner_for

WHERE_TOLERANCE = {"car": 2.0, "factory": 2.0}
"""How far (m of track for the car, s of time for the factory) a failure may move and still be the same one."""


@dataclasses.dataclass(frozen=True)
class ShrinkResult:
    """A failure and its simplest version."""

    original: tuple[float, ...]
    """The failing sample vector given."""
    shrunk: tuple[float, ...]
    """The simplest sample vector found that fails the same way."""
    seed: int
    signature: Signature
    """The failure both share."""
    robustness: float
    """Robustness of the shrunk case."""
    needed: dict[str, dict[str, float]]
    """Deviations that matter: coordinate -> z, physical value and nominal value."""
    dropped: tuple[str, ...]
    """Deviations that were not needed for the failure."""
    episodes: int
    """Episodes run while shrinking."""
    loglik_before: float
    loglik_after: float


def shrink(text: str, z: Any, seed: int, bisect_steps: int = 6, where_tolerance: float | None = None) -> ShrinkResult:
    """Shrink the failing case (scenario text, z, seed); raises ValueError when it does not fail."""
    runner = runner_for(text)
    space = runner.space
    z = space.check(z)
    first, _ = run_episode(text, z, seed)
    if not first.failed or first.signature is None:
        raise ValueError(f"the case does not fail (robustness {first.robustness:.3g}, valid={first.valid}); nothing to shrink")
    tol = WHERE_TOLERANCE[runner.scenario.world.kind] if where_tolerance is None else where_tolerance
    signature = first.signature
    episodes = 1
    best, best_result = z.copy(), first

    def same(candidate: np.ndarray) -> EpisodeResult | None:
        nonlocal episodes
        episodes += 1
        result, _ = run_episode(text, candidate, seed)
        return result if result.failed and signature.same_as(result.signature, tol) else None

    dropped = []
    for i in np.argsort(-np.abs(best)):
        if best[i] == 0.0:
            continue
        trial = best.copy()
        trial[i] = 0.0
        result = same(trial)
        if result is not None:
            best, best_result = trial, result
            dropped.append(space.dims[i].name)
    for i in np.flatnonzero(best):
        low, high = 0.0, 1.0  # fraction of the current deviation: high still fails
        full = best[i]
        for _ in range(bisect_steps):
            mid = (low + high) / 2
            trial = best.copy()
            trial[i] = full * mid
            result = same(trial)
            if result is not None:
                high, best_result = mid, result
            else:
                low = mid
        best[i] = full * high
    deviations = space.deviations(best)
    needed = {name: dev for name, dev in deviations.items() if dev["z"] != 0.0}
    return ShrinkResult(tuple(map(float, z)), tuple(map(float, best)), int(seed), best_result.signature or signature,
                        best_result.robustness, needed, tuple(dropped), episodes, first.loglik, best_result.loglik)
