"""What a rung measures: the table of metrics, a rung's samples, and one metric over a window.

Every rung produces a `RungData` on its own clock (seconds since the first decision was
applied on the robot): the control periods the car drove (true state, shield verdict,
constraint costs), the candidate's decisions (latency, parse status, flags; in shadow also
its disagreement with the incumbent), the robot's events (stops, link faults, refused
decisions) and, on the sim rung, a scenario campaign's results. `measure` computes one
metric over the last `window_s` seconds of that data; a metric with nothing to measure in
the window returns no value and says why (a gate then fails: missing never passes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from agents.control.mpc_params import PARAM_TABLE, clamp_dict
from agents.tasks.car.instructions import parse_instruction
from agents.tasks.car.metrics import instruction_error

RUNGS: tuple[str, ...] = ("sim", "shadow", "guarded", "canary", "full")
"""The ladder, in the only order a plan may climb it."""
SIM, SHADOW, GUARDED, CANARY, FULL = RUNGS
DRIVEN = (SIM, GUARDED, CANARY, FULL)
"""Rungs where the candidate's decisions drive the car (in sim: the twin without a reality gap)."""
APPLIED = (GUARDED, CANARY, FULL)
"""Rungs where the candidate drives the robot."""
COST_NAMES = ("collision", "speed", "lateral_accel")
"""The car's constraints whose costs the emulator measures each period (safety.car.guard)."""
TIME_EPS = 1e-9
"""Times closer than this are the same time (rung clocks are sums of control periods)."""


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """One row of the metric table."""

    name: str
    """What a plan's gate or band calls it."""
    rungs: tuple[str, ...]
    """Rungs that can measure it (a gate elsewhere is a plan error)."""
    better: str
    """'lower' or 'higher': the comparison a gate uses when the plan names none."""
    unit: str
    """Its unit, for reports."""
    meaning: str
    """What it measures, in a phrase."""


METRIC_TABLE: tuple[MetricSpec, ...] = (
    MetricSpec("task_error", DRIVEN, "lower", "task unit",
               "the instruction's error (agents.tasks.car.metrics): speed RMSE, lateral RMSE or acceleration RMS"),
    MetricSpec("interventions_per_min", DRIVEN, "lower", "1/min", "shield interventions (modified or backup) per minute"),
    MetricSpec("constraint_cost", DRIVEN, "lower", "share", "share of periods violating any constraint of the envelope"),
    *(MetricSpec(f"cost_{c}", DRIVEN, "lower", "share", f"share of periods violating the {c} constraint")
      for c in COST_NAMES),
    MetricSpec("stops", DRIVEN, "lower", "count", "safe stops (silent link) and e-stops"),
    MetricSpec("link_faults", DRIVEN, "lower", "count",
               "stale, reordered or unknown decisions refused, malformed messages, lost sessions"),
    MetricSpec("invalid_decisions", DRIVEN, "lower", "count",
               "decisions the robot refused as invalid, and observations the policy side could not answer"),
    MetricSpec("latency_p95_s", (*DRIVEN, SHADOW), "lower", "s", "95th percentile of the candidate's decision time"),
    MetricSpec("parse_failure_rate", (*DRIVEN, SHADOW), "lower", "share",
               "share of the candidate's answers that failed, fell back or needed repair"),
    MetricSpec("param_distance", (SHADOW,), "lower", "0..1",
               "mean distance of the candidate's parameters from the incumbent's (RMS over the 11, each by its range)"),
    MetricSpec("ade", (SHADOW,), "lower", "m",
               "mean over decisions of the twin-predicted average displacement between candidate and incumbent"),
    MetricSpec("fde", (SHADOW,), "lower", "m",
               "mean over decisions of the twin-predicted final displacement between candidate and incumbent"),
    MetricSpec("would_be_interventions_per_min", (SHADOW,), "lower", "1/min",
               "shield interventions per minute of the twin-predicted drive under the candidate's parameters"),
    MetricSpec("flagged_rate", APPLIED, "lower", "share", "share of the candidate's decisions flagged for confirmation"),
    MetricSpec("denied_rate", APPLIED, "lower", "share", "share of the candidate's decisions an operator denied"),
    MetricSpec("scenario_failure_rate", (SIM,), "lower", "share",
               "failure probability from a scenario campaign's results (run: failed / valid; estimate: p)"),
    MetricSpec("scenario_robustness_min", (SIM,), "higher", "monitor unit",
               "the lowest monitor robustness over the campaign's valid episodes"),
)
METRICS: dict[str, MetricSpec] = {m.name: m for m in METRIC_TABLE}
DRIVE_METRICS = tuple(m.name for m in METRIC_TABLE if m.rungs == DRIVEN)
"""Metrics of the car's drive: measurable wherever the car drives, and comparable between sim and real."""
DECISION_COLUMNS = ("t", "latency_s", "parse_ok", "flagged", "denied", "param_distance", "ade", "fde", "would_be",
                    "predicted_s")
"""What is kept of each candidate decision (NaN where a column does not apply)."""


@dataclasses.dataclass(frozen=True)
class RungData:
    """Everything one rung measured, on the rung's clock (s since the first decision was applied)."""

    rung: str
    """sim, shadow, guarded, canary or full."""
    instruction: str
    """The instruction the car was given (the task error is judged against it)."""
    period_s: float
    """The robot's control period."""
    periods: dict[str, np.ndarray]
    """Per control period driven (before any limit held the car): t (end of the period), v, d, ax, ay,
    intervened, cost_<name>."""
    decisions: dict[str, np.ndarray]
    """Per candidate decision: DECISION_COLUMNS."""
    events: list[tuple[float, str]]
    """(t, 'stop' | 'link_fault' | 'invalid_decision')."""
    evidence: dict[str, float] = dataclasses.field(default_factory=dict)
    """Sim rung: values from a scenario campaign's results (and 'scenario_episodes')."""

    @property
    def span_s(self) -> float:
        """Seconds of data the rung produced (driving periods; in shadow, the incumbent's)."""
        return float(len(self.periods.get("t", ()))) * self.period_s

    def to_json(self) -> dict[str, Any]:
        return {"rung": self.rung, "instruction": self.instruction, "period_s": self.period_s,
                "periods": {k: _list(v) for k, v in self.periods.items()},
                "decisions": {k: _list(v) for k, v in self.decisions.items()},
                "events": [list(e) for e in self.events], "evidence": dict(self.evidence)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RungData:
        return cls(data["rung"], data["instruction"], float(data["period_s"]),
                   {k: np.asarray(v, float) for k, v in data["periods"].items()},
                   {k: np.asarray(v, float) for k, v in data["decisions"].items()},
                   [(float(t), str(kind)) for t, kind in data["events"]], dict(data.get("evidence", {})))


def _list(values: np.ndarray) -> list[float | None]:
    """JSON has no NaN: missing values travel as null."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, float)]


def empty_decisions() -> dict[str, np.ndarray]:
    return {name: np.zeros(0) for name in DECISION_COLUMNS}


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One metric over one window."""

    value: float | None
    """None when nothing could be measured (`why` says what was missing)."""
    samples: int
    """Periods, decisions or episodes the value rests on."""
    why: str = ""
    """For a missing value: what was missing."""


def param_distance(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """Distance of two parameter sets in [0, 1]: the RMS over the 11 parameters of each difference
    divided by that parameter's range (both sets made valid first, as the robot would see them)."""
    pa, _ = clamp_dict(a)
    pb, _ = clamp_dict(b)
    x, y = np.array(pa.as_array()), np.array(pb.as_array())
    ranges = np.array([p.high - p.low for p in PARAM_TABLE])
    return float(np.sqrt(np.mean(((x - y) / ranges) ** 2)))


def _window(t: np.ndarray, window_s: float, end: float) -> np.ndarray:
    """Samples with end - window_s < t <= end (the whole rung up to `end` when window_s is 0); the sample
    at `end` is always in, however short the window (rounding must not empty it)."""
    start = end - window_s if window_s > 0 else -math.inf
    return (t <= end + TIME_EPS) & ((t > start) | (t >= end - TIME_EPS))


def _finite_mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.mean(x)) if len(x) else None


def measure(name: str, data: RungData, window_s: float = 0.0, end: float | None = None) -> Measurement:
    """`name` over the last `window_s` seconds up to `end` (default: the rung's end); 0: the whole rung."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    end = data.span_s if end is None else end
    if name.startswith("scenario_"):
        if name not in data.evidence:
            return Measurement(None, 0, "no scenario campaign results were given as evidence")
        return Measurement(data.evidence[name], int(data.evidence.get("scenario_episodes", 0)))
    if name in DRIVE_METRICS:
        return _drive_metric(name, data, window_s, end)
    return _decision_metric(name, data, window_s, end)


def _drive_metric(name: str, data: RungData, window_s: float, end: float) -> Measurement:
    p = data.periods
    sel = _window(p.get("t", np.zeros(0)), window_s, end)
    n = int(sel.sum())
    if n == 0:
        return Measurement(None, 0, "the car drove no control period in the window (no decision applied, or "
                                    "a limit held it)")
    if name == "task_error":
        trace = {k: p[k][sel] for k in ("v", "d", "ax", "ay")}
        return Measurement(instruction_error(parse_instruction(data.instruction), trace), n)  # type: ignore[arg-type]
    if name == "interventions_per_min":
        return Measurement(float(p["intervened"][sel].sum()) / (n * data.period_s / 60.0), n)
    if name == "constraint_cost":
        any_cost = np.zeros(n, bool)
        for c in COST_NAMES:
            any_cost |= p[f"cost_{c}"][sel] > 0
        return Measurement(float(any_cost.mean()), n)
    if name.startswith("cost_"):
        return Measurement(float(np.mean(p[name][sel] > 0)), n)
    kind = {"stops": "stop", "link_faults": "link_fault", "invalid_decisions": "invalid_decision"}[name]
    times = np.array([t for t, k in data.events if k == kind])
    return Measurement(float(_window(times, window_s, end).sum()), n)


def _decision_metric(name: str, data: RungData, window_s: float, end: float) -> Measurement:
    d = data.decisions
    sel = _window(d.get("t", np.zeros(0)), window_s, end)
    n = int(sel.sum())
    if n == 0:
        return Measurement(None, 0, "the candidate made no decision in the window")
    if name == "parse_failure_rate":
        return Measurement(float(np.mean(d["parse_ok"][sel] < 0.5)), n)
    if name in ("flagged_rate", "denied_rate"):
        column = d["flagged" if name == "flagged_rate" else "denied"][sel]
        return Measurement(float(np.mean(column > 0.5)), n)
    if name == "latency_p95_s":
        lat = d["latency_s"][sel]
        lat = lat[np.isfinite(lat)]
        return Measurement(float(np.percentile(lat, 95)), len(lat)) if len(lat) else \
            Measurement(None, 0, "no decision time was measured")
    if name == "would_be_interventions_per_min":
        would, span = d["would_be"][sel], d["predicted_s"][sel]
        ok = np.isfinite(would) & np.isfinite(span) & (span > 0)
        if not ok.any():
            return Measurement(None, 0, "no twin prediction of the candidate's drive succeeded")
        return Measurement(float(would[ok].sum() / (span[ok].sum() / 60.0)), int(ok.sum()))
    column = d[name][sel]
    value = _finite_mean(column)
    if value is None:
        return Measurement(None, 0, f"no candidate decision in the window could be compared ({name}): every one "
                                    "failed or its twin prediction did")
    return Measurement(value, int(np.isfinite(column).sum()))


def series(name: str, data: RungData, window_s: float, step_s: float = 0.25) -> tuple[list[float], list[float | None]]:
    """The metric as it would have been judged at each time of the rung (for plots over time)."""
    if name.startswith("scenario_") or data.span_s <= 0:
        return [], []
    times = list(np.arange(step_s, data.span_s + 1e-9, step_s))
    values = [measure(name, data, window_s, end=float(t)).value for t in times]
    return [float(t) for t in times], values
