"""`shakedown rollout plan|run|status|promote|rollback|report`: a candidate policy up the ladder, and the
HTML report of where it stands and why.

    shakedown rollout plan PLAN.yaml                 check a plan (errors name the field) and show it
    shakedown rollout run PLAN.yaml [--out DIR]      run (or continue) the ladder; writes DIR/report.html
    shakedown rollout status DIR [--key PUB] [--witness STORE]
                                                     the state, rebuilt from the signed log alone
    shakedown rollout promote DIR --reason TEXT      an operator's yes to a paused rung
    shakedown rollout rollback DIR --reason TEXT     an operator's rollback, at any point
    shakedown rollout report DIR [--calibration C]   the HTML report again (with a calibrated twin's fit)

Exit codes: 0 done (run: the candidate reached full); 1 run: rolled back; 3 run: paused for an
operator; 2 a bad plan, a log that does not verify, or an action the state does not allow.

`status` and `report` verify the log also against the robot's witness store (DIR/witness/robot
for the emulated robot, or --witness): a log cut back or rewritten since the robot co-signed
it is tampering.

The report (`rollout_report`) verifies the log first, then shows the ladder, every decision
with who took it and why, each rung's gates against their thresholds over time, the
sim-to-real band, the robot's summary and the confirmations; a rung's result file whose
SHA-256 no longer matches the signed decision is marked as altered and not plotted.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import html
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from shakedown.report import HtmlReport

VERDICT_COLOURS = {"pass": "tab:green", "fail": "tab:red", "inconclusive": "tab:orange"}
ACTION_COLOURS = {"promote": "#8fd18f", "pause": "#f5c26b", "rollback": "#ef8a8a"}


# -- the report ----------------------------------------------------------------------------------
def ladder_figure(state: Any) -> plt.Figure:
    """One box per rung, coloured by what was decided there; the rung next to run is outlined."""
    fig, ax = plt.subplots(figsize=(1.9 * len(state.rungs) + 1, 1.6))
    last = {d.rung: d for d in state.decisions}
    for i, rung in enumerate(state.rungs):
        decision = last.get(rung)
        colour = ACTION_COLOURS[decision.action] if decision else "#e6e6e6"
        current = rung == state.rung and state.status in ("running", "paused")
        ax.add_patch(plt.Rectangle((i * 1.4, 0), 1.1, 1, facecolor=colour, edgecolor="tab:blue" if current else "0.4",
                                   linewidth=3 if current else 1))
        label = decision.action + (f" ({decision.by})" if decision and decision.by != "gates" else "") if decision \
            else ("next" if current else "not reached")
        ax.text(i * 1.4 + 0.55, 0.62, rung, ha="center", va="center", fontsize=11, weight="bold")
        ax.text(i * 1.4 + 0.55, 0.3, label, ha="center", va="center", fontsize=7)
        if i:
            ax.annotate("", xy=(i * 1.4, 0.5), xytext=(i * 1.4 - 0.3, 0.5), arrowprops={"arrowstyle": "->"})
    ax.set_xlim(-0.1, 1.4 * len(state.rungs))
    ax.set_ylim(-0.1, 1.1)
    ax.axis("off")
    return fig


def gates_figure(result: dict[str, Any]) -> plt.Figure | None:
    """Each gate's metric as it would have been judged at each moment of the rung, against its threshold."""
    checks = [*result["gates"], *result["band"]]
    checks = [c for c in checks if result["series"].get(f"{c['metric']}@{c['window_s']:g}", {}).get("t")]
    if not checks:
        return None
    cols = min(3, len(checks))
    rows = -(-len(checks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, check in zip(axes.flat, checks):
        s = result["series"][f"{check['metric']}@{check['window_s']:g}"]
        t = np.asarray(s["t"], float)
        v = np.array([np.nan if x is None else x for x in s["value"]], float)
        ax.plot(t, v, color="tab:blue", lw=1.5)
        if check["comparison"] == "band":
            ref, width = check["reference"], check["threshold"]
            if ref is not None:
                ax.axhspan(ref - width, ref + width, color="0.85", label=f"sim {ref:.3g} +- {width:g}")
                ax.legend(fontsize=7, loc="best")
        else:  # a gate relative to the incumbent: its line sits at the incumbent's value plus the threshold
            ax.axhline(check["threshold"] + (check["reference"] or 0.0), color="0.3", ls="--", lw=1)
            if check["window_s"]:
                ax.axvspan(max(0.0, t[-1] - check["window_s"]), t[-1], color="0.93")
        value = "missing" if check["value"] is None else f"{check['value']:.3g}"
        rule = f"within +-{check['threshold']:g} of sim" if check["comparison"] == "band" else \
            f"{check['comparison']} {check['threshold']:g}"
        if check["comparison"] != "band" and check["reference"] is not None:
            rule = f"- incumbent's {check['reference']:.3g} {rule}"
        ax.set_title(f"{check['metric']} {rule}: {check['verdict']} ({value})", fontsize=8,
                     color=VERDICT_COLOURS[check["verdict"]])
        ax.set_xlabel("rung time (s)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(checks):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _value(v: Any) -> Any:
    return "missing" if v is None else v


def calibration_figure(heldout: dict[str, Any]) -> plt.Figure:
    """Held-out ADE and FDE of the twin's replay before and after calibration."""
    fig, ax = plt.subplots(figsize=(5, 2.8))
    names = ("ade", "fde")
    before = [float(heldout.get(f"{n}_before_m", np.nan)) for n in names]
    after = [float(heldout.get(f"{n}_after_m", np.nan)) for n in names]
    x = np.arange(len(names))
    ax.bar(x - 0.2, before, 0.4, label="nominal twin", color="0.6")
    ax.bar(x + 0.2, after, 0.4, label="calibrated twin", color="tab:blue")
    ax.set_xticks(x, [n.upper() for n in names])
    ax.set_ylabel("m (held-out segments)")
    ax.legend(fontsize=8)
    return fig


def calibration_section(report: HtmlReport, path: Path) -> None:
    """The calibrated twin config (`shakedown calibrate`'s YAML): each parameter nominal -> fitted +- its standard
    error, or why it could not be identified, and the held-out ADE/FDE before and after."""
    import yaml

    cal = yaml.safe_load(Path(path).read_text()) or {}
    report.heading("Calibration of the twin")
    report.text(f"{path}: fitted to {(cal.get('recording') or {}).get('path', 'a robot recording')}", "note")
    params, std = cal.get("params") or {}, cal.get("uncertainty") or {}
    unidentifiable, nominal = cal.get("unidentifiable") or {}, cal.get("nominal") or {}
    report.table(["parameter", "nominal", "calibrated", "+- (std)"],
                 [[name, nominal.get(name, "-"), params.get(name, f"unidentifiable: {unidentifiable.get(name, '?')}"),
                   std.get(name, "-")] for name in sorted({*nominal, *params, *unidentifiable})])
    heldout = cal.get("heldout") or {}
    if heldout:
        report.figure(calibration_figure(heldout), f"Held-out ADE/FDE of the replayed log before and after "
                                                   f"({heldout.get('segments', '?')} segments).")


def rollout_report(out: Path | str, key: Path | str | None = None, path: Path | str | None = None,
                   calibration: Path | str | None = None, witness: Path | str | None = None) -> Path:
    """report.html of the rollout in `out` (verifying its log first, also against the robot's witness store
    `witness` or the emulated robot's; RolloutError if it does not verify); `calibration`: a calibrated twin
    config (shakedown calibrate) to show beside the ladder."""
    from bridge.rollout.record import read_state, verify_log

    out = Path(out)
    state = read_state(out, key, witness)
    check = verify_log(out, key, witness)
    report = HtmlReport(f"Rollout {state.plan_name}")
    report.text(state.summary())
    report.text(f"Log: {check.summary()}", "note")
    report.heading("The ladder")
    report.figure(ladder_figure(state), "Each rung coloured by its decision: green promoted, orange paused, red rolled "
                                        "back, grey not reached; the rung next to run is outlined in blue.")
    report.table(["entry", "rung", "decision", "to", "by", "reason"],
                 [[d.seq, d.rung, d.action, d.to or ("-" if d.action != "promote" else "done"), d.by, d.reason]
                  for d in state.decisions])
    for d in state.decisions:
        report.heading(f"{d.rung}: {d.action} ({d.by})")
        evidence = d.evidence
        result = _result(out, evidence)
        if isinstance(result, str):
            report.text(result, "note")
        if evidence.get("gates"):
            report.table(["metric", "comparison", "threshold", "relative to", "window (s)", "value", "samples",
                          "verdict", "reason"],
                         [[g["metric"], g["comparison"], g["threshold"],
                           "-" if g["reference"] is None else f"incumbent {g['reference']:.4g}",
                           g["window_s"] or "whole rung", _value(g["value"]), g["samples"], g["verdict"], g["reason"]]
                          for g in evidence["gates"]])
        if evidence.get("band"):
            report.table(["metric", "sim", "+- width", "here", "verdict", "reason"],
                         [[b["metric"], _value(b["reference"]), b["threshold"], _value(b["value"]), b["verdict"],
                           b["reason"]] for b in evidence["band"]])
        if isinstance(result, dict):
            fig = gates_figure(result)
            if fig is not None:
                report.figure(fig, "Each gate's metric as it would have been judged at each moment (dashed: threshold, "
                                   "shaded: the window judged; for the band, grey: sim +- width).")
        robot = evidence.get("robot") or {}
        if robot:
            report.table(["applied", "refused", "safe stops", "e-stops", "shield interventions", "limit", "ended"],
                         [[robot.get("applied"), json.dumps(robot.get("refused")), robot.get("safe_stops"),
                           robot.get("estops"), robot.get("shield_interventions"),
                           (robot.get("limit") or {}).get("reason", "-"), robot.get("reason")]])
        if robot.get("incumbent_metrics"):
            report.text("The incumbent drove this rung: " + ", ".join(
                f"{k} {v:.3g}" for k, v in robot["incumbent_metrics"].items() if v is not None), "note")
        if isinstance(result, dict) and result.get("confirmations"):
            report.table(["rung time", "approved", "by", "why flagged"],
                         [[c["t"], c["approved"], c["by"], "; ".join(c["reasons"])] for c in result["confirmations"]])
        report.html("<details><summary>signed evidence</summary><pre>"
                    + html.escape(json.dumps({k: v for k, v in evidence.items() if k != "robot"}, indent=1))
                    + "</pre></details>")
    if calibration:
        calibration_section(report, Path(calibration))
    return report.write(Path(path) if path else out / "report.html")


def _result(out: Path, evidence: dict[str, Any]) -> dict[str, Any] | str | None:
    """The rung's result file if it still matches the SHA-256 the decision signed; else why not."""
    name = evidence.get("result_file")
    if not name:
        return None
    path = out / name
    if not path.exists():
        return f"{name} is missing: only the signed evidence above is shown"
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != evidence.get("result_sha256"):
        return f"{name} was ALTERED after the decision was signed (SHA-256 differs): it is not shown"
    return json.loads(raw)


# -- the command line ------------------------------------------------------------------------------
def _plan_text(plan: Any) -> str:
    lines = [f"plan {plan.name} ({plan.source}), hash {plan.plan_hash[:16]}",
             f"  {plan.candidate.label} replacing {plan.incumbent.label}; instruction {plan.instruction!r} on {plan.track}",
             f"  robot: emulator {plan.robot.process}, gap {dataclasses.asdict(plan.robot.gap)}"]
    for rung in plan.rungs:
        limits = f"{rung.limits.time_s:g} s" + (f", {rung.limits.distance_m:g} m" if rung.limits.distance_m else "") + \
            (f", s in {list(rung.limits.area_s)}" if rung.limits.area_s else "")
        lines.append(f"  {rung.name}: {limits}; envelope {dict(rung.envelope_overrides) or 'robot default'}; "
                     f"confirm {rung.confirm}" + (f"; evidence {rung.evidence}" if rung.evidence else ""))
        for g in rung.gates:
            window = f"last {g.window_s:g} s" if g.window_s else "whole rung"
            relative = " minus the incumbent's (from shadow)" if g.relative_to else ""
            lines.append(f"    gate {g.metric}{relative} {g.comparison} {g.threshold:g} over {window} "
                         f"(min {g.min_samples} samples; inconclusive -> {g.on_inconclusive})")
    for metric, width in plan.band:
        lines.append(f"  band: {metric} within +-{width:g} of sim")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from bridge.rollout.ladder import run_ladder
    from bridge.rollout.plan import load_plan
    from bridge.rollout.record import COMPLETE, PAUSED

    plan = load_plan(args.plan)
    out = Path(args.out) if args.out else Path("runs") / f"rollout-{plan.name}"
    print(_plan_text(plan), flush=True)
    outcome = run_ladder(plan, out, say=lambda line: print(line, flush=True))
    print(outcome.state.summary())
    if not args.no_report:
        print(f"report: {rollout_report(out)}")
    return {COMPLETE: 0, PAUSED: 3}.get(outcome.state.status, 1)


def _status(args: argparse.Namespace) -> int:
    from bridge.rollout.record import read_state

    state = read_state(args.out, args.key, args.witness)
    if args.json:
        print(json.dumps(dataclasses.asdict(state), indent=1, default=str))
        return 0
    print(state.summary())
    for d in state.decisions:
        print(f"  [{d.seq}] {d.rung}: {d.action}" + (f" -> {d.to}" if d.to else "") + f" by {d.by}: {d.reason}")
    return 0


def _operator(args: argparse.Namespace) -> int:
    from bridge.rollout.ladder import operator_decision

    state = operator_decision(args.out, args.command, args.reason, args.operator)
    print(state.summary())
    return 0


def _report(args: argparse.Namespace) -> int:
    print(f"report: {rollout_report(args.out, args.key, args.output, args.calibration, args.witness)}")
    return 0


def build_parser(prog: str = "shakedown rollout") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Exit codes: 0 done; 1 run rolled back; 3 run paused; 2 bad plan, "
                                            "unverifiable log or an action the state does not allow.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="check a plan file and show it (errors name the field)")
    p.add_argument("plan", help="the plan (YAML)")
    p.set_defaults(func=_plan)
    r = sub.add_parser("run", help="run the ladder (or continue it); stops at a rollback, a pause or full")
    r.add_argument("plan", help="the plan (YAML)")
    r.add_argument("--out", help="the rollout's folder (default runs/rollout-<plan name>)")
    r.add_argument("--no-report", action="store_true", help="skip writing report.html")
    r.set_defaults(func=_run)
    witness_help = ("a robot's witness store: fail when the log is shorter than, or inconsistent with, a head "
                    "it co-signed (default DIR/witness/robot, the emulated robot's, when it exists)")
    s = sub.add_parser("status", help="the state, rebuilt from the signed log alone (verified first)")
    s.add_argument("out", help="the rollout's folder")
    s.add_argument("--key", help="trusted public key (PEM); default rollout-key.pub beside the log")
    s.add_argument("--json", action="store_true", help="print the state as JSON")
    s.add_argument("--witness", metavar="STORE", help=witness_help)
    s.set_defaults(func=_status)
    for name, what in (("promote", "an operator's yes to a paused rung: the ladder moves on"),
                       ("rollback", "an operator's rollback: the incumbent drives")):
        o = sub.add_parser(name, help=what)
        o.add_argument("out", help="the rollout's folder")
        o.add_argument("--reason", required=True, help="why (it goes on the signed record)")
        o.add_argument("--operator", help="who decides (default: the login name)")
        o.set_defaults(func=_operator)
    rep = sub.add_parser("report", help="write the HTML report")
    rep.add_argument("out", help="the rollout's folder")
    rep.add_argument("--key", help="trusted public key (PEM); default rollout-key.pub beside the log")
    rep.add_argument("-o", "--output", help="HTML file (default DIR/report.html)")
    rep.add_argument("--witness", metavar="STORE", help=witness_help)
    rep.add_argument("--calibration", help="a calibrated twin config (shakedown calibrate) to show: parameters, "
                     "held-out ADE/FDE before and after")
    rep.set_defaults(func=_report)
    return parser


def _plan(args: argparse.Namespace) -> int:
    from bridge.rollout.plan import load_plan

    print(_plan_text(load_plan(args.plan)))
    return 0


def main(argv: list[str] | None = None, prog: str = "shakedown rollout") -> int:
    """The command; returns its exit code (argparse exits itself on --help and bad flags)."""
    from bridge.rollout.record import RolloutError
    from twin.core.config import ConfigError

    args = build_parser(prog).parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, RolloutError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
