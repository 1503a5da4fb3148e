"""Scenario files (YAML) -> validated `Scenario`s, with errors that name file, line and field.

Everything is checked before any episode runs: unknown fields, parameter paths the twin
does not have, ranges outside a field's declared bounds (through the twin's own
`Randomizer`), unknown actions, action parameters and channels, triggers on unknown
signals, monitors that do not parse, adapters that do not exist.

A distribution is written `{uniform: [low, high]}`, `{normal: {mean, std, low, high}}` or
`{choice: [a, b, c]}`; a plain number is a constant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from scenarios.spec import DisturbanceSpec, EventSpec, Scenario, SystemSpec, Trigger, Value, WorldSpec
from scenarios.stl import FormulaError, parse
from scenarios.worlds import WORLDS, WorldDecl
from twin.core.config import ConfigError
from twin.core.randomization import Choice, Normal, Randomizer, Term, Uniform

LIBRARY = Path(__file__).parent / "library"
"""The shipped rare-event scenarios, one folder per world."""


class ScenarioError(ValueError):
    """A scenario file is invalid; the message names file, line and field."""


class _Node(dict):
    """A YAML mapping that remembers the line of each key."""

    def __init__(self, line: int = 1) -> None:
        super().__init__()
        self.line, self.lines = line, {}


class _List(list):
    line: int = 0
    lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> _Node:
    loader.flatten_mapping(node)
    out = _Node(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise ScenarioError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice")
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> _List:
    out = _List(loader.construct_object(child, deep=True) for child in node.value)
    out.line, out.lines = node.start_mark.line + 1, [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


class _Reader:
    """Reads fields of one file, turning every problem into a ScenarioError at a line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, line: int, field: str, message: str) -> ScenarioError:
        return ScenarioError(f"{self.source}:{line}: {field}: {message}")

    def mapping(self, node: Any, field: str, line: int, allowed: set[str], required: set[str] = frozenset()) -> _Node:
        if not isinstance(node, Mapping):
            raise self.fail(line, field, f"expected a mapping of keys, got {type(node).__name__}")
        unknown = sorted(set(node) - allowed)
        if unknown:
            key = unknown[0]
            raise self.fail(node.lines.get(key, line), f"{field}.{key}" if field else key,
                            f"unknown field; valid: {sorted(allowed)}")
        missing = sorted(required - set(node))
        if missing:
            raise self.fail(getattr(node, "line", line), field or "scenario", f"missing required field(s) {missing}")
        return node

    def number(self, value: Any, field: str, line: int) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(line, field, f"{value!r} must be a number")
        return float(value)

    def value(self, node: Any, field: str, line: int) -> Value:
        """A constant or a distribution."""
        if not isinstance(node, Mapping):
            return self.number(node, field, line)
        if len(node) != 1:
            raise self.fail(line, field, "a distribution is one of {uniform: [lo, hi]}, {normal: {mean, std, low, high}}, "
                                         "{choice: [...]}")
        (kind, args), = node.items()
        try:
            if kind == "uniform":
                if not isinstance(args, list) or len(args) != 2:
                    raise self.fail(line, field, "uniform takes [low, high]")
                return Uniform(*(self.number(a, field, line) for a in args))
            if kind == "normal":
                args = self.mapping(args, f"{field}.normal", line, {"mean", "std", "low", "high"}, {"mean", "std", "low", "high"})
                return Normal(**{k: self.number(v, f"{field}.normal.{k}", line) for k, v in args.items()})
            if kind == "choice":
                if not isinstance(args, list) or not args:
                    raise self.fail(line, field, "choice takes a non-empty list of numbers")
                return Choice(tuple(self.number(a, field, line) for a in args))
        except ConfigError as exc:
            raise self.fail(line, field, str(exc)) from None
        raise self.fail(line, field, f"unknown distribution {kind!r}; use uniform, normal or choice")

    def formula(self, text: Any, field: str, line: int, world: WorldDecl) -> str:
        if not isinstance(text, str):
            raise self.fail(line, field, f"expected a formula string, got {text!r}")
        try:
            parse(text, known_signals=world.signals)
        except FormulaError as exc:
            raise self.fail(line, field, str(exc)) from None
        return text


def _replay(r: _Reader, s: _Node, world: WorldSpec) -> tuple[tuple[float, ...], tuple[tuple[float, float], ...]]:
    """A recorded drive to play back (policy 'replay'): the start state and one command per control period."""
    if s.get("policy") != "replay":
        if "replay" in s:
            raise r.fail(s.lines["replay"], "system.replay", "only the 'replay' policy plays a recording back")
        return (), ()
    if world.kind != "car":
        raise r.fail(s.lines["policy"], "system.policy", "'replay' plays back a car's recording")
    node = r.mapping(s.get("replay"), "system.replay", s.lines.get("replay", s.line), {"start", "commands"},
                     {"start", "commands"})
    start_node = r.mapping(node["start"], "system.replay.start", node.lines["start"], {"x", "y", "yaw", "v", "steer"},
                           {"x", "y", "yaw", "v", "steer"})
    start = tuple(r.number(start_node[k], f"system.replay.start.{k}", node.lines["start"]) for k in ("x", "y", "yaw", "v",
                                                                                                        "steer"))
    rows = node["commands"]
    if not isinstance(rows, list) or not rows or not all(isinstance(c, list) and len(c) == 2 for c in rows):
        raise r.fail(node.lines["commands"], "system.replay.commands", "expected a non-empty list of [speed, steer] pairs")
    commands = tuple((r.number(a, "system.replay.commands", node.lines["commands"]),
                      r.number(b, "system.replay.commands", node.lines["commands"])) for a, b in rows)
    return start, commands


def _check_policy(r: _Reader, policy: str, world: WorldDecl, line: int) -> None:
    if policy.startswith("adapter:"):
        if world.kind != "car":
            raise r.fail(line, "system.policy", "adapters drive the car only")
        path = Path(policy.removeprefix("adapter:"))
        if not path.is_dir():
            raise r.fail(line, "system.policy", f"adapter directory {str(path)!r} does not exist")
        return
    if policy.startswith("python:"):
        if policy.count(":") != 2:
            raise r.fail(line, "system.policy", "write a Python policy as 'python:<module>:<name>'")
        return
    named = [p for p in world.policies if "<" not in p]
    if policy not in named:
        raise r.fail(line, "system.policy", f"unknown policy {policy!r}; choose from {named}, 'adapter:<dir>' or "
                                            "'python:<module>:<name>'")


def _nominal(r: _Reader, node: Any, line: int, world: WorldDecl) -> tuple[tuple[str, Value], ...]:
    if node is None:
        return ()
    if not isinstance(node, Mapping):
        raise r.fail(line, "nominal", "expected a mapping of twin parameter path -> distribution or constant")
    out = []
    for path, spec in node.items():
        at = node.lines[path]
        value = r.value(spec, f"nominal.{path}", at)
        # The twin's own randomization validates the path and the range: one mechanism, not a second one.
        dist = value if not isinstance(value, float) else Choice((value,))
        try:
            Randomizer(world.params_root, [Term(str(path), dist)])
        except ConfigError as exc:
            raise r.fail(at, f"nominal.{path}", str(exc)) from None
        out.append((str(path), value))
    return tuple(out)


def _events(r: _Reader, node: Any, line: int, world: WorldDecl) -> tuple[EventSpec, ...]:
    if node is None:
        return ()
    if not isinstance(node, list):
        raise r.fail(line, "events", "expected a list of events")
    events = []
    for i, item in enumerate(node):
        at = node.lines[i]
        item = r.mapping(item, f"events[{i}]", at, {"name", "trigger", "action", "with"}, {"name", "trigger", "action"})
        name = str(item["name"])
        trig = r.mapping(item["trigger"], f"events[{i}].trigger", item.lines["trigger"], {"when", "edge", "delay_s"}, {"when"})
        when = r.formula(trig["when"], f"events[{i}].trigger.when", trig.lines["when"], world)
        try:
            trigger = Trigger(when, str(trig.get("edge", "rising")),
                              r.number(trig.get("delay_s", 0.0), f"events[{i}].trigger.delay_s", trig.line))
        except ConfigError as exc:
            raise r.fail(trig.line, f"events[{i}].trigger", str(exc)) from None
        action = world.actions.get(item["action"])
        if action is None:
            raise r.fail(item.lines["action"], f"events[{i}].action",
                         f"unknown {world.kind} action {item['action']!r}; choose from {sorted(world.actions)}")
        params = []
        given = item.get("with") or {}
        if given and not isinstance(given, Mapping):
            raise r.fail(item.lines["with"], f"events[{i}].with", "expected a mapping of action parameter -> value")
        for key, spec in given.items():
            decl = action.param(key)
            field = f"events[{i}].with.{key}"
            if decl is None:
                raise r.fail(given.lines[key], field, f"action {action.name!r} has no parameter {key!r}; valid: "
                                                      f"{[p.name for p in action.params]}")
            value = r.value(spec, field, given.lines[key])
            low, high = (value, value) if isinstance(value, float) else value.support()
            if low < decl.low or high > decl.high:
                raise r.fail(given.lines[key], field, f"range [{low}, {high}] leaves the parameter's valid range "
                                                      f"[{decl.low}, {decl.high}] ({decl.doc})")
            params.append((key, value))
        events.append(EventSpec(name, trigger, action.name, tuple(params)))
    return tuple(events)


def _disturbances(r: _Reader, node: Any, line: int, world: WorldDecl) -> tuple[DisturbanceSpec, ...]:
    if node is None:
        return ()
    if not isinstance(node, list):
        raise r.fail(line, "disturbances", "expected a list of channels")
    out = []
    for i, item in enumerate(node):
        at = node.lines[i]
        item = r.mapping(item, f"disturbances[{i}]", at, {"channel", "std", "segments", "white_std"}, {"channel"})
        if item["channel"] not in world.channels:
            raise r.fail(item.lines["channel"], f"disturbances[{i}].channel",
                         f"unknown {world.kind} channel {item['channel']!r}; choose from {sorted(world.channels)}")
        segments = item.get("segments", 4)
        if isinstance(segments, bool) or not isinstance(segments, int):
            raise r.fail(item.lines.get("segments", at), f"disturbances[{i}].segments", f"{segments!r} must be an integer")
        try:
            out.append(DisturbanceSpec(item["channel"], r.number(item.get("std", 0.0), f"disturbances[{i}].std", at),
                                       segments, r.number(item.get("white_std", 0.0), f"disturbances[{i}].white_std", at)))
        except ConfigError as exc:
            raise r.fail(at, f"disturbances[{i}]", str(exc)) from None
    return tuple(out)


def _formulas(r: _Reader, node: Any, field: str, line: int, world: WorldDecl) -> tuple[tuple[str, str], ...]:
    if node is None:
        return ()
    if not isinstance(node, Mapping):
        raise r.fail(line, field, "expected a mapping of name -> formula")
    return tuple((str(k), r.formula(v, f"{field}.{k}", node.lines[k], world)) for k, v in node.items())


def load_text(text: str, source: str = "<text>") -> Scenario:
    """A scenario from YAML text; `source` names it in errors."""
    r = _Reader(source)
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except ScenarioError as exc:
        raise ScenarioError(f"{source}:{str(exc).removeprefix('line ')}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ScenarioError(f"{source}:{mark.line + 1 if mark else '?'}: not valid YAML: "
                            f"{getattr(exc, 'problem', exc)}") from None
    doc = r.mapping(doc, "", 1, {"name", "description", "world", "system", "nominal", "events", "disturbances",
                                  "validity", "monitors"}, {"name", "world", "monitors"})
    w = r.mapping(doc["world"], "world", doc.lines["world"],
                  {"kind", "track", "duration_s", "control_hz", "lidar", "randomize_rest", "params_file"}, {"kind"})
    decl = WORLDS.get(w["kind"])
    if decl is None:
        raise r.fail(w.lines["kind"], "world.kind", f"unknown world {w['kind']!r}; choose from {sorted(WORLDS)}")
    try:
        world = WorldSpec(**{k: (r.number(v, f"world.{k}", w.lines[k]) if k in ("duration_s", "control_hz") else v)
                             for k, v in w.items()})
    except (ConfigError, TypeError) as exc:
        raise r.fail(w.line, "world", str(exc)) from None
    if world.kind == "car":
        from twin.car.tracks import load_track

        try:
            load_track(world.track)
        except (ConfigError, ValueError, KeyError) as exc:
            raise r.fail(w.lines.get("track", w.line), "world.track", str(exc)) from None
    s = r.mapping(doc.get("system") or _Node(), "system", doc.lines.get("system", 1),
                  {"policy", "instruction", "shield", "safety", "obstacles", "replay"})
    start, commands = _replay(r, s, world)
    system = SystemSpec(policy=str(s.get("policy", "default" if world.kind == "car" else "heuristic")),
                        instruction=str(s.get("instruction", SystemSpec.instruction)), shield=bool(s.get("shield", True)),
                        safety=tuple((s.get("safety") or {}).items()),
                        obstacles=tuple(tuple(float(v) for v in ob) for ob in (s.get("obstacles") or ())),
                        start=start, commands=commands)
    _check_policy(r, system.policy, decl, s.lines.get("policy", s.line))
    _check_safety(r, system, decl, s)
    nominal = _nominal(r, doc.get("nominal"), doc.lines.get("nominal", 1), decl)
    if world.params_file:
        declared = {path for path, _ in nominal}
        nominal = tuple(item for item in _params_file(r, world.params_file, source, w.lines["params_file"], decl)
                        if item[0] not in declared) + nominal
    try:
        return Scenario(
            name=str(doc["name"]), description=str(doc.get("description", "")).strip(), world=world, system=system,
            nominal=nominal,
            events=_events(r, doc.get("events"), doc.lines.get("events", 1), decl),
            disturbances=_disturbances(r, doc.get("disturbances"), doc.lines.get("disturbances", 1), decl),
            validity=_formulas(r, doc.get("validity"), "validity", doc.lines.get("validity", 1), decl),
            monitors=_formulas(r, doc.get("monitors"), "monitors", doc.lines.get("monitors", 1), decl),
            source=source)
    except ConfigError as exc:
        raise r.fail(doc.line, "scenario", str(exc)) from None


def _params_file(r: _Reader, name: str, source: str, line: int, world: WorldDecl) -> tuple[tuple[str, Value], ...]:
    """The `params:` of a calibrated twin config, as nominal constants (validated like the scenario's own)."""
    path = Path(name)
    if not path.is_absolute() and source not in ("<text>", "<campaign>"):
        path = Path(source).parent / path
    if not path.exists():
        raise r.fail(line, "world.params_file", f"{str(path)!r} does not exist (write one with `shakedown calibrate`)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise r.fail(line, "world.params_file", f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("params"), Mapping):
        raise r.fail(line, "world.params_file", f"{path} has no `params:` mapping of twin parameter path -> value")
    out = []
    for key, value in data["params"].items():
        constant = r.number(value, f"world.params_file {path}: params.{key}", line)
        try:
            Randomizer(world.params_root, [Term(str(key), Choice((constant,)))])
        except ConfigError as exc:
            raise r.fail(line, f"world.params_file {path}: params.{key}", str(exc)) from None
        out.append((str(key), constant))
    return tuple(out)


def _check_safety(r: _Reader, system: SystemSpec, decl: WorldDecl, node: _Node) -> None:
    from scenarios.systems import safety_spec

    try:
        safety_spec(decl.kind, system)
    except (ConfigError, TypeError) as exc:
        raise r.fail(node.lines.get("safety", node.line), "system.safety", str(exc)) from None


def load(path: str | Path) -> Scenario:
    """A scenario from a file, or by name from the shipped library ('car/friction-drop')."""
    p = Path(path)
    if not p.exists():
        candidate = LIBRARY / (str(path) if str(path).endswith(".yaml") else f"{path}.yaml")
        if not candidate.exists():
            raise ScenarioError(f"{path}: no such scenario file, and no library scenario of that name; "
                                f"see `shakedown scenario list`")
        p = candidate
    return load_text(p.read_text(), str(p))


def library() -> list[Path]:
    """The shipped scenario files, car first."""
    return sorted(LIBRARY.glob("*/*.yaml"))


def library_name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def as_dict(scenario: Scenario) -> dict:
    """A JSON-ready dict of a scenario (distributions as their dataclass fields)."""
    return dataclasses.asdict(scenario)
