"""A calibration session's driver: a policy that asks for a new target speed with every decision.

A log of steady driving cannot tell the motor's gain from its delay, or friction from nothing:
changing speeds exercise the speed loop, the delay and the corners, so the fit has something to
identify. Served over the bridge like any policy (`bridge.server.PolicyServer`)."""

from __future__ import annotations

from agents.policies.car_expert import expert_params
from twin.core.contracts import Decision, Observation

CALIBRATION_SPEEDS = (3.0, 1.5, 3.5, 2.0, 0.8)
"""Target speeds (m/s) a calibration drive cycles through: up, down, faster, middle, slow."""


class SpeedSteps:
    """The expert's velocity parameters for the next speed of `speeds` (cycled) with each decision."""

    policy_id = "speed-steps"

    def __init__(self, speeds: tuple[float, ...] = CALIBRATION_SPEEDS) -> None:
        if not speeds:
            raise ValueError("SpeedSteps needs at least one target speed")
        self.speeds, self.n = tuple(speeds), 0

    def decide(self, observation: Observation) -> Decision:
        v = self.speeds[self.n % len(self.speeds)]
        self.n += 1
        return Decision(action=expert_params("velocity", v, 1.0, 0.31).as_dict(), policy_id=self.policy_id)
