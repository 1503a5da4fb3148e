"""The rollout plan: which candidate replaces which incumbent, and how each rung is run and judged.

A plan is a YAML file read into frozen dataclasses and checked before anything runs: every
error is a `PlanError` naming the field (`rungs[2] (guarded).gates[0].threshold`) and what
to do. The checks: known keys only; rungs in ladder order (sim -> shadow -> guarded ->
canary -> full), ending at full; every rung gated, every gate with a metric that rung can
measure and a threshold; envelopes that tighten the shield's limits, never loosen them;
candidates that exist and were trained for this task; scenario-campaign evidence that is a
run or an estimate of the candidate itself; a sim-to-real band only with a sim rung.

    name: velocity-adapter-v3
    instruction: "Drive at 2 m/s."
    track: oval
    candidate: adapter:runs/grpo-car/adapter      # or default | expert | python:<module>:<name>
    incumbent: default                            # or {params: {v_max: 2.0, qv: 60}, id: tuned}
    robot: {process: in-process, gap: {mu_scale: 0.9, motor_gain: 0.9}, decide_every_s: 0.5}
    rungs:
      - name: sim
        evidence: runs/scenario-x/run-0.json      # a scenario campaign's results (optional)
        limits: {time_s: 5}
        gates: [{metric: task_error, threshold: 0.6}]
      - name: shadow
        gates: [{metric: fde, threshold: 1.5, window_s: 3, on_inconclusive: pause}]
      - name: guarded
        envelope: {v_max: 2.5, clearance: 0.1, zones: [{s_start: 10, s_end: 14, v_max: 1.5}]}
        limits: {time_s: 10, distance_m: 30}
        confirm: prompt                           # flagged decisions need an operator's yes
        gates: [{metric: interventions_per_min, threshold: 5}]
      - ...
    band: {task_error: 0.3}                       # real within +-0.3 of sim, or the gate fails
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import operator
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from agents.control.mpc_params import MPCParams
from bridge.robot.car.emulator import RealityGap
from bridge.rollout.metrics import APPLIED, DRIVE_METRICS, METRICS, RUNGS, SHADOW, SIM
from safety.car.spec import CarSafetySpec
from twin.car.tracks import load_track
from twin.core.config import ConfigError, bounded, check_bounds, from_mapping
from twin.core.contracts import Policy

CONFIRM_MODES = ("none", "auto-approve", "auto-deny", "prompt")
"""What happens to a flagged decision: passes; approved; denied (the incumbent's decision drives
instead); or an operator is asked on the command line (no answer: denied)."""
COMPARISONS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, "<": operator.lt, ">=": operator.ge,
                                                          ">": operator.gt}
ON_INCONCLUSIVE = ("pause", "fail")
TIGHTER: dict[str, Callable[[float, float], bool]] = {
    "v_max": operator.le, "v_reverse_max": operator.le, "a_lat_max": operator.le, "brake_decel": operator.le,
    "clearance": operator.ge, "reaction_time": operator.ge}
"""Envelope fields and the direction that tightens each (against the robot's own CarSafetySpec); zones only
ever add limits. The car's geometry is the robot's own and not an envelope's to change."""
ENVELOPE_FIELDS = (*TIGHTER, "zones")
ADAPTER_MANIFEST = "shakedown_manifest.json"
"""agents.vlm.lora.MANIFEST, read here without importing the model stack (peft and torch take ~11 s to import),
so a plan is checked in a blink; a test keeps the two names equal."""
STUDY_KINDS = ("run", "estimate")
"""Scenario studies accepted as evidence: a search over-samples failures, so its rate estimates nothing."""


class PlanError(ConfigError):
    """A plan that cannot run; the message names the file, the field and the fix."""


# -- policies ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """A policy a plan names."""

    spec: str
    """'default', 'expert', 'adapter:<dir>', 'python:<module>:<name>', or 'params' (an inline parameter set)."""
    params: tuple[tuple[str, float], ...] = ()
    """For 'params': the MPC parameters given (the others keep their defaults)."""
    id: str = ""
    """Its name in logs and reports (default: the spec)."""

    @property
    def label(self) -> str:
        return self.id or self.spec

    def build(self) -> Policy:
        """The policy itself (an adapter's model is loaded here, not when the plan is read)."""
        from agents.policies.car_expert import FixedParamsPolicy, ScriptedCarExpert

        if self.spec == "params":
            return FixedParamsPolicy(MPCParams.from_dict(dict(self.params)), policy_id=self.label, label=self.label)
        if self.spec == "default":
            return FixedParamsPolicy()
        if self.spec == "expert":
            return ScriptedCarExpert()
        if self.spec.startswith("adapter:"):
            from agents.vlm.loading import agent_from_adapter

            return agent_from_adapter(self.spec.split(":", 1)[1], "car", merge=True)
        from agents.policies.named import python_policy

        try:
            return python_policy(self.spec)
        except ConfigError as exc:
            raise PlanError(str(exc)) from None


def _policy(value: Any, field: str, task: str, base: Path) -> PolicySpec:
    if isinstance(value, Mapping):
        _keys(value, field, {"params", "id"}, {"params"})
        params = value["params"]
        if not isinstance(params, Mapping):
            raise PlanError(f"{field}.params must be a mapping of MPC parameter -> value")
        try:
            MPCParams.from_dict(params)
        except (ConfigError, TypeError, ValueError) as exc:
            raise PlanError(f"{field}.params: {exc}") from None
        return PolicySpec("params", tuple(sorted((str(k), float(v)) for k, v in params.items())),
                          str(value.get("id") or "params-" + _digest(dict(params))[:8]))
    if not isinstance(value, str) or not value:
        raise PlanError(f"{field} must be 'default', 'expert', 'adapter:<dir>', 'python:<module>:<name>' or "
                        f"{{params: {{...}}}}, got {value!r}")
    if value in ("default", "expert"):
        return PolicySpec(value)
    if value.startswith("adapter:"):
        folder = Path(value.split(":", 1)[1])
        folder = folder if folder.is_absolute() else base / folder
        manifest = folder / ADAPTER_MANIFEST
        if not manifest.exists():
            raise PlanError(f"{field}: {folder} has no {ADAPTER_MANIFEST}: not a Shakedown adapter")
        try:
            trained = json.loads(manifest.read_text()).get("task")
        except (ValueError, AttributeError) as exc:
            raise PlanError(f"{field}: {manifest} is not a manifest ({exc})") from None
        if trained != task:
            raise PlanError(f"{field}: adapter {folder} was trained for the {trained!r} task, not {task!r}; "
                            f"name an adapter trained for {task!r}")
        return PolicySpec(f"adapter:{folder}", id=value)
    if value.startswith("python:"):
        parts = value.split(":")
        if len(parts) != 3 or not all(parts[1:]):
            raise PlanError(f"{field}: {value!r} must read python:<module>:<name>")
        try:
            getattr(importlib.import_module(parts[1]), parts[2])
        except (ImportError, AttributeError) as exc:
            raise PlanError(f"{field}: cannot import {parts[2]!r} from {parts[1]!r} ({exc})") from None
        return PolicySpec(value)
    raise PlanError(f"{field}: unknown policy {value!r}; use 'default', 'expert', 'adapter:<dir>', "
                    "'python:<module>:<name>' or {params: {...}}")


# -- rungs ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Gate:
    """A measured condition a rung must meet to be promoted."""

    metric: str
    """A name from bridge.rollout.metrics.METRICS that the rung can measure."""
    threshold: float
    """The limit the metric is compared with."""
    comparison: str
    """'<=', '<', '>=' or '>' (default: '<=' for metrics where lower is better, '>=' otherwise)."""
    window_s: float = 0.0
    """Judge the last window_s seconds of the rung; a rung shorter than the window is inconclusive; 0: all of it."""
    min_samples: int = 1
    """Fewer samples (periods, decisions, episodes) in the window: inconclusive (none at all: the gate fails)."""
    on_inconclusive: str = "pause"
    """'pause' (an operator decides) or 'fail' (roll back)."""
    relative_to: str = ""
    """'' (the threshold is absolute) or 'incumbent': the metric minus the incumbent's value, measured while
    it drove the shadow rung, is compared with the threshold (task_error, relative_to incumbent, <= 0: no
    worse than what drives today)."""

    def holds(self, value: float) -> bool:
        return COMPARISONS[self.comparison](value, self.threshold)


@dataclasses.dataclass(frozen=True)
class Limits:
    """How much a rung may drive."""

    time_s: float = bounded(10.0, 0.2, 86400.0)
    """Seconds of driving after the first decision was applied."""
    distance_m: float = bounded(0.0, 0.0, 1e6)
    """Driven this far the car is stopped and the rung's data ends (m); 0: no limit."""
    area_s: tuple[float, ...] = ()
    """(s_start, s_end): the stretch of track the car may drive in (m); leaving it ends the rung's data."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.area_s and len(self.area_s) != 2:
            raise ConfigError(f"Limits.area_s = {self.area_s!r} must be [s_start, s_end]")


@dataclasses.dataclass(frozen=True)
class Rung:
    """One rung of the ladder."""

    name: str
    """sim, shadow, guarded, canary or full."""
    gates: tuple[Gate, ...]
    """All must pass to promote."""
    limits: Limits = Limits()
    """How much it drives."""
    envelope: CarSafetySpec = CarSafetySpec()
    """The robot-side shield's limits on this rung."""
    envelope_overrides: tuple[tuple[str, Any], ...] = ()
    """The envelope as the plan wrote it (for the record)."""
    confirm: str = "none"
    """What a flagged decision needs: none, auto-approve, auto-deny or prompt."""
    flag_distance: float = 0.0
    """Also flag a decision whose parameters lie further than this from the incumbent's (0..1); 0: off."""
    evidence: str = ""
    """Sim: a scenario campaign's results file (StudyResult JSON)."""
    evidence_values: tuple[tuple[str, float], ...] = ()
    """What the evidence says (scenario_failure_rate, scenario_robustness_min, scenario_episodes)."""
    evidence_sha256: str = ""


@dataclasses.dataclass(frozen=True)
class RobotSpec:
    """The robot the rungs run on: the emulator, in this process or its own."""

    process: str = "in-process"
    """'in-process' (a thread-free call in this process) or 'subprocess' (python -m bridge.rollout.session)."""
    gap: RealityGap = RealityGap()
    """The emulator's declared reality gap (the sim rung runs without it)."""
    seed: int = 0
    """Seeds the emulated car's noise."""
    start_s: float = 0.0
    """Where the car starts on the track (m)."""
    decide_every_s: float = bounded(1.0, 0.05, 600.0)
    """A fresh observation (and decision) this often."""
    control_hz: float = bounded(20.0, 5.0, 100.0)
    """The robot's control rate."""
    max_wait_s: float = bounded(30.0, 0.5, 3600.0)
    """A rung whose first decision does not come within this long ends with the car unmoved."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.process not in ("in-process", "subprocess"):
            raise ConfigError(f"robot.process {self.process!r} must be 'in-process' or 'subprocess'")


@dataclasses.dataclass(frozen=True)
class RolloutPlan:
    """A whole plan, validated."""

    name: str
    """Names the rollout in logs and reports."""
    candidate: PolicySpec
    """The policy that climbs the ladder."""
    incumbent: PolicySpec
    """What drives today; it drives in shadow, replaces denied decisions, and stays after a rollback."""
    rungs: tuple[Rung, ...]
    """In ladder order, ending at full."""
    instruction: str = "Drive at 2 m/s."
    """What the car is asked to do on every rung."""
    track: str = "oval"
    """The map."""
    task: str = "car"
    """The task the policies serve (only the car drives over the bridge's emulator)."""
    robot: RobotSpec = RobotSpec()
    """The robot the rungs run on."""
    band: tuple[tuple[str, float], ...] = ()
    """(metric, width): on every rung after sim, the metric must lie within +-width of its sim value."""
    plan_hash: str = ""
    """SHA-256 of the plan's content (canonical JSON): every decision names it."""
    source: str = ""
    """The file it was read from."""
    content: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    """The plan as read (recorded in the rollout's first log entry)."""

    def rung(self, name: str) -> Rung:
        return next(r for r in self.rungs if r.name == name)

    def next_rung(self, name: str) -> str | None:
        names = [r.name for r in self.rungs]
        i = names.index(name)
        return names[i + 1] if i + 1 < len(names) else None


# -- reading -------------------------------------------------------------------------------------
def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _keys(data: Any, field: str, allowed: set[str], required: set[str] = frozenset()) -> None:
    if not isinstance(data, Mapping):
        raise PlanError(f"{field} must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise PlanError(f"{field}: unknown field(s) {unknown}; valid: {sorted(allowed)}")
    missing = sorted(required - set(data))
    if missing:
        raise PlanError(f"{field}: missing {missing}")


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PlanError(f"{field} = {value!r} must be a finite number")
    return float(value)


def _gate(data: Any, field: str, rung: str, after_shadow: bool) -> Gate:
    _keys(data, field, {"metric", "threshold", "comparison", "window_s", "min_samples", "on_inconclusive",
                        "relative_to"})
    metric = data.get("metric")
    if metric not in METRICS:
        raise PlanError(f"{field}.metric: unknown metric {metric!r}; known: {sorted(METRICS)}")
    if rung not in METRICS[metric].rungs:
        raise PlanError(f"{field}.metric: {metric!r} cannot be measured on the {rung} rung (only on "
                        f"{', '.join(METRICS[metric].rungs)})")
    if data.get("threshold") is None:
        raise PlanError(f"{field}.threshold: the gate on {metric!r} has no threshold; every gate needs one")
    threshold = _number(data["threshold"], f"{field}.threshold")
    comparison = data.get("comparison", "<=" if METRICS[metric].better == "lower" else ">=")
    if comparison not in COMPARISONS:
        raise PlanError(f"{field}.comparison {comparison!r} must be one of {list(COMPARISONS)}")
    window = _number(data.get("window_s", 0.0), f"{field}.window_s")
    if window < 0:
        raise PlanError(f"{field}.window_s = {window} must be >= 0 (0: the whole rung)")
    min_samples = data.get("min_samples", 1)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise PlanError(f"{field}.min_samples = {min_samples!r} must be a whole number >= 1")
    on_inconclusive = data.get("on_inconclusive", "pause")
    if on_inconclusive not in ON_INCONCLUSIVE:
        raise PlanError(f"{field}.on_inconclusive {on_inconclusive!r} must be 'pause' or 'fail'")
    relative_to = data.get("relative_to", "")
    if relative_to not in ("", "incumbent"):
        raise PlanError(f"{field}.relative_to {relative_to!r} must be 'incumbent' (or left out: an absolute threshold)")
    if relative_to and (metric not in DRIVE_METRICS or not after_shadow):
        raise PlanError(f"{field}.relative_to: the incumbent's values are its drive's metrics ({list(DRIVE_METRICS)}), "
                        "measured while it drives the shadow rung; such a gate needs a shadow rung before it")
    return Gate(metric, threshold, comparison, window, min_samples, on_inconclusive, relative_to)


def _envelope(data: Any, field: str) -> tuple[CarSafetySpec, tuple[tuple[str, Any], ...]]:
    if not data:
        return CarSafetySpec(), ()
    _keys(data, field, set(ENVELOPE_FIELDS))
    try:
        spec = CarSafetySpec.from_dict(data)
    except (ConfigError, TypeError) as exc:
        raise PlanError(f"{field}: {exc}") from None
    base = CarSafetySpec()
    for name, tighter in TIGHTER.items():
        if name in data and not tighter(getattr(spec, name), getattr(base, name)):
            raise PlanError(f"{field}.{name} = {getattr(spec, name)} loosens the robot's own limit "
                            f"({getattr(base, name)}); an envelope may only tighten the shield")
    return spec, tuple(sorted((k, _plain(v)) for k, v in data.items()))


def _plain(value: Any) -> Any:
    """Hashable, JSON-ready copies of YAML values (zones are lists of mappings)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _plain(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def _limits(data: Any, field: str) -> Limits:
    if data is None:
        return Limits()
    _keys(data, field, {"time_s", "distance_m", "area_s"})
    if "area_s" in data and not isinstance(data["area_s"], list):
        raise PlanError(f"{field}.area_s must be a list [s_start, s_end]")
    values = {k: (tuple(_number(x, f"{field}.{k}") for x in v) if k == "area_s" else _number(v, f"{field}.{k}"))
              for k, v in data.items()}
    try:
        return Limits(**values)
    except ConfigError as exc:
        raise PlanError(f"{field}: {exc}") from None


def read_evidence(path: Path, candidate: PolicySpec, field: str) -> tuple[tuple[tuple[str, float], ...], str]:
    """What a scenario campaign's results file (scenarios.study.StudyResult as JSON) says about the candidate."""
    if not path.exists():
        raise PlanError(f"{field}: {path} does not exist; give a results file of `shakedown scenario run|estimate`")
    raw = path.read_bytes()
    try:
        study = json.loads(raw)
    except ValueError as exc:
        raise PlanError(f"{field}: {path} is not JSON ({exc})") from None
    if not isinstance(study, dict) or not {"scenario", "kind", "episodes", "text"} <= set(study):
        raise PlanError(f"{field}: {path} is not a scenario study's results (needs scenario, kind, episodes, text)")
    if study["kind"] not in STUDY_KINDS:
        raise PlanError(f"{field}: {path} holds a {study['kind']!r} study; a search over-samples failures, so give "
                        f"a {' or '.join(STUDY_KINDS)} study as evidence")
    scenario = yaml.safe_load(study["text"]) or {}
    world = (scenario.get("world") or {}).get("kind")
    policy = (scenario.get("system") or {}).get("policy", "default")
    if world != "car":
        raise PlanError(f"{field}: {path} is a {world!r} scenario; a car rollout needs car evidence")
    if policy not in (candidate.spec, candidate.label):
        raise PlanError(f"{field}: {path} tested policy {policy!r}, not the candidate {candidate.label!r}; "
                        "evidence must be about the candidate")
    valid = [e for e in study["episodes"] if e.get("valid") and e.get("error") is None]
    if not valid:
        raise PlanError(f"{field}: {path} holds no valid episode; run the campaign first")
    values = {"scenario_episodes": float(len(valid)),
              "scenario_robustness_min": min(float(e["robustness"]) for e in valid)}
    if study["kind"] == "estimate" and study.get("estimate"):
        values["scenario_failure_rate"] = float(study["estimate"]["p"])
    else:
        values["scenario_failure_rate"] = sum(bool(e.get("failed")) for e in valid) / len(valid)
    return tuple(sorted(values.items())), hashlib.sha256(raw).hexdigest()


def _rung(data: Any, i: int, previous: int, candidate: PolicySpec, base: Path) -> tuple[Rung, int]:
    name = data.get("name") if isinstance(data, Mapping) else None
    field = f"rungs[{i}]" + (f" ({name})" if name else "")
    _keys(data, field, {"name", "gates", "limits", "envelope", "confirm", "flag_distance", "evidence"}, {"name"})
    if name not in RUNGS:
        raise PlanError(f"{field}.name {name!r} is not a rung; the ladder is {' -> '.join(RUNGS)}")
    order = RUNGS.index(name)
    if order <= previous:
        raise PlanError(f"{field}: rung {name!r} is out of order (after {RUNGS[previous]!r}); rungs climb "
                        f"{' -> '.join(RUNGS)}, each at most once")
    gates_data = data.get("gates") or []
    if not isinstance(gates_data, list) or not gates_data:
        raise PlanError(f"{field}.gates: a rung needs at least one gate (a rung with none would pass by default)")
    gates = tuple(_gate(g, f"{field}.gates[{k}]", name, previous >= RUNGS.index(SHADOW))
                  for k, g in enumerate(gates_data))
    envelope, overrides = _envelope(data.get("envelope"), f"{field}.envelope")
    confirm = data.get("confirm", "none")
    if confirm not in CONFIRM_MODES:
        raise PlanError(f"{field}.confirm {confirm!r} must be one of {list(CONFIRM_MODES)}")
    if confirm != "none" and name not in APPLIED:
        raise PlanError(f"{field}.confirm: on {name} the candidate's decisions never reach the robot; confirmation "
                        f"applies on {', '.join(APPLIED)}")
    flag_distance = _number(data.get("flag_distance", 0.0), f"{field}.flag_distance")
    if not 0 <= flag_distance <= 1:
        raise PlanError(f"{field}.flag_distance = {flag_distance} must lie in [0, 1] (0: off)")
    evidence, values, sha = str(data.get("evidence") or ""), (), ""
    if evidence:
        if name != SIM:
            raise PlanError(f"{field}.evidence: only the sim rung takes a scenario campaign's results")
        path = Path(evidence) if Path(evidence).is_absolute() else base / evidence
        values, sha = read_evidence(path, candidate, f"{field}.evidence")
        evidence = str(path)
    for k, gate in enumerate(gates):
        if gate.metric.startswith("scenario_") and not evidence:
            raise PlanError(f"{field}.gates[{k}]: {gate.metric!r} comes from a scenario campaign; give its results "
                            f"as {field}.evidence")
    return Rung(name, gates, _limits(data.get("limits"), f"{field}.limits"), envelope, overrides, confirm,
                flag_distance, evidence, values, sha), order


def plan_from_dict(data: Any, source: str = "<plan>", base: Path | None = None) -> RolloutPlan:
    """A validated plan from parsed YAML; PlanError naming the field otherwise."""
    base = base or Path(".")
    top = {"name", "candidate", "incumbent", "rungs", "instruction", "track", "task", "robot", "band"}
    _keys(data, "plan", top, {"name", "candidate", "incumbent", "rungs"})
    task = data.get("task", "car")
    if task != "car":
        raise PlanError(f"task {task!r}: rollouts drive the car emulator; only the 'car' task is supported")
    from agents.tasks.car.instructions import parse_instruction

    instruction = data.get("instruction", "Drive at 2 m/s.")
    try:
        parse_instruction(instruction)
        load_track(str(data.get("track", "oval")))
    except ConfigError as exc:
        raise PlanError(f"instruction/track: {exc}") from None
    candidate = _policy(data["candidate"], "candidate", task, base)
    incumbent = _policy(data["incumbent"], "incumbent", task, base)
    if (candidate.spec, candidate.params) == (incumbent.spec, incumbent.params):
        raise PlanError(f"candidate and incumbent are the same policy ({candidate.label}); a rollout replaces one "
                        "policy by another")
    robot_data = dict(data.get("robot") or {})
    _keys(robot_data, "robot", {f.name for f in dataclasses.fields(RobotSpec)})
    for key, value in robot_data.items():
        if key not in ("process", "gap"):
            robot_data[key] = int(_number(value, f"robot.{key}")) if key == "seed" else _number(value, f"robot.{key}")
    try:
        gap = from_mapping(RealityGap, robot_data.pop("gap", None) or {})
        robot = RobotSpec(gap=gap, **robot_data)
    except (ConfigError, TypeError) as exc:
        raise PlanError(f"robot: {exc}") from None
    rungs_data = data["rungs"]
    if not isinstance(rungs_data, list) or not rungs_data:
        raise PlanError("rungs: give the rungs as a list, in ladder order, ending at full")
    rungs, previous = [], -1
    for i, item in enumerate(rungs_data):
        rung, previous = _rung(item, i, previous, candidate, base)
        rungs.append(rung)
    if rungs[-1].name != "full":
        raise PlanError(f"rungs: the last rung is {rungs[-1].name!r}; a ladder ends at 'full' (that is what the "
                        "candidate is promoted to)")
    band_data = data.get("band") or {}
    if not isinstance(band_data, Mapping):
        raise PlanError("band must be a mapping of metric -> width (real within +-width of sim)")
    band = []
    for metric, width in band_data.items():
        if metric not in DRIVE_METRICS:
            raise PlanError(f"band.{metric}: only the drive's metrics compare between sim and the robot: "
                            f"{list(DRIVE_METRICS)}")
        width = _number(width, f"band.{metric}")
        if width < 0:
            raise PlanError(f"band.{metric} = {width} must be >= 0")
        band.append((str(metric), width))
    if band and rungs[0].name != SIM:
        raise PlanError("band: a sim-to-real band needs a sim rung to measure the sim values")
    if band and all(r.name in (SIM, SHADOW) for r in rungs):
        raise PlanError("band: no rung after sim drives the candidate, so nothing is compared with sim")
    return RolloutPlan(str(data["name"]), candidate, incumbent, tuple(rungs), instruction, str(data.get("track", "oval")),
                       task, robot, tuple(band), _digest(data), source, json.loads(json.dumps(data, default=str)))


def load_plan(path: Path | str) -> RolloutPlan:
    """Read and validate a plan file; every error names the file and the field."""
    path = Path(path)
    if not path.exists():
        raise PlanError(f"{path}: no such plan file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PlanError(f"{path}: not valid YAML ({exc})") from None
    try:
        return plan_from_dict(data, str(path), path.parent)
    except PlanError as exc:
        raise PlanError(f"{path}: {exc}") from None
