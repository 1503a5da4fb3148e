"""Inspectors on the line with and without the demo's rare events: what a person in the cell and a jam do to them.

`shakedown eval factory` decides parts on a line that runs undisturbed. The factory demo injects a person
entering the cell (8 s), a jam (22 s), glare (34 s) and belt slip (45 s) into every episode; the shield
stops the arm and parts crowd the belt long after each event has ended. This runs the colour heuristic and
the shipped VLM inspector on the same seeded episodes twice, once with those events and once without,
and reports each one's accuracy (95 % BCa over parts), its false rejects and how many of its wrong
decisions fell while an event was still active.

    python -m benchmarks.inspector_events            # ~1 min

Prints the table and writes benchmarks/results/inspector_events.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agents.evaluation.intervals import mean_ci
from agents.policies.inspectors import HeuristicInspector
from agents.tasks.factory.envs import FactoryInspectionEnv, inspection_task
from agents.vlm.loading import agent_from_adapter
from benchmarks.expert_headroom import ROOT
from shakedown.demo.line import EVENTS
from twin.core.contracts import Policy
from twin.factory.twin import DECISIONS


def inspect(policy: Policy, episodes: int, parts: int, events: list[tuple[float, str]]) -> list[dict]:
    """One row per part: line time, the events active when it was decided, its defect, the decision, right or not."""
    env = FactoryInspectionEnv(inspection_task(parts))
    rows = []
    try:
        for episode in range(episodes):
            _, info = env.reset(seed=episode, options={"events": list(events)})
            done = False
            while not done:
                obs, t, active = info["observation"], env.twin.t, sorted(env.twin.events)
                decision = policy.decide(obs).action["decision"]
                _, _, term, trunc, info = env.step(DECISIONS.index(decision))
                rows.append({"episode": episode, "t": round(t, 2), "active_events": active,
                             "defect": obs.privileged["defect"], "decision": decision,
                             "correct": float((decision == "reject") == obs.privileged["defective"])})
                done = term or trunc
    finally:
        env.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", type=Path, default=ROOT / "agents" / "adapters" / "factory", help="VLM inspector")
    ap.add_argument("--episodes", type=int, default=8, help="seeded episodes per condition (seeds 0..n-1)")
    ap.add_argument("--parts", type=int, default=8, help="parts per episode")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inspector_events.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    policies: list[Policy] = [HeuristicInspector(), agent_from_adapter(args.adapter, "factory", merge=True)]
    table = Table(title=f"Inspectors with and without the demo's rare events ({args.episodes} episodes x {args.parts} "
                        f"parts each, the same seeds; 95 % BCa over parts)")
    for col in ("inspector", "events", "accuracy", "good parts rejected or held", "defects accepted",
                "wrong while an event was active"):
        table.add_column(col)
    results = []
    for policy in policies:
        label = getattr(policy, "label", policy.policy_id)
        for name, events in (("none", []), ("demo's", list(EVENTS))):
            rows = inspect(policy, args.episodes, args.parts, events)
            acc = mean_ci([r["correct"] for r in rows])
            wrong = [r for r in rows if not r["correct"]]
            false_reject = sum(r["decision"] != "accept" and r["defect"] == "none" for r in rows)
            false_accept = sum(r["decision"] == "accept" and r["defect"] != "none" for r in rows)
            during = sum(bool(r["active_events"]) for r in wrong)
            results.append({"policy": label, "events": name, "accuracy": acc.mean, "ci": [acc.low, acc.high],
                            "false_rejects": false_reject, "false_accepts": false_accept,
                            "wrong_during_event": during, "rows": rows})
            table.add_row(label, name, f"{acc.mean:.3f} [{acc.low:.3f}, {acc.high:.3f}]", f"{false_reject}/{len(rows)}",
                          f"{false_accept}/{len(rows)}", f"{during}/{len(wrong)}")
    Console(width=160).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "inspector_events", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "events": EVENTS,
        "seconds": time.perf_counter() - t0, "results": results}, indent=1))
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
