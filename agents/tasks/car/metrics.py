"""Named metrics of a drive and the "control adaptability" score.

Per category, the error a drive is judged on (RobotxR1's evaluation functions):
centerline -> RMSE of the lateral offset; velocity -> RMSE of speed to the target;
reverse -> RMSE of speed to -1 m/s; smooth -> sqrt(mean(ax^2 + ay^2)).
Improvement = (error_default - error) / error_default, clipped to [-4, 4]. A crashed or
unparsable attempt scores FAILURE_IMPROVEMENT and is counted, never excluded (RobotxR1's
code drops failed parses from the mean, which flatters the score).
"""

from __future__ import annotations

import math

import numpy as np

from agents.control.loop import Trace
from agents.tasks.car.instructions import Instruction

FAILURE_IMPROVEMENT = -1.0
"""Score of a crashed or unparsable attempt: as bad as doubling the default's error."""
IMPROVEMENT_CLIP = 4.0


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


def improvement(error: float, default_error: float, failed: bool) -> float:
    """Relative improvement over the default parameters; failures score FAILURE_IMPROVEMENT."""
    if failed or not math.isfinite(error):
        return FAILURE_IMPROVEMENT
    if default_error <= 1e-9:
        return 0.0 if error <= 1e-9 else -IMPROVEMENT_CLIP
    return float(np.clip((default_error - error) / default_error, -IMPROVEMENT_CLIP, IMPROVEMENT_CLIP))
