"""The sample vector of a scenario: every searched quantity as one standard-normal coordinate.

Each random parameter (a twin field, each element of a tuple field, each random event
parameter) and each piece of a disturbance channel is one coordinate z_i of a vector z
whose nominal distribution is N(0, I). A coordinate becomes a physical value through the
distribution's inverse CDF at Phi(z_i) (the twin's own distributions, `ppf`), and a
disturbance piece is `std * z_i`. So one space serves every sampler (random, quasi-random
through Phi^-1, cross-entropy, optuna, most-likely-failure), every estimator (the
likelihood ratio of a Gaussian proposal is exact in z) and shrinking (the nominal scenario
is z = 0, the median of every parameter). The log-likelihood of a sample is measured in
z: how far into the nominal model's tails it lies.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy.stats import norm

from scenarios.spec import Scenario, Value, is_random
from scenarios.worlds import WORLDS
from twin.core.config import get_path

LOG_2PI = math.log(2 * math.pi)


@dataclasses.dataclass(frozen=True)
class Dim:
    """One coordinate of the sample vector."""

    name: str
    """'param:vehicle.mu', 'param:friction_patches[3]', 'event:spill.scale' or 'disturbance:steer[2]'."""
    dist: Any
    """The nominal distribution (None for a disturbance piece: value = std * z)."""
    scale: float = 1.0
    """A disturbance piece's standard deviation."""


@dataclasses.dataclass(frozen=True)
class Sampled:
    """The physical values one sample vector stands for."""

    draws: dict[str, Any]
    """Twin parameter path -> value (a tuple for tuple fields), ready for the twin's `Randomizer.apply`."""
    events: dict[str, dict[str, float]]
    """Event name -> action parameter -> value."""
    disturbances: dict[str, np.ndarray]
    """Channel -> piecewise-constant values, one per segment."""


def loglik(z: np.ndarray) -> np.ndarray | float:
    """log N(z; 0, I), over the last axis."""
    z = np.asarray(z, float)
    out = -0.5 * (np.sum(z * z, axis=-1) + z.shape[-1] * LOG_2PI)
    return float(out) if np.ndim(out) == 0 else out


class SampleSpace:
    """The coordinates of one scenario and the map from z to physical values."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        root = WORLDS[scenario.world.kind].params_root
        dims: list[Dim] = []
        for path, value in scenario.nominal:
            if not is_random(value):
                continue
            current = get_path(root, path)
            if isinstance(current, tuple):
                dims += [Dim(f"param:{path}[{i}]", value) for i in range(len(current))]
            else:
                dims.append(Dim(f"param:{path}", value))
        for event in scenario.events:
            dims += [Dim(f"event:{event.name}.{key}", value) for key, value in event.params if is_random(value)]
        for dist in scenario.disturbances:
            if dist.std > 0:
                dims += [Dim(f"disturbance:{dist.channel}[{k}]", None, dist.std) for k in range(dist.segments)]
        self.dims = tuple(dims)
        self._root = root

    @property
    def d(self) -> int:
        return len(self.dims)

    def names(self) -> list[str]:
        return [dim.name for dim in self.dims]

    def check(self, z: Any) -> np.ndarray:
        """z as a float vector of the right length, or a ValueError saying what is wrong."""
        z = np.asarray(z, float).reshape(-1)
        if z.shape != (self.d,):
            raise ValueError(f"scenario {self.scenario.name!r} has {self.d} sample dimensions, got a vector of {z.size}")
        if not np.all(np.isfinite(z)):
            raise ValueError("a sample vector must be finite")
        return z

    def values(self, z: Any) -> Sampled:
        """The physical values of sample vector z."""
        z = self.check(z)
        by_name = dict(zip(self.names(), z))
        physical = {d.name: (float(d.dist.ppf(norm.cdf(by_name[d.name]))) if d.dist is not None
                             else d.scale * float(by_name[d.name])) for d in self.dims}

        def value(name: str, spec: Value) -> float:
            return physical[name] if is_random(spec) else float(spec)

        draws: dict[str, Any] = {}
        for path, spec in self.scenario.nominal:
            current = get_path(self._root, path)
            if isinstance(current, tuple):
                draws[path] = tuple(value(f"param:{path}[{i}]", spec) for i in range(len(current)))
            else:
                draws[path] = value(f"param:{path}", spec)
        events = {e.name: {key: value(f"event:{e.name}.{key}", spec) for key, spec in e.params}
                  for e in self.scenario.events}
        disturbances = {d.channel: np.array([physical.get(f"disturbance:{d.channel}[{k}]", 0.0)
                                             for k in range(d.segments)]) for d in self.scenario.disturbances}
        return Sampled(draws, events, disturbances)

    def deviations(self, z: Any) -> dict[str, float]:
        """Each coordinate's physical value next to its nominal (z = 0) value, for reports."""
        here, nominal = self.values(z), self.values(np.zeros(self.d))
        out = {}
        for dim, zi in zip(self.dims, self.check(z)):
            out[dim.name] = {"z": float(zi), "value": _lookup(here, dim.name), "nominal": _lookup(nominal, dim.name)}
        return out


def _lookup(s: Sampled, name: str) -> float:
    kind, _, rest = name.partition(":")
    if kind == "param":
        path, _, idx = rest.partition("[")
        value = s.draws[path]
        return float(value[int(idx[:-1])]) if idx else float(value)
    if kind == "event":
        event, _, key = rest.partition(".")
        return float(s.events[event][key])
    channel, _, idx = rest.partition("[")
    return float(s.disturbances[channel][int(idx[:-1])])
