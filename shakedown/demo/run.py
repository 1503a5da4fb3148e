"""`shakedown demo`: the whole story in one run, one console and one HTML report.

The car (the default): 1. the twin, the agent and the shield; 2. a rare event searched,
estimated, shrunk and kept as a regression test; 3. the bridge to the emulated robot, the twin
calibrated from its recording, the shipped adapter up the rollout ladder and a link fault;
4. every signed log verified, witnessed and indexed. `--world factory`: the line, the
person walking into the cell during a jam through the same scenario machinery, and the audit.
No server is started by hand: the policy servers and the emulator processes start and stop here,
on loopback. `--only` runs a subset (the audit part always covers the logs of the parts run).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import tyro
from rich.console import Console
from rich.rule import Rule

from safety.audit import keys
from safety.audit.log import AuditLog
from scenarios.loader import load
from shakedown.demo.audit import audit_part
from shakedown.demo.drive import SHIPPED_ADAPTER, drive_part, shipped_agent
from shakedown.demo.line import line_part
from shakedown.demo.part import Part, SignedLog
from shakedown.demo.robot import RobotSettings, robot_part
from shakedown.demo.scenarios import ScenarioSettings, scenario_part
from shakedown.report import HtmlReport
from twin.car.tracks import HELD_OUT, load_track
from twin.core.config import ConfigError, bounded, check_bounds

CAR_PARTS = ("drive", "scenarios", "robot", "audit")
FACTORY_PARTS = ("line", "scenarios", "audit")


def _check_parts(name: str, parts: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    unknown = [p for p in parts if p not in allowed]
    if unknown or not parts:
        raise ConfigError(f"{name}.only {parts!r}: choose one or more of {', '.join(allowed)}")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The car demo: the twin, the agent and the shield; a rare event; the bridge and the rollout; the audit."""

    track: str = HELD_OUT[0]
    """Track of part 1: a name or procedural-<seed> (a held-out one by default)."""
    episodes_per_category: Annotated[int, tyro.conf.arg(name="episodes")] = bounded(1, 1, 10_000)
    """Randomized episodes per instruction category in part 1."""
    duration_s: Annotated[float, tyro.conf.arg(name="duration")] = bounded(8.0, 0.5, 600.0)
    """Simulated seconds per drive in part 1."""
    stress_episodes: int = bounded(1, 1, 10_000)
    """Episodes of the reckless driver, each with and without the shield."""
    stress_steps: int = bounded(400, 10, 1_000_000)
    """Control steps (50 Hz) per reckless episode."""
    vlm: bool = True
    """Run the VLM agent with the shipped adapter (agents/adapters/car) in part 1 and up the ladder in part 3;
    --no-vlm (or no shipped adapter): the scripted expert takes its place up the ladder."""
    scenario: str = "car/box-after-bend"
    """Part 2's shipped scenario (shakedown scenario list)."""
    study: ScenarioSettings = ScenarioSettings()
    """Part 2's study: the search budget, the estimator and its episodes, the worker processes."""
    record_s: float = bounded(8.0, 6.0, 600.0)
    """Seconds of the recorded session the twin is calibrated from (part 3; at least 6: 2 s segments, some held
    out)."""
    rung_s: float = bounded(4.0, 1.0, 600.0)
    """Seconds each rung of the ladder drives (part 3)."""
    fault_s: float = bounded(6.0, 2.0, 600.0)
    """Seconds of the link-fault session (part 3)."""
    cut_s: float = bounded(1.5, 0.6, 60.0)
    """How long the link is cut (longer than the robot's 0.5 s silence timeout)."""
    only: tuple[str, ...] = CAR_PARTS
    """Run only these parts (the audit part covers the logs of the parts that ran)."""
    seed: int = 0
    """Base seed; the same seed gives the same tables."""
    out_dir: Annotated[Path, tyro.conf.arg(name="out")] = Path("runs")
    """Where the run folder is created."""

    def __post_init__(self) -> None:
        check_bounds(self)
        load_track(self.track)
        load(self.scenario)
        _check_parts("DemoConfig", self.only, CAR_PARTS)


@dataclasses.dataclass(frozen=True)
class FactoryDemoConfig:
    """The factory demo: the inspection line with its rare events; a person entering the cell during a jam,
    searched, estimated, shrunk and kept; the audit."""

    episodes: int = bounded(2, 1, 10_000)
    """Randomized episodes per inspector."""
    parts_per_episode: Annotated[int, tyro.conf.arg(name="parts")] = bounded(8, 1, 10_000)
    """Parts inspected per episode."""
    vlm: bool = True
    """Also run the VLM inspector with the shipped adapter (agents/adapters/factory) in part 1; --no-vlm (or no
    shipped adapter): the heuristic and the scripted expert only."""
    scenario: str = "factory/person-enters-during-jam"
    """Part 2's shipped scenario (shakedown scenario list)."""
    study: ScenarioSettings = ScenarioSettings(budget=12, estimator="ce-is", per_stage=30, max_stages=4, final=40)
    """Part 2's study: here cross-entropy importance sampling, the person's margin is a gradient it follows."""
    only: tuple[str, ...] = FACTORY_PARTS
    """Run only these parts (the audit part covers the logs of the parts that ran)."""
    seed: int = 0
    """Base seed; the same seed gives the same tables."""
    out_dir: Annotated[Path, tyro.conf.arg(name="out")] = Path("runs")
    """Where the run folder is created."""

    def __post_init__(self) -> None:
        check_bounds(self)
        load(self.scenario)
        _check_parts("FactoryDemoConfig", self.only, FACTORY_PARTS)


class _Runner:
    """Runs parts in order, each under its own heading, and prints its tables as it ends."""

    def __init__(self, console: Console, run_dir: Path) -> None:
        self.console, self.run_dir, self.parts = console, run_dir, []
        self.started = time.perf_counter()

    def __call__(self, title: str, run: Callable[[], Part]) -> Part:
        self.console.print(Rule(f"[bold]{title}"))
        started = time.perf_counter()
        part = run()
        part.seconds = time.perf_counter() - started
        for table in part.tables:
            self.console.print(table.rich())
        self.console.print(f"[dim]{title}: {part.seconds:.0f} s[/]")
        self.parts.append(part)
        return part

    def finish(self, title: str, config: object) -> Path:
        total = time.perf_counter() - self.started
        report = write_report(title, self.parts, self.run_dir, total)
        (self.run_dir / "results.json").write_text(json.dumps(
            {"config": dataclasses.asdict(config), "seconds": total,
             "parts": {p.key: {"title": p.title, "seconds": p.seconds, **p.summary} for p in self.parts}}, indent=1, default=str))
        self.console.print(Rule("[bold]done"))
        for part in self.parts:
            self.console.print(f"{part.title}: {part.seconds:.0f} s")
        self.console.print(f"[bold]all parts: {total:.0f} s[/]")
        for part in self.parts:
            for what, command in part.commands:
                self.console.print(f"{what}:\n  {command}")
        self.console.print(f"report: {report}")
        return report


def write_report(title: str, parts: list[Part], run_dir: Path, seconds: float) -> Path:
    """One page: a section per part with its tables, figures, links to its detailed reports and commands."""
    report = HtmlReport(title)
    report.table(["part", "seconds"], [[p.title, f"{p.seconds:.0f}"] for p in parts] + [["all", f"{seconds:.0f}"]])
    for part in parts:
        report.heading(part.title)
        for table in part.tables:
            table.report(report)
        part.section(report)
        if part.links:
            report.html("<p>Detailed: " + ", ".join(
                f'<a href="{html.escape(os.path.relpath(path, run_dir))}">{html.escape(label)}</a>'
                for label, path in part.links) + "</p>")
        for what, command in part.commands:
            report.html(f"<p class=note>{html.escape(what)}:</p><pre>{html.escape(command)}</pre>")
    return report.write(run_dir / "report.html")


def _run_dir(out_dir: Path, world: str) -> Path:
    return out_dir / f"demo-{world + '-' if world != 'car' else ''}{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _console() -> Console:
    return Console(width=None if Console().is_terminal else 140)


def run_demo(cfg: DemoConfig, console: Console | None = None) -> Path:
    """The car demo; returns the run folder."""
    console = console or _console()
    run_dir = _run_dir(cfg.out_dir, "car")
    console.print(f"[bold]Shakedown demo[/] ({', '.join(cfg.only)}) into {run_dir}")
    runner = _Runner(console, run_dir)
    key = keys.generate(run_dir / "audit-key.pem", run_dir / "audit-key.pub")
    decisions = SignedLog("decisions of part 1", run_dir / "audit.log", run_dir / "audit-key.pub")
    vlm = shipped_agent(console) if cfg.vlm and {"drive", "robot"} & set(cfg.only) else None
    with AuditLog(decisions.path, key) as log:
        if "drive" in cfg.only:
            runner("1. Twin, agent and shield", lambda: drive_part(
                cfg.track, cfg.episodes_per_category, cfg.duration_s, cfg.stress_episodes, cfg.stress_steps, cfg.seed,
                vlm, log))
    if "scenarios" in cfg.only:
        runner("2. A rare event", lambda: scenario_part(cfg.scenario, run_dir / "scenario", cfg.seed, cfg.study))
    if "robot" in cfg.only:
        from agents.policies.car_expert import ScriptedCarExpert

        candidate = f"adapter:{SHIPPED_ADAPTER}" if vlm is not None else "expert"
        runner("3. Bridge and rollout", lambda: robot_part(
            candidate, vlm or ScriptedCarExpert(), run_dir / "robot",
            RobotSettings(cfg.record_s, cfg.rung_s, cfg.fault_s, cfg.cut_s), say=console.print))
    if "audit" in cfg.only:
        logs = [decisions] * ("drive" in cfg.only) + [log for part in runner.parts for log in part.logs]
        runner("4. The audit", lambda: audit_part(logs, run_dir / "audit"))
    runner.finish("Shakedown demo: from the twin to a signed promotion", cfg)
    return run_dir


def run_factory_demo(cfg: FactoryDemoConfig, console: Console | None = None) -> Path:
    """The factory demo; returns the run folder."""
    console = console or _console()
    run_dir = _run_dir(cfg.out_dir, "factory")
    console.print(f"[bold]Shakedown factory demo[/] ({', '.join(cfg.only)}) into {run_dir}")
    runner = _Runner(console, run_dir)
    key = keys.generate(run_dir / "audit-key.pem", run_dir / "audit-key.pub")
    decisions = SignedLog("decisions on the line", run_dir / "audit.log", run_dir / "audit-key.pub")
    with AuditLog(decisions.path, key) as log:
        if "line" in cfg.only:
            vlm = shipped_agent(console, "factory") if cfg.vlm else None
            runner("1. The line", lambda: line_part(cfg.episodes, cfg.parts_per_episode, cfg.seed, log, vlm))
    if "scenarios" in cfg.only:
        runner("2. A person enters the cell during a jam", lambda: scenario_part(
            cfg.scenario, run_dir / "scenario", cfg.seed, cfg.study,
            title="2. A person enters the cell during a jam: search, estimate, shrink, keep"))
    if "audit" in cfg.only:
        runner("3. The audit", lambda: audit_part([decisions] * ("line" in cfg.only), run_dir / "audit",
                                                  title="3. The audit"))
    runner.finish("Shakedown demo: inspection on the factory line", cfg)
    return run_dir
