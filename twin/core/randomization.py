"""Declarative domain randomization, shared by every twin.

A `Term` names a config field by dotted path ('vehicle.mu'), a distribution, and when it
is drawn: once per episode ('reset') or again every `interval_s` of simulated time
('interval'), as Isaac Lab's event terms do. A `Randomizer` validates its terms against
the world's nominal config when it is built (unknown field, range outside the field's
declared bounds -> ConfigError naming it), draws from the env's seeded generator, and
returns both the randomized config and the draws, so an episode can be reported and
replayed exactly. The nominal config is never modified: each episode starts from it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from twin.core.config import ConfigError, get_path, path_bounds, replace_path


@dataclasses.dataclass(frozen=True)
class Uniform:
    """Uniform on [low, high], drawn independently for each element of a tuple field."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ConfigError(f"Uniform(low={self.low}, high={self.high}): need finite low <= high")

    def support(self) -> tuple[float, float]:
        return self.low, self.high

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size)

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """The value at quantile u in [0, 1] (inverse CDF): how scenario samplers map their sample vectors."""
        return self.low + (self.high - self.low) * np.asarray(u, float)


@dataclasses.dataclass(frozen=True)
class Normal:
    """Normal(mean, std) truncated to [low, high] by clipping, so draws stay in range."""

    mean: float
    std: float
    low: float
    high: float

    def __post_init__(self) -> None:
        if self.std < 0 or self.low > self.high or not (self.low <= self.mean <= self.high):
            raise ConfigError(
                f"Normal(mean={self.mean}, std={self.std}, low={self.low}, high={self.high}): "
                "need std >= 0 and low <= mean <= high"
            )

    def support(self) -> tuple[float, float]:
        return self.low, self.high

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.clip(rng.normal(self.mean, self.std, size), self.low, self.high)

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """The value at quantile u (the clipped normal's inverse CDF: clipping keeps quantiles in order)."""
        from scipy.stats import norm

        return np.clip(self.mean + self.std * norm.ppf(np.asarray(u, float)), self.low, self.high)


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a few values, with equal probability."""

    options: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.options:
            raise ConfigError("Choice needs at least one option")

    def support(self) -> tuple[float, float]:
        return min(self.options), max(self.options)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.asarray(self.options, dtype=float)[rng.integers(0, len(self.options), size)]

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """The option whose equal-probability slice of [0, 1] holds u."""
        k = np.minimum((np.asarray(u, float) * len(self.options)).astype(int), len(self.options) - 1)
        return np.asarray(self.options, dtype=float)[k]


Distribution = Uniform | Normal | Choice


@dataclasses.dataclass(frozen=True)
class Term:
    """One randomized field."""

    field: str
    """Dotted path of the config field, e.g. 'vehicle.mu' or 'appearance.wall_rgb'."""
    dist: Distribution
    """Where its values come from; a tuple field gets one independent draw per element."""
    when: Literal["reset", "interval"] = "reset"
    """'reset': drawn once per episode; 'interval': drawn again every `interval_s`."""
    interval_s: float = 0.0
    """Simulated seconds between draws of an 'interval' term."""

    def __post_init__(self) -> None:
        if self.when not in ("reset", "interval"):
            raise ConfigError(f"Term {self.field!r}: when={self.when!r} must be 'reset' or 'interval'")
        if self.when == "interval" and not self.interval_s > 0:
            raise ConfigError(f"Term {self.field!r}: an 'interval' term needs interval_s > 0")


Draws = dict[str, Any]


class Randomizer:
    """Draws and applies a validated set of terms to a nominal config."""

    def __init__(self, nominal: Any, terms: Sequence[Term]) -> None:
        self.nominal = nominal
        self.terms = tuple(terms)
        seen: set[str] = set()
        for term in self.terms:
            if term.field in seen:
                raise ConfigError(f"field {term.field!r} is randomized twice; keep one term")
            seen.add(term.field)
            get_path(nominal, term.field)  # unknown field -> ConfigError naming it
            bounds = path_bounds(nominal, term.field)
            if bounds is None:
                raise ConfigError(f"field {term.field!r} declares no bounds and cannot be randomized")
            low, high = term.dist.support()
            if low < bounds[0] or high > bounds[1]:
                raise ConfigError(
                    f"randomization range [{low}, {high}] for {term.field!r} leaves the field's "
                    f"valid range [{bounds[0]}, {bounds[1]}]; narrow the range"
                )

    def _draw(self, rng: np.random.Generator, terms: Sequence[Term]) -> Draws:
        draws: Draws = {}
        for term in terms:
            current = get_path(self.nominal, term.field)
            if isinstance(current, tuple):
                draws[term.field] = tuple(float(v) for v in term.dist.sample(rng, len(current)))
            else:
                draws[term.field] = float(term.dist.sample(rng, 1)[0])
        return draws

    def draw_reset(self, rng: np.random.Generator) -> Draws:
        """Draws of every term, for the start of an episode (interval terms get a first value)."""
        return self._draw(rng, self.terms)

    def due(self, t_prev: float, t_now: float) -> list[Term]:
        """Interval terms whose period boundary falls in (t_prev, t_now]."""
        return [
            term
            for term in self.terms
            if term.when == "interval" and math.floor(t_now / term.interval_s) > math.floor(t_prev / term.interval_s)
        ]

    def draw_interval(self, rng: np.random.Generator, t_prev: float, t_now: float) -> Draws:
        """Fresh draws of the interval terms that are due between two times (often none)."""
        return self._draw(rng, self.due(t_prev, t_now))

    def apply(self, config: Any, draws: Draws) -> Any:
        """`config` with the drawn values set; validates them through the config's own checks."""
        for path, value in draws.items():
            config = replace_path(config, path, value)
        return config


def streams(rng: np.random.Generator, *names: str) -> dict[str, np.random.Generator]:
    """One generator per named source of randomness, seeded from the episode's generator.

    Why: when the world's redraws, the parts fed in and every sensor's noise share one
    generator, how often a policy reads a sensor changes what the world does next, so two
    policies on the same seed meet different episodes. With a stream each, the n-th part
    or friction change is the same whatever a policy reads. Draws a fixed number of values
    from `rng`, so what `rng` draws afterwards is fixed too.
    """
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"streams: need distinct stream names, got {names}")
    seeds = rng.integers(0, 2**63 - 1, size=len(names))
    return {name: np.random.default_rng(int(seed)) for name, seed in zip(names, seeds)}
