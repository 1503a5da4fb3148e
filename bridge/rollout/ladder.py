"""Climbing the ladder: each rung run over the bridge, judged by its gates, and the decision signed
before the next rung starts.

`run_ladder(plan, out)` starts a rollout in `out` (or continues one: the state comes from
the signed log, never from memory), runs every rung from where it stands, and stops at the
first rollback or pause, or when the candidate passes `full`. A failed gate rolls the
candidate back to the incumbent at once, with no one asked. `operator_decision` records an
operator's promotion of a paused rung or a rollback at any point, signed like the gates'
own. Each rung keeps its files in `out/rungs/<rung>-<attempt>/` (the robot's audit log,
recording and trace, the shadow log, and `result.json` with the data the gates judged);
every decision names that file and its SHA-256.

The ladder and the robot witness each other's logs (`safety.audit.witness`): before a
session drives, the robot co-signs the head of `rollout.log` into its own store
(`witness/robot/`) and refuses the session if the ladder's history was cut back or rewritten;
after it, the ladder co-signs the robot's audit log into `witness/ladder/` and records a
`rollout_witnessed` entry. A refused session, or a robot log that does not verify or that the
witness refuses, rolls the rung back whatever its gates say. After each decision the emulated
robot co-signs the head that carries it, as a robot told of the decision would: deleting a
rollback later (to re-promote) is refused at the robot's next session.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.robot.gate import AUDIT_LOG, AUDIT_PUBLIC, cosign_log
from bridge.rollout.gates import PROMOTE, ROLLBACK, Judgement, distrust, judge
from bridge.rollout.metrics import APPLIED, DRIVE_METRICS, METRICS, SHADOW, RungData, measure, series
from bridge.rollout.plan import RolloutPlan, Rung
from bridge.rollout.record import (
    COMPLETE,
    LADDER_WITNESS,
    LOG_FILE,
    PAUSED,
    PUBLIC_FILE,
    ROBOT_WITNESS,
    ROLLED_BACK,
    RUNNING,
    LadderState,
    RolloutError,
    RolloutLog,
)
from bridge.rollout.session import ROBOT_DIR, robot_summary, run_session, rung_data
from bridge.rollout.watch import ShadowPolicy, TwinPredictor, WatchedCandidate
from safety.audit import keys as audit_keys
from safety.audit.log import AuditLog
from safety.audit.verify import verify
from twin.core.contracts import Policy

RESULT_FILE = "result.json"
SHADOW_HORIZON_S = 2.0
"""Length of each twin rollout the shadow compares (s): long enough for parameters to show, short enough to
keep up with a decision every second or so on two cores (~0.25 s a rollout)."""


@dataclasses.dataclass(frozen=True)
class RungOutcome:
    """One rung run and judged."""

    rung: str
    """Which rung."""
    folder: Path
    """This attempt's files."""
    judgement: Judgement
    """Its gates, band and the action taken."""
    data: RungData
    """What the gates judged."""
    metrics: dict[str, float | None]
    """Every metric the rung can measure, over the whole rung."""
    wall_s: float
    """Wall time the rung took."""
    robot: dict[str, Any]
    """The robot's summary (decisions applied and refused, stops, interventions, limit, link counts); in shadow
    also the incumbent's drive metrics and the observations the candidate skipped."""
    confirmations: list[dict[str, Any]]
    """Flagged parameter sets and their answers."""


@dataclasses.dataclass(frozen=True)
class LadderOutcome:
    """What one `run_ladder` call did."""

    state: LadderState
    """The state after it, as the log says."""
    rungs: list[RungOutcome]
    """The rungs it ran."""


def _attempt_dir(out: Path, rung: str) -> Path:
    """A fresh folder per attempt: an attempt that never reached a decision is kept, never overwritten."""
    n = 1
    while (out / "rungs" / f"{rung}-{n}").exists():
        n += 1
    return out / "rungs" / f"{rung}-{n}"


def rung_metrics(data: RungData, rung: str) -> dict[str, float | None]:
    return {name: measure(name, data).value for name, spec in METRICS.items() if rung in spec.rungs}


def run_rung(plan: RolloutPlan, rung: Rung, folder: Path, candidate: Policy, incumbent: Policy,
             signing_key: Any, state: LadderState, ask: Callable[[str], bool] | None = None,
             rollout: Path | None = None) -> RungOutcome:
    """Serve the rung's policy, drive the robot, judge the gates (and the band after sim) against what the
    log says of earlier rungs (`state`); nothing is logged here. With `rollout` (the rollout's folder) the
    robot witnesses its log first; a session it refuses is rolled back whatever the gates say."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if rung.name == SHADOW:
        predictor = TwinPredictor(plan.track, rung.envelope, plan.robot.control_hz, SHADOW_HORIZON_S, plan.robot.seed)
        with AuditLog(folder / "shadow.log", signing_key) as shadow_log:
            served: ShadowPolicy | WatchedCandidate = ShadowPolicy(incumbent, candidate, predictor, shadow_log)
            try:
                result = run_session(plan, rung, served, folder, served.telemetry, rollout)
            finally:
                served.close()
    else:
        served = WatchedCandidate(candidate, incumbent, rung.envelope, rung.confirm, rung.flag_distance, ask)
        result = run_session(plan, rung, served, folder, rollout=rollout)
    data = rung_data(plan, rung, result, served.records)
    judgement = judge(rung, data, plan.band if rung.name in APPLIED else (), state.sim_metrics,
                      state.incumbent_metrics)
    if result.get("session_refused"):
        judgement = distrust(judgement, result["session_refused"])
    robot = robot_summary(result)
    if isinstance(served, ShadowPolicy):
        # the incumbent drove: its drive's numbers, beside the candidate's predicted ones
        robot["incumbent_metrics"] = {name: measure(name, data).value for name in DRIVE_METRICS}
        robot["shadow_skipped"] = served.skipped
    return RungOutcome(rung.name, folder, judgement, data, rung_metrics(data, rung.name), time.perf_counter() - started,
                       robot, list(getattr(served, "confirmations", [])))


def witness_robot(out: Path, folder: Path) -> dict[str, Any]:
    """The ladder co-signs the robot's audit log of one rung attempt (`folder`) into its witness store
    (`out/witness/ladder/`); the `rollout_witnessed` entry's body. RolloutError says why not: the log does not
    verify (strictly: a session that ended signed all of it) or the witness refuses it."""
    log = folder / ROBOT_DIR / AUDIT_LOG
    name = str(log.relative_to(out))
    try:
        report = verify(log, audit_keys.load_public(log.with_name(AUDIT_PUBLIC)))
        if not report.ok:
            raise RolloutError(report.summary())
        head = cosign_log(out / LADDER_WITNESS, log, log.with_name(AUDIT_PUBLIC))
    except (OSError, ValueError) as exc:  # RolloutError and WitnessError are ValueErrors
        raise RolloutError(f"the robot's record cannot be trusted: the ladder's witness does not accept {name}: "
                           f"{exc}") from None
    return {"log": name, "log_key_id": head["log_key_id"], "tree_size": head["tree_size"], "root": head["root"],
            "witness_key_id": head["witness_key_id"]}


def robot_acknowledges(out: Path, say: Callable[[str], None] = print) -> bool:
    """The emulated robot co-signs the head of `rollout.log` now (after a decision), as a robot told of the
    decision would; False (and said) when its witness refuses. Nothing is done without its store in `out`."""
    if not (out / ROBOT_WITNESS).exists():
        return False
    try:
        cosign_log(out / ROBOT_WITNESS, out / LOG_FILE, out / PUBLIC_FILE)
    except (OSError, ValueError) as exc:
        say(f"  the robot did not acknowledge the decision: {exc}")
        return False
    return True


def _save(outcome: RungOutcome, plan: RolloutPlan) -> tuple[Path, str]:
    """result.json: the data the gates judged, their verdicts and each gate's metric over time."""
    checks = (*outcome.judgement.gates, *outcome.judgement.band)
    plots = {f"{g.metric}@{g.window_s:g}": dict(zip(("t", "value"), series(g.metric, outcome.data, g.window_s)))
             for g in checks}
    body = {"rung": outcome.rung, "plan_hash": plan.plan_hash, "data": outcome.data.to_json(),
            "gates": [g.as_dict() for g in outcome.judgement.gates], "band": [g.as_dict() for g in outcome.judgement.band],
            "action": outcome.judgement.action, "reason": outcome.judgement.reason, "metrics": outcome.metrics,
            "series": plots, "robot": outcome.robot, "confirmations": outcome.confirmations, "wall_s": outcome.wall_s}
    path = outcome.folder / RESULT_FILE
    raw = json.dumps(body, indent=1, default=float).encode()
    path.write_bytes(raw)
    return path, hashlib.sha256(raw).hexdigest()


def _evidence(outcome: RungOutcome, plan: RolloutPlan, out: Path, path: Path, sha: str) -> dict[str, Any]:
    rung = plan.rung(outcome.rung)
    return {"plan_hash": plan.plan_hash, "rung": outcome.rung, "gates": [g.as_dict() for g in outcome.judgement.gates],
            "band": [g.as_dict() for g in outcome.judgement.band], "metrics": outcome.metrics,
            "span_s": outcome.data.span_s, "wall_s": outcome.wall_s, "robot": outcome.robot,
            "envelope": dict(rung.envelope_overrides), "limits": dataclasses.asdict(rung.limits),
            "confirm": rung.confirm, "confirmations": len(outcome.confirmations),
            "evidence_file": rung.evidence, "evidence_sha256": rung.evidence_sha256,
            "result_file": str(path.relative_to(out)), "result_sha256": sha}


def _start_body(plan: RolloutPlan) -> dict[str, Any]:
    return {"plan_name": plan.name, "plan_hash": plan.plan_hash, "plan": plan.content, "plan_file": plan.source,
            "candidate": plan.candidate.label, "incumbent": plan.incumbent.label,
            "rungs": [r.name for r in plan.rungs], "instruction": plan.instruction, "track": plan.track,
            "gap": dataclasses.asdict(plan.robot.gap), "process": plan.robot.process}


def _continuable(state: LadderState, plan: RolloutPlan) -> None:
    if state.plan_hash != plan.plan_hash:
        raise RolloutError(f"this rollout's log belongs to plan {state.plan_hash[:12]}, not {plan.plan_hash[:12]} "
                           f"({plan.source}); a changed plan is a new rollout: give another --out")
    if state.status == PAUSED:
        raise RolloutError(f"the rollout is paused at {state.rung}: an operator decides first "
                           "(shakedown rollout promote|rollback)")
    if state.status in (COMPLETE, ROLLED_BACK):
        raise RolloutError(f"the rollout is {state.status} ({state.summary()}); nothing is left to run")


def run_ladder(plan: RolloutPlan, out: Path | str, ask: Callable[[str], bool] | None = None,
               say: Callable[[str], None] = print) -> LadderOutcome:
    """Run the rungs from where the rollout in `out` stands; stops at a rollback, a pause, or the end."""
    out = Path(out)
    outcomes: list[RungOutcome] = []
    with RolloutLog(out) as log:
        if not log.exists:
            log.start(_start_body(plan))
        state = log.state()
        _continuable(state, plan)
        candidate, incumbent = plan.candidate.build(), plan.incumbent.build()
        while state.status == RUNNING:
            rung = plan.rung(state.rung)
            say(f"rung {rung.name}: {rung.limits.time_s:g} s, gates {', '.join(g.metric for g in rung.gates)}")
            log.sign()  # the robot co-signs the head beside the log: it must cover every entry
            outcome = run_rung(plan, rung, _attempt_dir(out, rung.name), candidate, incumbent, log.key, state, ask,
                               out)
            try:
                log.witnessed(rung.name, witness_robot(out, outcome.folder))
            except RolloutError as exc:
                outcome = dataclasses.replace(outcome, judgement=distrust(outcome.judgement, str(exc)))
            outcomes.append(outcome)
            path, sha = _save(outcome, plan)
            log.confirmations(rung.name, outcome.confirmations)
            action = outcome.judgement.action
            log.decide(action, rung.name, plan.next_rung(rung.name) if action == PROMOTE else None, "gates",
                       outcome.judgement.reason, _evidence(outcome, plan, out, path, sha))
            robot_acknowledges(out, say)
            state = log.state()
            say(f"  {action.upper()} after {outcome.wall_s:.1f} s: {outcome.judgement.reason}")
            if action == ROLLBACK:
                say(f"  rolled back: {plan.incumbent.label} drives")
    return LadderOutcome(state, outcomes)


def operator_decision(out: Path | str, action: str, reason: str, operator: str | None = None,
                      say: Callable[[str], None] = print) -> LadderState:
    """An operator's promotion of a paused rung, or rollback at any point before one; signed like the gates',
    and acknowledged by the emulated robot (`robot_acknowledges`)."""
    if action not in ("promote", "rollback"):
        raise RolloutError(f"an operator may promote or rollback, not {action!r}")
    if not reason.strip():
        raise RolloutError("an operator's decision needs a reason: it goes on the record")
    with RolloutLog(out) as log:
        if not log.exists:
            raise RolloutError(f"no rollout was started in {out}")
        state = log.state()
        if action == "promote" and state.status != PAUSED:
            raise RolloutError(f"only a paused rung is promoted by hand; the rollout is {state.status} at {state.rung}")
        if action == "rollback" and state.status == ROLLED_BACK:
            raise RolloutError(f"the rollout was already rolled back at {state.rung}")
        to = None
        if action == "promote":
            names = list(state.rungs)
            i = names.index(state.rung)
            to = names[i + 1] if i + 1 < len(names) else None
        log.decide(action, state.rung, to, f"operator:{operator or getpass.getuser()}", reason,
                   {"plan_hash": state.plan_hash, "rung": state.rung, "state_before": state.status})
        robot_acknowledges(Path(out), say)
        return log.state()
