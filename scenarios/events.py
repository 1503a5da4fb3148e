"""Events and disturbances while an episode runs, the same for every world.

`EventClock` evaluates each event's trigger on the world's signals every step and fires
its action once, honouring the edge and delay (OpenSCENARIO's condition semantics; CARLA's
ScenarioRunner ignores edges, a top complaint). `Disturbances` gives each channel's value
at a time: the sample vector's piecewise-constant part plus seeded white noise, whose
log-likelihood it sums so an episode's likelihood under the nominal model is known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from scenarios.spec import DisturbanceSpec, EventSpec
from scenarios.stl import parse

LOG_2PI = math.log(2 * math.pi)


class EventClock:
    """Fires events when their triggers say so."""

    def __init__(self, events: tuple[EventSpec, ...], params: Mapping[str, Mapping[str, float]]) -> None:
        self.events = events
        self.params = params
        self._formulas = {e.name: parse(e.trigger.when) for e in events}
        self._prev: dict[str, bool] = {e.name: False for e in events}
        self._armed = {e.name for e in events}
        self._pending: list[tuple[float, EventSpec]] = []
        self.fired: list[tuple[float, str]] = []
        """(time, event name) of every action taken, in order."""

    def due(self, t: float, signals: Mapping[str, float]) -> list[tuple[EventSpec, dict[str, float]]]:
        """The events whose action must happen now, given this step's signals."""
        if self._armed:  # once every event has fired, nothing is left to evaluate each step
            arrays = {k: np.array([float(v)]) for k, v in signals.items()}
            time = np.array([t])
        for event in self.events:
            if event.name not in self._armed:
                continue
            now = self._formulas[event.name].holds(arrays, time)  # 't >= 3' fires at 3.00 s, 't > 3' one step later
            before = self._prev[event.name]
            self._prev[event.name] = now
            edge = event.trigger.edge
            if (edge == "rising" and now and not before) or (edge == "falling" and before and not now) or \
                    (edge == "none" and now):
                self._armed.discard(event.name)
                self._pending.append((t + event.trigger.delay_s, event))
        out = []
        for when, event in list(self._pending):
            if when <= t + 1e-9:
                self._pending.remove((when, event))
                self.fired.append((t, event.name))
                out.append((event, dict(self.params.get(event.name, {}))))
        return out


class Disturbances:
    """Each channel's disturbance over an episode."""

    def __init__(self, specs: tuple[DisturbanceSpec, ...], pieces: Mapping[str, np.ndarray], duration_s: float,
                 rng: np.random.Generator) -> None:
        self.specs = specs
        self.pieces = pieces
        self.duration_s = duration_s
        self.rng = rng
        self.loglik = 0.0
        """Log-likelihood of the white noise drawn so far (the pieces' is the sample vector's)."""

    def at(self, t: float) -> dict[str, float]:
        """Every channel's value at time t; call once per step (white noise is drawn here, in a fixed order)."""
        out: dict[str, float] = {}
        for spec in self.specs:
            k = min(int(t / self.duration_s * spec.segments), spec.segments - 1)
            value = float(self.pieces[spec.channel][k]) if spec.std > 0 else 0.0
            if spec.white_std > 0:
                e = float(self.rng.standard_normal())
                self.loglik += -0.5 * (e * e + LOG_2PI)
                value += spec.white_std * e
            out[spec.channel] = out.get(spec.channel, 0.0) + value
        return out
