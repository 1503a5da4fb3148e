"""What a drive did, in the shape an audit record keeps (`decision_body(..., outcome=)`).

A thought's claims ("hold 1.6 m/s", "keep 0.5 m from the walls", "hug the inside") are
checked against the action and against this outcome (safety.audit.flags). Samples are kept
every `every` control steps: enough for medians and extremes, small enough to log per
decision.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.control.loop import Trace
from safety.car.clearance import clearance_map
from twin.car.tracks import Track
from twin.car.vehicle import VehicleParams

KEEP_EVERY = 5
"""Control steps between kept samples (10 Hz at the car's 50 Hz)."""


def drive_outcome(trace: Trace, track: Track, reference: Trace | None = None, every: int = KEEP_EVERY,
                  vehicle: VehicleParams | None = None) -> dict[str, Any]:
    """Speeds, lateral offsets and the track's curvature under them, the smallest distance from the
    car's side to a wall (centre clearance minus half the car's width; static obstacles not
    included), and the median speed of a `reference` drive (e.g. the default parameters')."""
    half_width = (vehicle or VehicleParams()).width / 2
    keep = slice(None, None, max(1, every))
    room = clearance_map(track.name, ()).lookup(trace["x"], trace["y"]) - half_width  # the cache key the guard uses
    outcome: dict[str, Any] = {
        "speeds": [round(float(v), 3) for v in trace["v"][keep]],
        "lateral_offsets": [round(float(d), 3) for d in trace["d"][keep]],
        "curvatures": [round(float(k), 4) for k in track.curvature_at(trace["s"][keep])],
        "min_clearance": round(float(np.min(room)), 3) if len(room) else None,
    }
    if reference is not None and len(reference["v"]):
        outcome["reference_speed"] = round(float(np.median(reference["v"])), 3)
    return outcome
