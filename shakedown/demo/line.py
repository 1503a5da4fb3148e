"""Part 1 of the factory demo: the inspection line, its rare events and its shield.

The heuristic, the VLM inspector (the shipped factory adapter, which writes its chain of thought
before each decision) and the scripted expert each inspect parts on a randomized line while a
person walks into the robot's cell, a part jams and the camera catches glare (EVENTS). Every
decision goes into the demo's signed audit log with its frame (and the VLM's thought).
"""

from __future__ import annotations

import numpy as np

from agents.policies.inspectors import HeuristicInspector, ScriptedInspector
from agents.tasks.factory.envs import FactoryInspectionEnv, inspection_task
from safety.audit.log import AuditLog
from safety.audit.records import decision_body
from shakedown.demo.part import Part, Table
from shakedown.progress import progress_bar
from shakedown.report import HtmlReport, plt
from twin.core.contracts import Policy
from twin.factory.samples import part_frames
from twin.factory.twin import DECISIONS

EVENTS = [(8.0, "person_enter"), (22.0, "jam"), (34.0, "glare"), (45.0, "belt_slip")]
"""Rare events injected into every episode (time in s, event)."""
METRICS = ("accuracy", "false_accept_rate", "false_reject_rate", "hold_rate", "throughput_per_min",
           "min_separation", "shield_interventions")
COSTS = ("separation", "collision", "dropped", "jam_running", "stray_release")


def run_policy(policy: Policy, episodes: int, parts: int, seed: int, log: AuditLog, bar, task) -> dict:
    """`episodes` randomized episodes of `parts` parts each, every decision logged with its frame."""
    env = FactoryInspectionEnv(inspection_task(parts))
    metrics, costs, timeline, thoughts = [], {k: 0.0 for k in COSTS}, None, []
    for ep in range(episodes):
        _, info = env.reset(seed=seed * 1000 + ep, options={"events": list(EVENTS)})
        done = False
        while not done:
            obs = info["observation"]
            decision = policy.decide(obs)
            _, _, term, trunc, info = env.step(DECISIONS.index(decision.action["decision"]))
            for k, v in info["cost_terms"].items():
                costs[k] = costs.get(k, 0.0) + v
            log.append("decision", decision_body(
                obs, decision, executed=decision.action, costs=info["cost_terms"],
                shield=env.guard.counter.as_dict(), frame_sha256=log.store_frame(obs.image),
                context={"episode": ep, "defect": obs.privileged["defect"], "world": "factory"}))
            done = term or trunc
            if ep == 0 and decision.thought:
                thoughts.append({"defect": obs.privileged["defect"], "decision": decision.action["decision"],
                                 "thought": decision.thought})
            bar.advance(task)
        metrics.append(info["metrics"])
        if timeline is None:
            timeline = list(env.timeline)
    env.close()
    mean = {k: float(np.nanmean([m[k] for m in metrics])) for k in METRICS}
    mean["min_separation"] = float(min(m["min_separation"] for m in metrics))
    return {"policy": policy.policy_id, "label": getattr(policy, "label", policy.policy_id), "metrics": mean,
            "costs": costs, "timeline": timeline, "thoughts": thoughts}


def _frames_figure(seed: int) -> plt.Figure:
    frames, specs = part_frames(24, seed)
    good = [f for f, s in zip(frames, specs) if not s.defective][:6]
    bad = [(f, s.defect) for f, s in zip(frames, specs) if s.defective][:6]
    fig, axes = plt.subplots(2, 6, figsize=(12, 4.4))
    for ax in axes.flat:
        ax.axis("off")
    for ax, f in zip(axes[0], good):
        ax.imshow(f)
        ax.set_title("good", fontsize=9)
    for ax, (f, defect) in zip(axes[1], bad):
        ax.imshow(f)
        ax.set_title(defect, fontsize=9, color="tab:red")
    return fig


def _timeline_figure(result: dict) -> plt.Figure:
    tl = result["timeline"]
    t = [r["t"] for r in tl]
    fig, ax = plt.subplots(4, 1, figsize=(12, 7), sharex=True)
    ax[0].plot(t, [r["belt"] for r in tl])
    ax[0].set_ylabel("belt (m/s)")
    ax[1].plot(t, [r["tool_speed"] for r in tl], color="tab:orange")
    ax[1].set_ylabel("arm tool (m/s)")
    ax[2].plot(t, [r["separation"] for r in tl], color="tab:green")
    ax[2].set_ylabel("person-arm (m)")
    ax[3].step(t, np.cumsum([r["binned"] for r in tl]), color="tab:purple", label="parts sorted")
    ax[3].fill_between(t, 0, [r["intervened"] * 2 for r in tl], color="tab:red", alpha=0.25, step="pre",
                       label="shield intervening")
    ax[3].set_ylabel("count")
    ax[3].set_xlabel("line time (s)")
    ax[3].legend(loc="upper left")
    for when, name in EVENTS:
        for a in ax:
            a.axvline(when, color="0.5", lw=0.8, ls="--")
        ax[0].text(when, ax[0].get_ylim()[1], name, fontsize=8, va="top")
    fig.suptitle(f"timeline of the line, first episode ({result['label']})")
    return fig


def line_part(episodes: int, parts: int, seed: int, log: AuditLog, vlm: Policy | None = None) -> Part:
    """Part 1 of the factory demo: the inspectors (the VLM's too, if given) on the same randomized episodes."""
    policies: list[Policy] = [HeuristicInspector(), *([vlm] if vlm is not None else []), ScriptedInspector()]
    with progress_bar() as bar:
        task = bar.add_task("parts inspected", total=len(policies) * episodes * parts)
        results = [run_policy(p, episodes, parts, seed, log, bar, task) for p in policies]
    table = Table.of("Inspection on the factory line (shield on, randomized, with rare events)",
                     ["policy", "accuracy", "false accept", "false reject", "hold", "parts/min", "min sep. (m)",
                      "interventions", *COSTS],
                     [[r["label"], *(r["metrics"][k] for k in METRICS), *(r["costs"].get(k, 0) for k in COSTS)]
                      for r in results])
    # What a chain of thought looked like next to the truth, part by part (the first episode of each policy
    # that writes one): the audit log holds them all.
    thoughts = [Table.of(f"{r['label']}: its thought on each part of the first episode", ["part", "decision", "thought"],
                         [["good" if t["defect"] == "none" else t["defect"], t["decision"], t["thought"]] for t in r["thoughts"]])
                for r in results if r["thoughts"]]

    def section(report: HtmlReport) -> None:
        report.text("Parts of three kinds ride a conveyor (carried by friction) past an overhead camera; the "
                    "inspector accepts, rejects or holds each; a Panda arm picks rejected and held parts into their "
                    "bins while accepted ones ride into the accept bin. A person walks the aisle and, at 8 s, into "
                    "the robot's cell: the speed-and-separation shield (ISO/TS 15066) slows and stops the arm. "
                    "Costs count control steps (or parts) in breach: separation = arm moving closer than the "
                    "protective separation distance; jam_running = belt running while a jam was known.")
        report.figure(_frames_figure(seed), "randomized frames of good (top) and defective (bottom) parts")
        for r in results:
            report.figure(_timeline_figure(r))

    return Part("line", "1. The line, its rare events and its shield", [table, *thoughts],
                {"events": EVENTS, "results": [{k: v for k, v in r.items() if k != "timeline"} for r in results]},
                section)
