"""What each world offers a scenario: signals, actions, disturbance channels, policies.

The loader checks a scenario file against its world's declaration before any episode runs
(an unknown signal, action, action parameter or channel is an error naming the line), and
the world's runner (`scenarios.car.runner`, `scenarios.factory.runner`) implements exactly
what is declared here. The declarations hold no simulator, so reading them is cheap.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twin.car.randomization import CAR_RANDOMIZATION
from twin.car.twin import CarParams
from twin.core.randomization import Term
from twin.factory.params import FACTORY_RANDOMIZATION, FactoryParams


@dataclasses.dataclass(frozen=True)
class ActionParam:
    """One parameter of an action."""

    name: str
    low: float
    high: float
    default: float
    doc: str


@dataclasses.dataclass(frozen=True)
class ActionDecl:
    """An event action a world can perform."""

    name: str
    doc: str
    params: tuple[ActionParam, ...]

    def param(self, name: str) -> ActionParam | None:
        return next((p for p in self.params if p.name == name), None)


@dataclasses.dataclass(frozen=True)
class WorldDecl:
    """Everything a scenario may name in one world."""

    kind: str
    signals: dict[str, str]
    """Signal name -> meaning and unit; triggers, validity and monitors use these."""
    actions: dict[str, ActionDecl]
    channels: dict[str, str]
    """Disturbance channel -> what it perturbs."""
    policies: dict[str, str]
    """Named systems under test -> meaning ('adapter:<dir>' and 'python:<module>:<name>' are always accepted where noted)."""
    params_root: Any
    """The twin's nominal parameters: scenario parameter paths are checked against it."""
    default_randomization: tuple[Term, ...]
    where: str
    """The signal that says *where* a failure happened (car: arc length s)."""


def _p(name: str, low: float, high: float, default: float, doc: str) -> ActionParam:
    return ActionParam(name, low, high, default, doc)


DURATION = _p("duration_s", 0.05, 600.0, 2.0, "how long it lasts (s)")

CAR = WorldDecl(
    kind="car",
    signals={
        "t": "time since the start (s)", "s": "arc length along the centerline (m)",
        "d": "lateral offset from the centerline, + left (m)", "speed": "speed (m/s)", "v": "speed (m/s), alias",
        "progress": "distance travelled along the centerline since the start (m)",
        "crashed": "1 once the car touched a wall or obstacle, else 0",
        "clearance": "distance from the car's footprint to the nearest wall or obstacle, mapped or not (m)",
        "zone_limit": "speed limit at the car's position (m/s; the global limit outside zones)",
        "lat_accel": "lateral acceleration magnitude (m/s^2)", "a_lat_max": "the safety spec's lateral limit (m/s^2)",
        "intervened": "1 when the shield changed this step's command, else 0",
        "braking": "1 when the executed speed command is below the current speed by > 0.5 m/s, else 0",
        "mu": "tyre-road friction coefficient under the car",
    },
    actions={a.name: a for a in (
        ActionDecl("friction", "friction drops (or rises) by a factor for a while: a spill, a wet patch", (
            _p("scale", 0.05, 2.0, 0.5, "friction multiplier"), DURATION)),
        ActionDecl("obstacle", "a box appears on the track ahead of the car (not in the shield's map)", (
            _p("ahead_m", 0.5, 30.0, 4.0, "how far ahead of the car along the centerline (m)"),
            _p("d", -1.5, 1.5, 0.0, "lateral offset on the track (m)"),
            _p("size", 0.05, 1.0, 0.3, "edge length (m)"), _p("duration_s", 0.05, 600.0, 600.0, "how long it stays (s)"))),
        ActionDecl("lidar_dropout", "the lidar loses a fraction of its returns", (
            _p("fraction", 0.0, 1.0, 0.9, "share of beams lost"), DURATION)),
        ActionDecl("delay_spike", "actuation latency jumps (a loaded bus, a stalled driver)", (
            _p("delay_s", 0.0, 0.5, 0.15, "actuation delay during the spike (s)"), DURATION)),
        ActionDecl("steering_bias", "the steering is misaligned (a knock on the servo)", (
            _p("offset", -0.1, 0.1, 0.03, "steering offset (rad)"), DURATION)),
        ActionDecl("motor_fade", "the motor delivers less than asked (a sagging battery)", (
            _p("gain", 0.3, 2.0, 0.5, "motor gain"), DURATION)),
        ActionDecl("camera_glare", "light floods the camera (a low sun)", (
            _p("ambient", 0.0, 1.0, 1.0, "ambient light level"), DURATION)),
    )},
    channels={"steer": "rad added to the executed steering command", "speed": "m/s added to the executed speed command",
              "speed_sense": "m/s added to the speed the controller senses",
              "lateral_sense": "m added to the lateral offset the controller senses"},
    policies={"default": "the MPC with its default parameters", "expert": "the scripted expert's MPC parameters",
              "pure-pursuit": "a scripted pure-pursuit driver (no MPC; fast)",
              "reckless": "random throttle and steering (the shield's stress test)",
              "replay": "a robot's recorded commands played back (system.replay: start, commands)",
              "adapter:<dir>": "the vision-language agent with a trained adapter",
              "python:<module>:<name>": "any Policy answering MPC parameters"},
    params_root=CarParams(),
    default_randomization=CAR_RANDOMIZATION,
    where="s",
)

FACTORY = WorldDecl(
    kind="factory",
    signals={
        "t": "time since the start (s)", "separation": "smallest person-arm distance (m)",
        "iso_min": "ISO/TS 15066 protective separation needed at the arm's measured speed (m); 0 while the arm stands "
                   "still (tool speed <= 0.01 m/s), as the guard counts it",
        "tool_speed": "speed of the arm's tool (m/s)", "belt_speed": "belt surface speed applied (m/s)",
        "jammed": "1 while a jam is reported, else 0", "contact": "1 when the person touches the arm, else 0",
        "dropped": "parts dropped off the line so far", "binned": "parts sorted into bins so far",
        "person_in_cell": "1 while the person is inside the robot's cell (nearer the belt than the closest patrol line, "
                          "y < 2.0 m), else 0",
        "intervened": "1 when the shield changed this step's command, else 0",
        "jam_running": "1 when the belt runs into a known jam this step, else 0",
        "false_accepts": "defective parts accepted so far", "false_rejects": "good parts rejected so far",
    },
    actions={a.name: a for a in (
        ActionDecl("jam", "the oldest part on the belt sticks", (DURATION,)),
        ActionDecl("person_enter", "the person walks into the robot's cell", ()),
        ActionDecl("part_fall", "the newest part on the belt is knocked sideways (hard enough, it leaves the belt)", (
            _p("magnitude", 0.0, 2.0, 0.7, "knock strength: the part flies off at 2 * magnitude m/s"),)),
        ActionDecl("glare", "light floods the inspection camera", (_p("magnitude", 0.0, 1.0, 0.7, "glare strength"), DURATION)),
        ActionDecl("belt_slip", "the belt slips and runs slower than commanded", (
            _p("magnitude", 0.0, 1.0, 0.5, "share of speed lost"), DURATION)),
        ActionDecl("arm_speed", "the line asks the arm for a different speed (an operator override)", (
            _p("speed", 0.0, 3.0, 1.5, "commanded tool speed (m/s)"), DURATION)),
    )},
    channels={"arm_speed": "m/s added to the commanded arm speed", "belt_speed": "m/s added to the commanded belt speed",
              "separation_sense": "m added to the separation the shield senses"},
    policies={"heuristic": "the colour-threshold inspector", "expert": "the privileged inspector (ground truth)",
              "python:<module>:<name>": "any Policy answering accept/reject/hold"},
    params_root=FactoryParams(),
    default_randomization=FACTORY_RANDOMIZATION,
    where="t",
)

WORLDS = {"car": CAR, "factory": FACTORY}
