"""A real drive's outcome, as the audit record keeps it, lets a thought's claims be checked
against what the car did (not only against the parameters it wrote)."""

import numpy as np

from agents.control.mpc_params import DEFAULT
from agents.tasks.car.instruction_env import CarInstructionEnv, CarTaskConfig
from agents.tasks.car.outcome import drive_outcome
from safety.audit.flags import decision_flags
from twin.car.tracks import load_track


def test_the_outcome_of_a_real_drive_carries_what_claims_are_checked_against():
    env = CarInstructionEnv(CarTaskConfig(tracks=("oval",), split="heldout", duration_s=3.0))
    env.reset(seed=3, options={"category": "velocity"})
    default = env.default_attempt()
    slow = env.evaluate({"v_min": 0.5, "v_max": 1.0})
    env.close()
    track = load_track("oval")
    outcome = drive_outcome(slow.trace, track, default.trace)
    n = len(slow.trace["v"])
    assert len(outcome["speeds"]) == len(outcome["lateral_offsets"]) == len(outcome["curvatures"]) == -(-n // 5)
    assert outcome["reference_speed"] == round(float(np.median(default.trace["v"])), 3)
    assert 0 < outcome["min_clearance"] < track.half_width
    reference = DEFAULT.as_dict()
    action = {**reference, "v_min": 0.5, "v_max": 1.0}
    # The band holds 0.9 m/s and so did the drive; it does not hold 3 m/s, and the drive did not do it either.
    assert decision_flags({"thought": "Hold 0.9 m/s.", "action": action, "outcome": outcome}, reference) == []
    flags = decision_flags({"thought": "Hold 3 m/s.", "action": action, "outcome": outcome}, reference)
    assert any("action" in f for f in flags) and any("drive that followed" in f for f in flags), flags
