"""Policies that need no model: the scripted expert and fixed parameters.

The expert reads the instruction's ground truth (category, target speed) and the track's
width from `Observation.privileged` and picks MPC parameters by rule, the way a control
engineer would tune RobotxR1's MPC by hand. It is the teacher for SFT and the ceiling in
evaluation tables.
"""

from __future__ import annotations

from agents.control.mpc_params import DEFAULT, MPCParams
from twin.core.contracts import Decision, Observation


class FixedParamsPolicy:
    """Always answers the same parameters (the default ones unless told otherwise)."""

    def __init__(self, params: MPCParams = DEFAULT, policy_id: str = "default-params",
                 label: str = "default parameters") -> None:
        self.params = params
        self.policy_id, self.label = policy_id, label

    def decide(self, observation: Observation) -> Decision:
        return Decision(action=self.params.as_dict(), policy_id=self.policy_id)


WALL_GAP = 0.03
"""How far inside the free half width (half width - half the car's width) the expert puts its centerline margin (m)."""


def centerline_margin(half_width: float, car_width: float, inset: float = WALL_GAP) -> float:
    """The centerline margin `inset` m inside the free half width, before it is clipped into the parameter's range
    (the expert's: WALL_GAP, just inside, so the soft bounds squeeze the car towards the centre line without
    closing on it)."""
    return half_width - car_width / 2 - inset


def expert_params(category: str, target_speed: float | None, half_width: float, car_width: float) -> MPCParams:
    """Hand-tuned parameters for one instruction."""
    p = DEFAULT.as_dict()
    if category == "centerline":
        # Squeeze the soft track bounds around the centre and stop chasing the racing line.
        p.update(qn=0.0, qalpha=10.0, track_safety_margin=min(1.0, max(0.0, centerline_margin(half_width, car_width))),
                 v_max=3.0)
    elif category == "velocity":
        v = float(target_speed)
        # Hold the target, but let the track's corner speeds pull it down where they must.
        p.update(qv=60.0, v_min=max(-5.0, min(v - 0.02, 3.0)), v_max=min(12.0, v + 0.02))
    elif category == "reverse":
        p.update(qv=60.0, qn=5.0, v_min=-1.02, v_max=-0.98, a_min=-3.0, a_max=3.0)
    elif category == "smooth":
        p.update(alat_max=1.0, a_min=-0.6, a_max=0.6, qac=5.0, qddelta=5.0, v_max=1.8, v_min=0.3)
    else:
        raise ValueError(f"expert has no rule for category {category!r}")
    return MPCParams(**p)


class ScriptedCarExpert:
    """Chooses MPC parameters from privileged ground truth."""

    policy_id = "scripted-expert-v1"
    label = "expert (privileged)"

    def params(self, category: str, target_speed: float | None, half_width: float, car_width: float) -> MPCParams:
        """The parameters for one instruction (a subclass may tune them differently)."""
        return expert_params(category, target_speed, half_width, car_width)

    def decide(self, observation: Observation) -> Decision:
        priv = observation.privileged
        params = self.params(priv["category"], priv.get("target_speed"), observation.state["half_width"],
                             float(priv.get("car_width", 0.31)))
        target = f" at {priv['target_speed']:g} m/s" if priv["category"] == "velocity" else ""
        thought = f"The instruction asks for '{priv['category']}'{target}; I set the parameters that serve it."
        return Decision(action=params.as_dict(), policy_id=self.policy_id, thought=thought)
