"""Error bars for evaluations: a mean with its bootstrap interval, and paired gains between policies.

Every policy in an evaluation meets the same episodes (same seeds, same worlds), so a gain of one
policy over another is measured per episode and its interval comes from resampling those paired
differences: far tighter than comparing two independent intervals, and honest about which episodes
moved. Intervals are scipy.stats.bootstrap's BCa (bias-corrected and accelerated), 10,000 resamples,
over episodes (car: decisions per episode; factory: parts); a sample whose values are all equal has
no spread to resample and gets the point as its interval.

Car adaptability is the mean of the per-category means; the evaluation draws the same number of
episodes per category, so it equals the mean over episodes, which is what is resampled here
(`mean_ci` refuses rows whose categories are unequal in number, rather than weigh them silently).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 10_000


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean over episodes and its bootstrap confidence interval."""

    mean: float
    low: float
    """Lower end of the interval."""
    high: float
    """Upper end of the interval."""
    n: int
    """Episodes (or parts) it rests on."""
    confidence: float = CONFIDENCE
    method: str = f"BCa bootstrap, {RESAMPLES:,} resamples"

    def __post_init__(self) -> None:
        if self.n < 1 or not self.low <= self.mean <= self.high:
            raise ValueError(f"Interval: need n >= 1 and low <= mean <= high (got n={self.n}, "
                             f"{self.low!r} <= {self.mean!r} <= {self.high!r})")

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
            seed: int = 0) -> Interval:
    """The mean of `values` with its BCa bootstrap interval (seeded: the same values give the same interval)."""
    data = np.asarray(values, dtype=float)
    if data.ndim != 1 or len(data) == 0 or not np.all(np.isfinite(data)):
        raise ValueError(f"mean_ci needs a non-empty 1-D sequence of finite numbers (got shape {data.shape})")
    mean = float(data.mean())
    if len(data) < 2 or np.ptp(data) == 0:
        return Interval(mean, mean, mean, len(data), confidence)
    result = stats.bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=resamples, method="BCa",
                             random_state=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):  # BCa degenerates on near-constant data: percentile then
        result = stats.bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=resamples,
                                 method="percentile", random_state=np.random.default_rng(seed))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return Interval(mean, min(low, mean), max(high, mean), len(data), confidence)


def _balanced(rows: Sequence[Mapping[str, Any]]) -> None:
    counts = Counter(r["category"] for r in rows if "category" in r)
    if len(set(counts.values())) > 1:
        raise ValueError(f"rows have unequal episodes per category ({dict(counts)}): the mean over episodes "
                         "would not be the mean of the category means; evaluate the same number per category")


def policy_ci(rows: Sequence[Mapping[str, Any]], policy: str, key: str = "improvement",
              category: str | None = None) -> Interval:
    """A policy's mean `key` over its episodes (one category's, if given) with its interval."""
    mine = [r for r in rows if r["policy"] == policy and (category is None or r.get("category") == category)]
    if not mine:
        raise ValueError(f"no rows of policy {policy!r}" + (f" in category {category!r}" if category else ""))
    _balanced(mine)
    return mean_ci([float(r[key]) for r in mine])


def paired_gain(rows: Sequence[Mapping[str, Any]], policy: str, baseline: str, key: str = "improvement",
                category: str | None = None) -> Interval:
    """policy's `key` minus baseline's on the same episodes (matched by seed, and part for the factory), with
    the interval of the mean difference. Raises if the two did not meet the same episodes."""
    def table(name: str) -> dict[tuple[Any, ...], float]:
        return {(r["seed"], r.get("part")): float(r[key]) for r in rows
                if r["policy"] == name and (category is None or r.get("category") == category)}
    mine, theirs = table(policy), table(baseline)
    if not mine or mine.keys() != theirs.keys():
        raise ValueError(f"paired_gain: {policy!r} and {baseline!r} must be evaluated on the same episodes "
                         f"({len(mine)} and {len(theirs)} found, {len(mine.keys() & theirs.keys())} shared)")
    _balanced([r for r in rows if r["policy"] == policy and (category is None or r.get("category") == category)])
    return mean_ci([mine[k] - theirs[k] for k in sorted(mine, key=str)])
