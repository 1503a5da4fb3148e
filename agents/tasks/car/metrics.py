"""Named metrics of a drive, the "control adaptability" score, and the checks of a thought against its action.

Per category, the error a drive is judged on (RobotxR1's evaluation functions):
centerline -> RMSE of the lateral offset; velocity -> RMSE of speed to the target;
reverse -> RMSE of speed to -1 m/s; smooth -> sqrt(mean(ax^2 + ay^2)).
error improvement = (error_default - error) / error_default, clipped to [-4, 4].

The legacy score (`legacy_improvement`, RobotxR1's) is that error improvement alone. It has a
loophole: the centerline and smooth errors fall as the car slows down, so a crawl at 0.15 m/s
"follows the centre line" and standing still is the smoothest ride; a drive in reverse at
-1 m/s scores well on a smoothness instruction too. The score (`score`) therefore judges those
two categories on forward progress as well, against the default drive of the same episode:

    progress_ratio = progress / default_progress
    progress < 0                          -> failure "reverse" (the car went backwards)
    progress_ratio < MIN_PROGRESS_RATIO   -> failure "crawl"
    MIN_PROGRESS_RATIO <= ratio < 1       -> progress_penalty = -PROGRESS_WEIGHT * (1 - ratio)
    ratio >= 1                            -> no penalty (and no bonus: going faster is not asked for)

Why a floor *and* a penalty rather than one of them: a floor alone leaves a plateau on which
the slowest drive just above it wins whenever slowing lowers the error (it does for both
categories), and a trainer would find that edge; a penalty alone lets a crawl through at a
price. With both, a crawl is a failure like a crash, and between the floor and the default's
pace a faster drive with the same error always scores higher.

Why the floor is low (0.15) rather than "about the default's pace" (e.g. 0.8): the default is
a racing tune (v_max 12 m/s, 10 m/s^2 lateral), and an instruction to drive gently means
slower corners: the scripted expert's smooth tune covers 0.24-0.36 of the default's progress,
its centerline tune 0.75-0.93 (measured, 6 s drives on the train tracks and 8 s drives on the
held-out track). A floor of 0.8 would fail every smooth drive a person would call smooth. The
loophole drives sit far lower: GRPO's 0.15 m/s centerline answer covers 0.04 of the default's
progress, the SFT adapter's slowest smooth answer 0.08-0.10 (two episodes). 0.15 sits about
midway, geometrically, between those and 0.24. The penalty then carries "comparable to the default": a smooth tune at 0.3
of the default's progress pays 0.35, a centerline tune at 0.85 pays 0.075. Short drives lower the
ratio of a tune that accelerates gently (the expert's smooth tune: 0.20 in a 4 s drive), so the
floor is meant for drives of GRPO's 6 s and the evaluation's 8 s.

Velocity and reverse are unchanged: their errors already measure the speed asked for.
A crashed or unparsable attempt scores FAILURE_IMPROVEMENT and is counted, never excluded
(RobotxR1's code drops failed parses from the mean, which flatters the score). Every score
keeps its named terms (they sum to it) for per-term reward logs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from agents.control.loop import Trace
from agents.control.mpc_params import DEFAULT
from agents.tasks.car.instructions import CATEGORIES, Instruction
from agents.tasks.car.outcome import drive_outcome
from safety.audit.claims import ExecutedTrace, agreement, check_claims
from safety.audit.flags import executed_from
from twin.car.tracks import Track

FAILURE_IMPROVEMENT = -1.0
"""Score of a failed attempt (crash, unparsable, crawl, reverse): as bad as doubling the default's error."""
IMPROVEMENT_CLIP = 4.0
"""Scores are clipped to [-IMPROVEMENT_CLIP, IMPROVEMENT_CLIP]: one wild episode cannot swamp a mean."""
PROGRESS_CATEGORIES: tuple[str, ...] = ("centerline", "smooth")
"""Categories judged on forward progress too: their errors fall as the car slows, so without it a crawl wins."""
MIN_PROGRESS_RATIO = 0.15
"""Below this share of the default drive's progress the attempt is a crawl, a failure. Sensible tunes that
trade pace for the instruction stay above it (the expert's smooth tune: 0.24-0.36, its centerline tune:
0.75-0.93), the loophole drives far below (a 0.15 m/s crawl: 0.04; the SFT adapter's slowest smooth answer:
0.08-0.10); 0.15 sits about midway, geometrically, between those and 0.24 (see the module docstring)."""
PROGRESS_WEIGHT = 0.5
"""Penalty per unit of progress ratio short of the default's (above the floor): -PROGRESS_WEIGHT * (1 - ratio).
Large enough that at equal error a faster drive always wins and a drive at the floor pays 0.425; small enough
that a gentle ride at a third of the racing default's progress keeps a clearly positive score (~0.5 for the
expert's smooth tune), since slowing down is part of driving gently."""
MIN_DEFAULT_PROGRESS = 0.1
"""Default drives shorter than this (m: it crashed at once or barely moved) give no ratio to judge against."""
FAILURES: tuple[str, ...] = ("unparsable", "crash", "not finite", "reverse", "crawl")
"""Why an attempt failed, in the order they are checked (the first that applies is reported)."""
TERMS: tuple[str, ...] = ("error_improvement", "progress_penalty", "failure")
"""The named terms of a score; they sum to the score."""


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else float("nan")


def instruction_error(instruction: Instruction, trace: Trace) -> float:
    """The error the instruction is judged on (lower is better)."""
    cat = instruction.category
    if cat == "centerline":
        return _rms(trace["d"])
    if cat in ("velocity", "reverse"):
        return _rms(trace["v"] - float(instruction.target_speed))
    if cat == "smooth":
        return float(np.sqrt(np.mean(trace["ax"] ** 2 + trace["ay"] ** 2)))
    raise ValueError(f"no metric for category {cat!r}")


def drive_metrics(instruction: Instruction, trace: Trace) -> dict[str, float]:
    """All named metrics of one drive; all fixed by the episode's seed (wall-clock timings such as
    the MPC's solve time stay on the Trace, so two runs of a seed give equal metrics)."""
    return {
        "error": instruction_error(instruction, trace),
        "lateral_rmse": _rms(trace["d"]),
        "speed_mean": float(np.mean(trace["v"])),
        "lat_acc_rms": _rms(trace["ay"]),
        "accel_rms": float(np.sqrt(np.mean(trace["ax"] ** 2 + trace["ay"] ** 2))),
        "progress": float(trace["progress"][-1]) if len(trace["progress"]) else 0.0,
        "crashed": float(trace.crashed),
        "mpc_fallbacks": float(trace.mpc_fallbacks),
        "shield_interventions": float(trace.shield.get("interventions", 0)),
        **{f"cost_{name}": value for name, value in trace.costs.items()},
    }


def error_improvement(error: float, default_error: float) -> float:
    """Relative improvement of the error over the default's, clipped to [-IMPROVEMENT_CLIP, IMPROVEMENT_CLIP]
    (a finite error against a default of ~0: 0 if it is ~0 too, else the worst)."""
    if default_error <= 1e-9:
        return 0.0 if error <= 1e-9 else -IMPROVEMENT_CLIP
    return float(np.clip((default_error - error) / default_error, -IMPROVEMENT_CLIP, IMPROVEMENT_CLIP))


def legacy_improvement(error: float, default_error: float, failed: bool) -> float:
    """The legacy score (RobotxR1's, no progress term): the error improvement; failures score FAILURE_IMPROVEMENT.
    Kept so old and new scores can be published side by side."""
    if failed or not math.isfinite(error):
        return FAILURE_IMPROVEMENT
    return error_improvement(error, default_error)


improvement = legacy_improvement  # its name before the progress term existed; older callers import it


def progress_ratio(progress: float, default_progress: float) -> float:
    """progress / default_progress, or NaN when the default drive gives nothing to judge against."""
    if not math.isfinite(default_progress) or default_progress < MIN_DEFAULT_PROGRESS:
        return float("nan")
    return progress / default_progress


@dataclasses.dataclass(frozen=True)
class Score:
    """An attempt's score against the default drive of its episode, with the terms it is made of."""

    improvement: float
    """The score: the sum of `terms`, in [-IMPROVEMENT_CLIP, IMPROVEMENT_CLIP]."""
    terms: Mapping[str, float]
    """TERMS by name: error_improvement and progress_penalty for a judged drive, failure
    (FAILURE_IMPROVEMENT) alone for a failed one; what a trainer logs term by term."""
    failure: str
    """Why the attempt failed, one of FAILURES; empty if it did not."""
    progress_ratio: float
    """The drive's progress over the default's (NaN when there is no default progress to judge against)."""
    legacy_improvement: float
    """The same attempt under the legacy score (no progress term)."""

    def __post_init__(self) -> None:
        if self.failure and self.failure not in FAILURES:
            raise ValueError(f"Score.failure {self.failure!r} is unknown; use '' or one of {list(FAILURES)}")
        if set(self.terms) != set(TERMS):
            raise ValueError(f"Score.terms has {sorted(self.terms)}; it must name exactly {list(TERMS)}")
        total = sum(self.terms.values())
        if not math.isclose(total, self.improvement, abs_tol=1e-9):
            raise ValueError(f"Score.terms sum to {total}, not to the improvement {self.improvement}; "
                             "terms must add up to the score they explain")
        object.__setattr__(self, "terms", dict(self.terms))  # a copy: a caller's dict cannot change the score


def _failed(reason: str, ratio: float, legacy: float) -> Score:
    return Score(FAILURE_IMPROVEMENT, {"error_improvement": 0.0, "progress_penalty": 0.0,
                                       "failure": FAILURE_IMPROVEMENT}, reason, ratio, legacy)


def score(category: str, error: float, default_error: float, progress: float, default_progress: float,
          failure: str = "") -> Score:
    """The score of a drive against the default drive of the same episode (see the module docstring).

    `progress`, `default_progress`: net distance along the track (m, negative backwards).
    `failure`: a failure the caller already knows ('unparsable', 'crash'), or ''."""
    if category not in CATEGORIES:
        raise ValueError(f"no score for category {category!r}; use one of {list(CATEGORIES)}")
    if failure and failure not in FAILURES:
        raise ValueError(f"failure {failure!r} is unknown; use '' or one of {list(FAILURES)}")
    legacy = legacy_improvement(error, default_error, bool(failure))
    judged = category in PROGRESS_CATEGORIES
    ratio = progress_ratio(progress, default_progress) if judged and math.isfinite(progress) else float("nan")
    if failure:
        return _failed(failure, ratio, legacy)
    if not (math.isfinite(error) and math.isfinite(default_error)) or (judged and not math.isfinite(progress)):
        return _failed("not finite", ratio, legacy)
    if judged and progress < 0:
        return _failed("reverse", ratio, legacy)
    if judged and ratio < MIN_PROGRESS_RATIO:  # False for a NaN ratio: no default progress, nothing to judge
        return _failed("crawl", ratio, legacy)
    gain = error_improvement(error, default_error)
    penalty = -PROGRESS_WEIGHT * (1.0 - ratio) if judged and ratio < 1.0 else 0.0
    total = float(np.clip(gain + penalty, -IMPROVEMENT_CLIP, IMPROVEMENT_CLIP))
    # The clip can only raise a score that the penalty pushed under -IMPROVEMENT_CLIP: report the penalty applied.
    return Score(total, {"error_improvement": gain, "progress_penalty": total - gain, "failure": 0.0}, "", ratio, legacy)


def score_drive(instruction: Instruction, metrics: Mapping[str, float], default_metrics: Mapping[str, float],
                unparsable: bool = False) -> Score:
    """`score` of a drive from its `drive_metrics` and the default drive's (a crash read from metrics['crashed'])."""
    failure = "unparsable" if unparsable else ("crash" if metrics["crashed"] else "")
    return score(instruction.category, metrics["error"], default_metrics["error"], metrics["progress"],
                 default_metrics["progress"], failure)


def drive_evidence(trace: Trace, track: Track, default_trace: Trace | None = None) -> ExecutedTrace | None:
    """What a drive did, as the claims checker reads it (speeds, offsets, wall clearance, the default's pace)."""
    return executed_from(drive_outcome(trace, track, default_trace))


def thought_agreement(thought: str, action: Mapping[str, Any], executed: ExecutedTrace | None = None) -> float:
    """The share of the thought's checkable claims that the MPC parameters (and the `executed` drive, when
    given: drive_evidence) bear out (1.0: all, or none checkable); slower/faster claims are judged against the
    default parameters. A reward term: cheap, never raises."""
    return agreement(thought, action, DEFAULT.as_dict(), executed)


def thought_flags(thought: str, action: Mapping[str, Any], trace: Trace, track: Track,
                  default_trace: Trace | None = None) -> list[str]:
    """Why the thought disagrees with the MPC parameters or with the drive that followed (empty: it does not),
    from safety.audit.claims.check_claims, slower/faster judged against the default parameters and drive."""
    if not thought.strip():
        return []
    executed = drive_evidence(trace, track, default_trace)
    return [str(f) for f in check_claims(thought, action, executed=executed, reference=DEFAULT.as_dict())]
