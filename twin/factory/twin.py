"""The factory-line twin: parts ride a belt past a camera to a robot that sorts them.

Parts are carried by contact and friction: the belt is a static body whose surface
velocity is set every physics step. A part crossing the inspection line awaits a decision
(accept, reject, hold). Accepted parts ride off the belt's end into the accept bin; the
arm picks rejected and held parts at the pick station (the belt indexes: it stops while
a part waits there) and drops them in their bins. A part that reaches the pick station
undecided is held for manual review, never passed silently. Injectable events: jam,
belt slip, a part falling off, camera glare, the person walking into the cell.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pybullet as pb

from twin.core.bullet import PHYSICS_HZ
from twin.core.config import ConfigError, bounded, check_bounds
from twin.core.randomization import Draws, Randomizer, Term, streams
from twin.core.sensors import render_camera
from twin.factory.arm import CUP_GAP, REACH, Arm, PickTask
from twin.factory.command import FactoryCommand
from twin.factory.params import FactoryParams, PartParams
from twin.factory.parts import PartSpec, build_part, draw_part
from twin.factory.person import Person
from twin.factory.world import (
    BELT_HALF_WIDTH,
    BELT_TOP,
    BELT_X,
    BINS,
    INSPECT_X,
    PICK_X,
    SPAWN_X,
    FactoryScene,
    InspectionStation,
)

DECISIONS = ("accept", "reject", "hold")
EVENTS = ("jam", "belt_slip", "part_fall", "glare", "person_enter")
JAM_DETECT_S = 0.5
"""A part still on a running belt this long is reported jammed (s)."""
JAM_RETRY_S = 2.0
"""After this long stopped for a jam, the line tries to run again (s)."""

FACTORY_STREAMS = ("parts", "person", "sensors")
"""Independent random streams of a cell episode (twin.core.randomization.streams): the parts fed in, the person's walk,
the camera's noise. Where a glare event falls and how late the camera's trigger fires have streams too ("glare",
"trigger", `_episode_streams`)."""


def _episode_streams(rng: np.random.Generator) -> dict[str, np.random.Generator]:
    """The episode's streams, plus "glare" and "trigger": children of the camera stream's seed (Generator.spawn,
    glare first as it always was), so neither depends on how often the camera was read nor adds a draw from the
    episode's generator (what it draws after a reset, e.g. the parts of twin.factory.samples, stays as it was)."""
    out = streams(rng, *FACTORY_STREAMS)
    out["glare"] = out["sensors"].spawn(1)[0]
    out["trigger"] = out["sensors"].spawn(1)[0]
    return out


@dataclasses.dataclass(frozen=True)
class FactoryTwinConfig:
    """How a factory twin is built."""

    control_hz: float = bounded(20.0, 1.0, PHYSICS_HZ)
    """Rate of commands, person motion and sensing (Hz); physics runs at PHYSICS_HZ (240 Hz)."""
    params: FactoryParams = FactoryParams()
    """Nominal cell parameters; each episode starts from these."""
    randomization: tuple[Term, ...] = ()
    """Declared randomization (see twin.factory_params.FACTORY_RANDOMIZATION)."""
    max_parts: int = bounded(12, 1, 100)
    """Parts on the line at once; the feeder waits while the line is full."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if abs(PHYSICS_HZ / self.control_hz - round(PHYSICS_HZ / self.control_hz)) > 1e-9:
            raise ConfigError(f"FactoryTwinConfig.control_hz {self.control_hz} must divide {PHYSICS_HZ:g} Hz evenly")

    @property
    def substeps(self) -> int:
        return round(PHYSICS_HZ / self.control_hz)


@dataclasses.dataclass
class Part:
    """A part's life on the line, with its ground truth."""

    id: int
    spec: PartSpec
    body: int | None
    born: float
    decision: str | None = None
    status: str = "belt"
    """'belt', 'held' (in the gripper), 'binned' or 'dropped'."""
    bin: str | None = None
    inspected: bool = False
    triggered_at: float | None = None
    """When the camera's frame of it is due: crossing the inspection line plus the trigger's latency."""
    stuck_since: float | None = None
    pick_failed: bool = False
    """The arm tried and failed to grasp it."""
    params: PartParams | None = None
    """The appearance parameters it was made with."""


@dataclasses.dataclass
class FactoryStepReport:
    """What happened in one control period."""

    inspected: list[int]
    """Parts that crossed the inspection line this step (they await a decision)."""
    binned: list[tuple[int, str]]
    dropped: list[int]
    grasp_failures: list[int]
    separation: float
    """Smallest person-arm distance (m)."""
    tool_speed: float
    """Speed of the arm's tool (m/s)."""
    person_contact: bool
    belt_speed: float
    """Belt surface speed actually applied (m/s)."""
    release_withheld: bool


class FactoryTwin:
    """`reset(rng)` then `step(FactoryCommand)` at `config.control_hz`."""

    def __init__(self, config: FactoryTwinConfig | None = None) -> None:
        self.config = config or FactoryTwinConfig()
        self.randomizer = Randomizer(self.config.params, self.config.randomization)
        self.scene = FactoryScene()
        self.station = InspectionStation()
        self.c = self.scene.client
        self.arm = Arm(self.c, self.scene.arm)
        self.person = Person()
        self.params = self.config.params
        self.draws: Draws = {}
        self.parts: dict[int, Part] = {}
        self._streams = _episode_streams(np.random.default_rng(0))
        self.t = 0.0
        self.counters: dict[str, float] = {}

    # -- episode ------------------------------------------------------------------------
    def reset(self, rng: np.random.Generator, draws: Draws | None = None) -> Draws:
        self.draws = dict(draws) if draws is not None else self.randomizer.draw_reset(rng)
        self.params = self.randomizer.apply(self.config.params, self.draws)
        for part in self.parts.values():
            if part.body is not None:
                self.c.removeBody(part.body)
        self.parts = {}
        self._next_id = 0
        self.t = 0.0
        self.arm.reset()
        self.person.reset(rng, self.params.person)
        self._streams = _episode_streams(rng)
        self.scene.apply_colours(self.params.floor_rgb, self.params.belt_rgb)
        self.station.apply_colours(self.params.floor_rgb, self.params.belt_rgb)
        self.station.clear()
        self.c.changeDynamics(self.scene.belt, -1, lateralFriction=self.params.belt.friction)
        self._next_spawn = 0.5
        self.events: dict[str, dict[str, Any]] = {}
        self.jammed = False
        self._last_ee = self.arm.ee_position()
        self.separation = self._separation()
        self.counters = {k: 0 for k in ("spawned", "binned", "dropped", "grasp_failures", "feeder_waits",
                                        "release_withheld", "held_undecided", "picks_abandoned")}
        return self.draws

    # -- events -------------------------------------------------------------------------
    def inject(self, event: str, duration: float = 2.0, magnitude: float = 0.7) -> None:
        """Start an event now: 'jam', 'belt_slip', 'part_fall', 'glare' or 'person_enter'.

        `magnitude`: the share of belt speed lost (belt_slip), glare strength (glare), knock strength (part_fall)."""
        if event not in EVENTS:
            raise ConfigError(f"unknown factory event {event!r}; choose from {list(EVENTS)}")
        if not (duration > 0 and math.isfinite(duration)):
            raise ConfigError(f"event duration must be a positive number of seconds, got {duration}")
        on_belt = [p for p in self.parts.values() if p.status == "belt" and p.body is not None]
        if event == "person_enter":
            self.person.visit_cell()
            return
        if event == "part_fall":
            if on_belt:
                victim = max(on_belt, key=lambda p: p.id)
                # A knock of `magnitude` * 2 m/s, sideways and up: at the default 0.7 the part clears the belt's
                # 3 cm side rail (about 4 cm of rise) and falls; below about 0.6 it only bumps the rail.
                speed = 2.0 * magnitude
                self.c.resetBaseVelocity(victim.body, [0.0, -0.78 * speed, 0.62 * speed], [0, 0, 3.0])
            return
        state: dict[str, Any] = {"until": self.t + duration, "magnitude": magnitude}
        if event == "jam":
            if not on_belt:
                return
            victim = min(on_belt, key=lambda p: p.id)
            pos, orn = self.c.getBasePositionAndOrientation(victim.body)
            state["part"] = victim.id
            state["constraint"] = self.c.createConstraint(victim.body, -1, -1, -1, pb.JOINT_FIXED, [0, 0, 0], [0, 0, 0], pos,
                                                          childFrameOrientation=orn)
        if event == "glare":
            state["center"] = self._streams["glare"].uniform(0.25, 0.75, 2)
        self.events[event] = state

    def _expire_events(self) -> None:
        for name in list(self.events):
            state = self.events[name]
            if self.t >= state["until"]:
                if name == "jam":
                    self.c.removeConstraint(state["constraint"])
                del self.events[name]

    # -- stepping -----------------------------------------------------------------------
    def _spawn(self) -> None:
        if self.t < self._next_spawn:
            return
        crowded = any(p.status == "belt" and p.body is not None
                      and self.c.getBasePositionAndOrientation(p.body)[0][0] < SPAWN_X + 0.15
                      for p in self.parts.values())
        alive = sum(p.status in ("belt", "held") for p in self.parts.values())
        if crowded or alive >= self.config.max_parts:
            self.counters["feeder_waits"] += 1
            self._next_spawn = self.t + 0.2
            return
        pp, rng = self.params, self._streams["parts"]
        spec = draw_part(rng, pp.parts)
        y = float(rng.uniform(-pp.feeder.lateral_jitter, pp.feeder.lateral_jitter))
        yaw = float(rng.uniform(-0.3, 0.3))
        body = build_part(self.c, spec, pp.parts, (SPAWN_X, y, BELT_TOP + spec.size()[2] / 2 + 0.003), yaw,
                          pp.belt.friction)
        self.parts[self._next_id] = Part(self._next_id, spec, body, self.t, params=pp.parts)
        self._next_id += 1
        self.counters["spawned"] += 1
        self._next_spawn = self.t + float(rng.uniform(pp.feeder.interval_min, pp.feeder.interval_max))

    def _position(self, part: Part) -> tuple[float, float, float]:
        return self.c.getBasePositionAndOrientation(part.body)[0]

    def _needs_pick(self, part: Part) -> bool:
        return part.status == "belt" and part.decision != "accept" and not part.pick_failed

    def _station_busy(self) -> bool:
        """A part that must be picked is at the pick station: the belt waits for the arm."""
        for part in self.parts.values():
            if self._needs_pick(part) and part.body is not None and self._position(part)[0] >= PICK_X - 0.005:
                if self.arm.task is None:
                    bin_name = part.decision or "hold"
                    if part.decision is None:
                        self.counters["held_undecided"] += 1
                    self.arm.task = PickTask(part.id, bin_name)
                return True
        task = self.arm.task
        return task is not None and task.phase in ("approach", "descend", "grasp")

    def _arm_step(self, joint_speed: float, dt: float, release_ok: bool, report: FactoryStepReport) -> None:
        task = self.arm.task
        if task is None:
            if not np.allclose(self.arm.q, self.arm.home):
                self.arm.move_toward(self.arm.home, joint_speed, dt)
            return
        task.elapsed += dt
        part = self.parts.get(task.part_id)
        if part is None or part.body is None or part.status not in ("belt", "held"):
            self.arm.task = None  # the part left the station on its own (fell, was pushed): nothing to pick
            self.counters["picks_abandoned"] += 1
            return
        if task.target is None:
            if task.phase in ("approach", "descend"):
                x, y, _ = self._position(part)
                top = BELT_TOP + part.spec.size()[2] + CUP_GAP
                z = top + (0.12 if task.phase == "approach" else 0.0)
                task.target = self.arm.ik((x, y, z))
            elif task.phase == "lift":
                ee = self.arm.ee_position()
                task.target = self.arm.ik((ee[0], ee[1], BELT_TOP + 0.25))
            elif task.phase == "carry":
                b = BINS[task.bin_name]
                task.target = self.arm.ik((b.center[0], b.center[1], b.rim + 0.25))
        if task.phase == "grasp":
            ee = self.arm.ee_position()
            pos = np.array(self._position(part))
            if np.hypot(*(ee[:2] - pos[:2])) < 0.02 and abs(ee[2] - pos[2] - part.spec.size()[2] / 2 - CUP_GAP) < 0.02:
                self.arm.held, self.arm.held_offset = part.id, ee[2] - pos[2]
                part.status = "held"
                task.phase, task.target = "lift", None
            else:
                report.grasp_failures.append(part.id)
                self.counters["grasp_failures"] += 1
                part.pick_failed = True  # it rides on into the accept bin: counted, not lost
                self.arm.task = None
            return
        if task.phase == "release":
            if not release_ok:
                self.counters["release_withheld"] += 1
                report.release_withheld = True
                return
            held = self.parts[self.arm.held]
            self.c.resetBaseVelocity(held.body, [0, 0, 0], [0, 0, 0])
            held.status = "belt"  # falling: binned once it lands in the bin
            self.arm.held = None
            self.arm.task = None
            return
        if self.arm.move_toward(task.target, joint_speed, dt):
            task.phase = {"approach": "descend", "descend": "grasp", "lift": "carry", "carry": "release"}[task.phase]
            task.target = None

    def over_bin(self) -> bool:
        ee = self.arm.ee_position()
        return any(b.contains(ee[0], ee[1]) and ee[2] > b.rim for name, b in BINS.items() if name != "accept")

    def wants_release(self) -> bool:
        return self.arm.task is not None and self.arm.task.phase == "release"

    def step(self, command: FactoryCommand) -> FactoryStepReport:
        """Advance one control period under the (already shielded) command."""
        dt = 1.0 / self.config.control_hz
        report = FactoryStepReport([], [], [], [], 0.0, 0.0, False, 0.0, False)
        self._expire_events()
        belt = max(0.0, float(command.belt_speed)) if math.isfinite(command.belt_speed) else 0.0
        if "belt_slip" in self.events:
            belt *= 1.0 - self.events["belt_slip"]["magnitude"]
        if self._station_busy():
            belt = 0.0
        report.belt_speed = belt
        joint_speed = max(0.0, float(command.arm_speed)) / REACH if math.isfinite(command.arm_speed) else 0.0
        self._arm_step(joint_speed, dt, bool(command.release), report)
        held = self.parts.get(self.arm.held) if self.arm.held is not None else None
        for _ in range(self.config.substeps):
            self.c.resetBasePositionAndOrientation(self.scene.belt, self.scene.belt_pos, [0, 0, 0, 1])
            self.c.resetBaseVelocity(self.scene.belt, [belt, 0, 0], [0, 0, 0])
            if held is not None:
                ee = self.arm.ee_position()
                self.c.resetBasePositionAndOrientation(held.body, [ee[0], ee[1], ee[2] - self.arm.held_offset],
                                                       [0, 0, 0, 1])
                self.c.resetBaseVelocity(held.body, [0, 0, 0], [0, 0, 0])
            self.c.stepSimulation()
            self.arm.hold()  # kinematic: gravity must not sag the joints between commands
        self.t += dt
        px, py = self.person.step(dt, self._streams["person"])
        self.c.resetBasePositionAndOrientation(self.scene.person, [float(px), float(py), 0.85], [0, 0, 0, 1])
        self._spawn()
        self._update_parts(report, belt)
        ee = self.arm.ee_position()
        report.tool_speed = float(np.linalg.norm(ee - self._last_ee)) / dt
        self._last_ee = ee
        self.separation = self._separation()
        report.separation = self.separation
        report.person_contact = self.separation <= 0.0
        return report

    def _update_parts(self, report: FactoryStepReport, belt: float) -> None:
        for part in self.parts.values():
            if part.body is None or part.status == "held":
                continue
            x, y, z = self._position(part)
            if not part.inspected and x >= INSPECT_X:
                if part.triggered_at is None:
                    jitter = self.params.trigger_jitter_s
                    part.triggered_at = self.t + (float(self._streams["trigger"].uniform(0.0, jitter)) if jitter else 0.0)
                if self.t >= part.triggered_at:
                    part.inspected = True
                    report.inspected.append(part.id)
            if z < BELT_TOP - 0.08:
                for name, b in BINS.items():
                    if b.contains(x, y) and z < b.rim + 0.05:
                        part.status, part.bin = "binned", name
                        report.binned.append((part.id, name))
                        self.counters["binned"] += 1
                        break
                else:
                    if z < 0.05:
                        part.status = "dropped"
                        report.dropped.append(part.id)
                        self.counters["dropped"] += 1
                if part.status in ("binned", "dropped"):
                    self.c.removeBody(part.body)
                    part.body = None
                continue
            # Jam sensor: a part on a running belt that does not move for JAM_DETECT_S. Once
            # reported, the jam holds (the belt is stopped, so motion cannot clear it) until
            # JAM_RETRY_S have passed, when the line may try again.
            vx = self.c.getBaseVelocity(part.body)[0][0]
            if part.stuck_since is not None and self.t - part.stuck_since > JAM_DETECT_S:
                if self.t - part.stuck_since > JAM_DETECT_S + JAM_RETRY_S:
                    part.stuck_since = None
            elif belt > 0.05 and abs(vx) < 0.02 and BELT_X[0] < x < BELT_X[1] and abs(y) < BELT_HALF_WIDTH:
                part.stuck_since = part.stuck_since if part.stuck_since is not None else self.t
            else:
                part.stuck_since = None
        self.jammed = any(p.stuck_since is not None and self.t - p.stuck_since > JAM_DETECT_S
                          for p in self.parts.values() if p.status == "belt")

    def _separation(self) -> float:
        pts = self.c.getClosestPoints(self.scene.person, self.scene.arm, 4.0)
        return min((p[8] for p in pts), default=math.inf)

    # -- sensing ------------------------------------------------------------------------
    def awaiting(self) -> list[Part]:
        """Inspected parts still waiting for a decision, oldest first."""
        return [p for p in self.parts.values() if p.inspected and p.decision is None and p.status == "belt"]

    def decide(self, part_id: int, decision: str) -> None:
        if decision not in DECISIONS:
            raise ConfigError(f"decision {decision!r} must be one of {list(DECISIONS)}")
        part = self.parts.get(part_id)
        if part is None:
            raise ConfigError(f"no part {part_id} on the line")
        part.decision = decision

    def inspection_image(self) -> np.ndarray:
        """The overhead camera's frame of the inspection point (glare included while it lasts)."""
        cam = self.params.camera
        in_view = {}
        for p in self.parts.values():
            if p.body is not None:
                pos, orn = self.c.getBasePositionAndOrientation(p.body)
                if abs(pos[0] - INSPECT_X) < InspectionStation.VIEW_HALF:
                    in_view[p.id] = (pos, orn, (p.spec, p.params, pos, 0.0, 1.0))
        self.station.sync(in_view, build_part)
        eye = (INSPECT_X, 0.0, cam.mount_height)
        img = render_camera(self.station.client, eye, 0.0, cam, self.params.lighting, self._streams["sensors"])
        if "glare" in self.events:
            h, w = img.shape[:2]
            cy, cx = self.events["glare"]["center"] * np.array([h, w])
            yy, xx = np.mgrid[0:h, 0:w]
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.18 * w) ** 2))[..., None]
            img = np.clip(img + 255 * self.events["glare"]["magnitude"] * blob, 0, 255).astype(np.uint8)
        return img

    def close(self) -> None:
        self.station.close()
        self.scene.close()
