"""Part 3 of the car demo: the bridge, the calibrated twin and the staged rollout.

Every session here is real: a `PolicyServer` on a loopback ZeroMQ port in this process, and the
hardware emulator in its own process (started and stopped here) with a declared reality gap.
1. A short recorded session (target speeds changing every second) and the twin calibrated from
   the robot's own MCAP recording (`bridge.calibration`).
2. The shipped adapter climbs the rollout ladder (sim, shadow, guarded, canary, full) against the
   default parameters, each rung judged by its gates and signed into `rollout.log`.
3. A link fault: the promoted policy drives through a relay that cuts the link for a moment; the
   robot's silence watchdog brings the car to a safe stop and the session resumes by itself when
   the link heals.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bridge.calibration import calibrate, emulator_truth, write_config
from bridge.calibration.excite import SpeedSteps
from bridge.relay import Relay
from bridge.robot.car.emulator import EmulatorConfig, RealityGap
from bridge.robot.car.runtime import RUNNING, STOPPED
from bridge.robot.gate import AUDIT_LOG, AUDIT_PUBLIC
from bridge.rollout.ladder import run_ladder
from bridge.rollout.plan import plan_from_dict
from bridge.rollout.record import LOG_FILE, PUBLIC_FILE
from bridge.rollout.session import ROBOT_DIR, run_robot
from bridge.server import PolicyServer, ServerConfig
from shakedown.calibrate import error_rows, estimate_rows
from shakedown.calibrate import report as calibration_page
from shakedown.demo.part import Part, SignedLog, Table
from shakedown.report import HtmlReport, plt
from shakedown.rollout import ladder_figure, rollout_report
from twin.core.contracts import Decision, Observation, Policy

GAP = RealityGap(mu_scale=0.85, motor_gain=0.8, extra_delay_s=0.04)
"""The emulated robot's declared reality gap: less grip, a weaker motor, 40 ms more actuation delay."""
INSTRUCTION = "Drive at 2 m/s."
TRACK = "oval"


@dataclasses.dataclass(frozen=True)
class RobotSettings:
    """How long each session of part 3 drives."""

    record_s: float
    """Seconds of the recorded session the twin is calibrated from."""
    rung_s: float
    """Seconds each rung of the ladder drives."""
    fault_s: float
    """Seconds of the link-fault session."""
    cut_s: float
    """How long the link is down."""


class _FirstDecision:
    """A policy that says when it has answered once (the link is cut only while the car drives)."""

    def __init__(self, policy: Policy) -> None:
        self.policy, self.policy_id, self.answered = policy, getattr(policy, "policy_id", "policy"), threading.Event()

    def decide(self, observation: Observation) -> Decision:
        decision = self.policy.decide(observation)
        self.answered.set()
        return decision


def _session(policy: Policy, out: Path, duration_s: float, decide_every_s: float,
             relay_cut: tuple[float, float] | None = None) -> dict[str, Any]:
    """One emulator session in its own process against `policy` served here; with `relay_cut` = (after, for) the
    link goes through a relay that is cut `after` seconds past the first decision, for `for` seconds."""
    served = _FirstDecision(policy)
    server = PolicyServer(served, ServerConfig(endpoint="tcp://127.0.0.1:0"))
    server.start()
    relay = None
    endpoint = server.endpoint
    if relay_cut is not None:
        relay = Relay("tcp://127.0.0.1:0", server.endpoint)
        endpoint = relay.start()
        after, length = relay_cut

        def cut_then_heal() -> None:
            if served.answered.wait(120.0):
                time.sleep(after)
                relay.cut()
                time.sleep(length)
                relay.heal()

        threading.Thread(target=cut_then_heal, daemon=True).start()
    try:
        cfg = EmulatorConfig(endpoint=endpoint, instruction=INSTRUCTION, track=TRACK, duration_s=duration_s,
                             decide_every_s=decide_every_s, silence_timeout_s=0.5, heartbeat_s=0.1, gap=GAP, out=out,
                             max_wait_s=120.0)
        return run_robot(cfg, "subprocess")
    finally:
        if relay is not None:
            relay.stop()
        server.stop()


def _plan(candidate: str, rung_s: float) -> dict[str, Any]:
    """The ladder: gates a candidate that holds the instruction passes (the thresholds are the rollout docs' kind)."""
    return {
        "name": "demo-car-adapter", "instruction": INSTRUCTION, "track": TRACK, "candidate": candidate,
        "incumbent": "default",
        "robot": {"process": "subprocess", "gap": dataclasses.asdict(GAP), "decide_every_s": 1.0, "max_wait_s": 60},
        "rungs": [
            {"name": "sim", "limits": {"time_s": rung_s}, "gates": [{"metric": "task_error", "threshold": 1.0}]},
            {"name": "shadow", "limits": {"time_s": rung_s},
             "gates": [{"metric": "would_be_interventions_per_min", "threshold": 700},
                       {"metric": "parse_failure_rate", "threshold": 0.0}]},
            {"name": "guarded", "envelope": {"v_max": 2.5, "clearance": 0.08}, "confirm": "auto-approve",
             "limits": {"time_s": rung_s}, "gates": [{"metric": "interventions_per_min", "threshold": 300},
                                                     {"metric": "task_error", "threshold": 1.0}]},
            {"name": "canary", "limits": {"time_s": rung_s, "distance_m": 50},
             "gates": [{"metric": "stops", "threshold": 0}, {"metric": "link_faults", "threshold": 2}]},
            {"name": "full", "limits": {"time_s": rung_s},
             "gates": [{"metric": "task_error", "threshold": 1.0}, {"metric": "constraint_cost", "threshold": 0.05}]},
        ],
        "band": {"task_error": 0.5},
    }


def robot_part(candidate: str, driver: Policy, out: Path, settings: RobotSettings,
               say: Callable[[str], None] = print) -> Part:
    """Part 3: `candidate` (a rollout plan's policy: 'adapter:<dir>', 'expert', ...) up the ladder; `driver` (the
    same policy, already loaded here) drives the link-fault session."""
    say(f"recording a {settings.record_s:g} s session on the emulator (gap: {GAP})")
    recorded = _session(SpeedSteps(), out / "recorded", settings.record_s, 1.0)
    recording = out / "recorded" / "session.mcap"
    calibration = calibrate(recording)
    truth = emulator_truth(recording)
    write_config(calibration, out / "calibration" / "calibration.yaml")
    calibration_page(calibration, truth, out / "calibration" / "calibration.html")

    say("the ladder: sim, shadow, guarded, canary, full")
    ladder = run_ladder(plan_from_dict(_plan(candidate, settings.rung_s), "demo plan"), out / "rollout", say=say)
    rollout_page = rollout_report(out / "rollout", calibration=out / "calibration" / "calibration.yaml")

    say(f"a link fault: the link is cut for {settings.cut_s:g} s while the car drives")
    fault = _session(driver, out / "link-fault", settings.fault_s, 1.0, relay_cut=(1.0, settings.cut_s))
    kinds = [e["kind"] for e in fault["events"]]
    # resumed: stopped by the watchdog, then driving again by itself before the session ended
    resumed = bool(fault["safe_stops"]) and bool(fault["trace"]["mode"]) and fault["trace"]["mode"][-1] == RUNNING

    rung_rows = [[o.rung, o.judgement.action, f"{o.wall_s:.1f}",
                  "; ".join(f"{g.metric} {_num(g.value)} {g.comparison} {g.threshold:g}: {g.verdict}"
                            for g in o.judgement.gates)] for o in ladder.rungs]
    stop = fault["safe_stops"][0] if fault["safe_stops"] else {}
    tables = [
        Table.of(f"The twin calibrated from the robot's {calibration.log_s:.0f} s recording (the emulator's declared "
                 "gap is the truth)", ["parameter", "path", "nominal", "estimate +- std", "true"],
                 estimate_rows(calibration, truth)),
        Table.of(f"{len(calibration.heldout)} held-out segments: the twin's error before and after calibration",
                 ["held out", "nominal twin", "calibrated twin", "change"], error_rows(calibration)),
        Table.of(f"The rollout ladder: {ladder.state.summary()}", ["rung", "decision", "wall (s)", "gates"],
                 rung_rows),
        Table.of("A link fault while the candidate drives", ["safe stops", "silence before the stop (s)", "resumed",
                                                         "decisions applied", "refused", "ended"],
                 [[len(fault["safe_stops"]),
                   f"{stop['commanded'] - stop['last_heard']:.2f}" if stop else "-",
                   "yes" if resumed else "no", fault["applied"], sum(fault["refused"].values())
                   if isinstance(fault["refused"], dict) else fault["refused"], fault["reason"]]]),
    ]

    def section(report: HtmlReport) -> None:
        report.text("The emulator is a car twin in its own process behind the robot-side runtime (MPC, shield, "
                    "watchdogs), reached only over ZeroMQ on loopback, with a declared reality gap. The calibrated "
                    "twin is fitted to the recorded session alone; the ladder's rungs each drive a fresh session "
                    "and every promotion is signed into rollout.log, co-signed by the robot.")
        report.figure(ladder_figure(ladder.state), "The ladder: each rung coloured by its signed decision.")
        report.figure(fault_figure(fault["trace"]), "The link-fault session: the car's speed; shaded, the safe stop "
                      "the robot's silence watchdog commanded while the link was cut. It drove on by itself when a "
                      "fresh decision came over the healed link.")

    logs = [SignedLog("rollout decisions", out / "rollout" / LOG_FILE, out / "rollout" / PUBLIC_FILE),
            SignedLog("robot, recorded session", out / "recorded" / AUDIT_LOG, out / "recorded" / AUDIT_PUBLIC),
            SignedLog("robot, link-fault session", out / "link-fault" / AUDIT_LOG, out / "link-fault" / AUDIT_PUBLIC)]
    for folder in sorted((out / "rollout" / "rungs").glob("*")):
        logs.append(SignedLog(f"robot, rung {folder.name}", folder / ROBOT_DIR / AUDIT_LOG,
                              folder / ROBOT_DIR / AUDIT_PUBLIC))
    return Part("robot", "3. The bridge, the calibrated twin and the rollout", tables,
                {"recorded": {k: recorded[k] for k in ("reason", "applied", "messages_recorded")},
                 "calibration": {"estimates": [dataclasses.asdict(e) for e in calibration.estimates],
                                 "ade_before": calibration.ade_before, "ade_after": calibration.ade_after},
                 "ladder": {"status": ladder.state.status, "summary": ladder.state.summary(),
                            "rungs": [{"rung": o.rung, "action": o.judgement.action, "reason": o.judgement.reason,
                                       "metrics": o.metrics, "wall_s": o.wall_s} for o in ladder.rungs]},
                 "link_fault": {"safe_stops": fault["safe_stops"], "resumed": resumed, "applied": fault["applied"],
                                "link": fault["link"], "events": kinds}},
                section, links=[("rollout report", rollout_page),
                                ("calibration report", out / "calibration" / "calibration.html")],
                commands=[("the ladder's state, from its signed log alone", f"shakedown rollout status {out / 'rollout'}")],
                logs=logs)


def fault_figure(trace: dict[str, list]) -> plt.Figure:
    """Speed over the session, with the periods the runtime was in its safe stop shaded."""
    fig, ax = plt.subplots(figsize=(9, 2.8))
    t = np.asarray(trace["t"], float)
    ax.plot(t, trace["v"], label="speed")
    stopped = np.array([m == STOPPED for m in trace["mode"]])
    ax.fill_between(t, 0, 1, where=stopped, transform=ax.get_xaxis_transform(), color="tab:red", alpha=0.2,
                    label="safe stop (link silent)")
    ax.set(xlabel="robot time (s)", ylabel="m/s")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3g}"
