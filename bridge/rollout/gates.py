"""Judging a rung: each gate passes, fails or is inconclusive, and the rung is promoted, paused or rolled back.

As in Argo Rollouts and Flagger: a gate passes when its metric meets the threshold over
the window, fails when it does not, and is inconclusive when the window holds too little
data to say (the rung was shorter than the window, or had fewer samples than asked). A
metric that could not be measured at all fails its gate: missing data never passes. The
sim-to-real band is judged the same way: a metric further than its width from the sim
rung's value fails, naming the metric that left the band. Any failure rolls the candidate
back; otherwise any inconclusive gate pauses the ladder for an operator (or, where the plan
says so, counts as a failure); otherwise the rung is promoted. A rung whose robot record
cannot be trusted (the robot refused the session, or its audit log could not be witnessed)
is rolled back whatever its gates say (`distrust`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from bridge.rollout.metrics import RungData, measure
from bridge.rollout.plan import Gate, Rung

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
PROMOTE, PAUSE, ROLLBACK = "promote", "pause", "rollback"
WINDOW_SLACK_S = 1e-6


@dataclasses.dataclass(frozen=True)
class GateResult:
    """One gate (or band check) judged."""

    metric: str
    """The metric judged."""
    comparison: str
    """'<=', '<', '>=', '>' for a gate; 'band' for a sim-to-real check."""
    threshold: float
    """The gate's threshold; for a band, its width."""
    window_s: float
    """The window judged (0: the whole rung)."""
    value: float | None
    """What was measured (None: nothing could be)."""
    samples: int
    """Samples the value rests on."""
    span_s: float
    """Seconds of data the rung produced."""
    verdict: str
    """pass, fail or inconclusive."""
    reason: str
    """Why, in words (the value against the threshold, or what was missing)."""
    on_inconclusive: str = "pause"
    """What an inconclusive verdict does: pause or fail."""
    reference: float | None = None
    """For a band: the sim value; for a gate relative to the incumbent: the incumbent's value."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def evaluate_gate(gate: Gate, data: RungData, incumbent: Mapping[str, float | None] | None = None) -> GateResult:
    """Pass, fail or inconclusive, with the measured value and why; `incumbent`: the incumbent's drive metrics
    (from the shadow rung), for gates relative to it."""
    m = measure(gate.metric, data, gate.window_s)
    span = data.span_s
    value = m.value if m.value is not None and math.isfinite(m.value) else None
    ref = (incumbent or {}).get(gate.metric) if gate.relative_to else None

    def result(verdict: str, reason: str) -> GateResult:
        return GateResult(gate.metric, gate.comparison, gate.threshold, gate.window_s, value, m.samples, span,
                          verdict, reason, gate.on_inconclusive, ref)

    if value is None:
        return result(FAIL, f"{gate.metric} could not be measured ({m.why or 'not a finite number'}); a missing "
                            "metric fails its gate")
    if gate.relative_to and (ref is None or not math.isfinite(ref)):
        return result(FAIL, f"{gate.metric} has no incumbent value to compare with (the shadow rung did not "
                             "measure it); a missing metric fails its gate")
    if not gate.metric.startswith("scenario_") and gate.window_s > span + WINDOW_SLACK_S:
        return result(INCONCLUSIVE, f"the rung produced {span:.2f} s of data; the {gate.window_s:g} s window is not "
                                    "filled")
    if m.samples < gate.min_samples:
        return result(INCONCLUSIVE, f"{m.samples} samples in the window, {gate.min_samples} needed")
    if gate.relative_to:
        held = gate.holds(value - ref)
        return result(PASS if held else FAIL,
                      f"{gate.metric} = {value:.4g}, the incumbent's {ref:.4g}: the difference {value - ref:+.4g} "
                      f"{'meets' if held else 'misses'} {gate.comparison} {gate.threshold:g}")
    held = gate.holds(value)
    return result(PASS if held else FAIL,
                  f"{gate.metric} = {value:.4g} {'meets' if held else 'misses'} {gate.comparison} {gate.threshold:g}")


def evaluate_band(band: tuple[tuple[str, float], ...], data: RungData,
                  sim: Mapping[str, float | None]) -> list[GateResult]:
    """Each band metric on this rung (the whole rung) against its sim value, within +-width."""
    return [_band_check(metric, width, data, sim.get(metric)) for metric, width in band]


def _band_check(metric: str, width: float, data: RungData, ref: float | None) -> GateResult:
    m = measure(metric, data)
    if ref is None or not math.isfinite(ref):
        verdict, reason = FAIL, f"{metric} has no sim value to compare with (the sim rung did not measure it)"
    elif m.value is None or not math.isfinite(m.value):
        verdict, reason = FAIL, f"{metric} could not be measured on {data.rung} ({m.why}); a missing metric fails the band"
    elif abs(m.value - ref) <= width:
        verdict, reason = PASS, f"{metric} = {m.value:.4g} lies within {ref:.4g} +- {width:g} (sim)"
    else:
        verdict, reason = FAIL, (f"{metric} left the sim-to-real band: {m.value:.4g} on {data.rung} vs {ref:.4g} "
                                 f"in sim (+- {width:g})")
    return GateResult(metric, "band", width, 0.0, m.value, m.samples, data.span_s, verdict, reason, FAIL, ref)


@dataclasses.dataclass(frozen=True)
class Judgement:
    """A rung's verdict."""

    action: str
    """promote, pause or rollback."""
    gates: tuple[GateResult, ...]
    """Each gate of the rung, judged."""
    band: tuple[GateResult, ...]
    """Each sim-to-real band check (rungs after sim where the candidate drives)."""
    reason: str
    """Which gates decided it."""


def judge(rung: Rung, data: RungData, band: tuple[tuple[str, float], ...] = (),
          sim: Mapping[str, float | None] | None = None,
          incumbent: Mapping[str, float | None] | None = None) -> Judgement:
    """All gates and the band on one rung's data; the action the ladder takes. `sim`: the sim rung's metrics
    (the band's reference); `incumbent`: the incumbent's drive metrics from the shadow rung."""
    gates = tuple(evaluate_gate(g, data, incumbent) for g in rung.gates)
    checks = tuple(evaluate_band(band, data, sim or {})) if band else ()
    failed = [g for g in (*gates, *checks) if g.verdict == FAIL
              or (g.verdict == INCONCLUSIVE and g.on_inconclusive == "fail")]
    unsure = [g for g in gates if g.verdict == INCONCLUSIVE]
    if failed:
        return Judgement(ROLLBACK, gates, checks, "; ".join(f"{g.metric}: {g.reason}" for g in failed))
    if unsure:
        return Judgement(PAUSE, gates, checks, "; ".join(f"{g.metric}: {g.reason}" for g in unsure))
    return Judgement(PROMOTE, gates, checks, f"all {len(gates) + len(checks)} checks passed on {rung.name}")


def distrust(judgement: Judgement, why: str) -> Judgement:
    """The rung's robot record cannot be trusted (`why`): a rollback whatever the gates said, since they judged
    data no one can vouch for; their verdicts stay as evidence."""
    return Judgement(ROLLBACK, judgement.gates, judgement.band,
                     f"{why} (the gates alone: {judgement.action})")
