"""The safety layer between any controller and the factory cell: shield, costs, counts.

Mirrors CarGuard: every command to the cell (belt speed, arm speed, and the arm's wish to
release its part) passes the FactoryShield; after each step the constraints are measured
on what actually happened: speed-and-separation breaches at the arm's measured speed,
person-arm contact, dropped parts, a belt running into a jam, a release outside a bin.
"""

from __future__ import annotations

import dataclasses
import math

from safety.factory.shield import FactoryShield, FactoryShieldState
from safety.factory.spec import FactorySafetySpec
from safety.verdict import InterventionCounter, StepCosts, Verdict
from twin.factory.command import FactoryCommand
from twin.factory.twin import FactoryStepReport, FactoryTwin

MOVING = 0.01
"""Tool speed (m/s) below which the arm counts as standing still."""


class FactoryGuard:
    def __init__(self, twin: FactoryTwin, spec: FactorySafetySpec | None = None, shield: bool = True) -> None:
        self.twin = twin
        self.spec = spec or FactorySafetySpec()
        self.shield = FactoryShield(self.spec)
        self.enabled = shield
        self.counter = InterventionCounter()

    def reset(self) -> None:
        self.counter = InterventionCounter()

    def state(self) -> FactoryShieldState:
        tw = self.twin
        return FactoryShieldState(separation=tw.separation, human_speed=None, jammed=tw.jammed,
                                  holding=tw.arm.held is not None, over_bin=tw.over_bin())

    def step(self, command: FactoryCommand) -> tuple[Verdict, FactoryStepReport, StepCosts]:
        # The arm's sequence asks to release when it is over its bin; the shield decides.
        command = dataclasses.replace(command, release=command.release or self.twin.wants_release())
        proposed = {"arm_speed": command.arm_speed, "belt_speed": command.belt_speed, "release": float(command.release)}
        if self.enabled:
            verdict = self.shield.filter(self.state(), command)
        else:
            verdict = Verdict("passed", proposed, dict(proposed))
        self.counter.add(verdict)
        ex = verdict.executed
        release_over_bin, jam_known = self.twin.over_bin(), self.twin.jammed
        report = self.twin.step(FactoryCommand(ex["arm_speed"], ex["belt_speed"], bool(ex["release"])))
        return verdict, report, self.costs(report, bool(ex["release"]) and not release_over_bin, jam_known)

    def costs(self, report: FactoryStepReport, stray_release: bool, jam_known: bool) -> StepCosts:
        """Costs of the step just taken; a jam counts once it was known when the step began
        (the jam sensor needs half a second to tell a stuck part from a slow one)."""
        sp = self.spec
        sep = report.separation
        needed = sp.protective_separation(report.tool_speed) if report.tool_speed > MOVING else 0.0
        margin_sep = sep - needed if math.isfinite(sep) else 10.0
        jam_running = jam_known and report.belt_speed > 0
        indicators = {
            "separation": float(report.tool_speed > MOVING and sep < needed),
            "collision": float(report.person_contact),
            "dropped": float(len(report.dropped)),
            "jam_running": float(jam_running),
            "stray_release": float(stray_release),
        }
        magnitudes = {"separation": max(0.0, needed - sep) if indicators["separation"] else 0.0,
                      "collision": indicators["collision"], "dropped": indicators["dropped"],
                      "jam_running": report.belt_speed if jam_running else 0.0,
                      "stray_release": indicators["stray_release"]}
        margins = {"separation": margin_sep}
        return StepCosts(indicators, magnitudes, margins)
