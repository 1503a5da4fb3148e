"""Car policies under the current score and the legacy one, side by side, on the same episodes.

The legacy score (RobotxR1's error improvement) has no progress term: a crawl wins
centerline, standing still wins smooth (issue 15). agents.tasks.car.metrics.score judges
those two categories on forward progress too. Published results (agents/adapters/car/eval.json)
keep each decision's raw answer but not the drive's progress, so re-scoring needs the drives
again; it does not need the language model: a stored answer is parsed as the agent parses it
and its parameters are driven.

    python -m benchmarks.rescore_car --episodes 3                          # default, expert (~1 min)
    python -m benchmarks.rescore_car --episodes 5 --replay agents/adapters/car/eval.json
        # + every language-model policy of that evaluation, its stored answers driven again, on
        #   its episodes (seed and wording); no model is run
    python -m benchmarks.rescore_car --episodes 5 --adapter runs/sft-car/adapter \\
        --adapter runs/grpo-car/adapter --baseline runs/sb3-car-state
        # live: the adapters decide again (minutes per episode on 2 CPU cores), SB3 runs if present

Every policy drives the same episodes (agents.evaluation.evaluate.evaluate_car, the code
`shakedown eval car` runs); with --replay the episodes are the stored ones: their seeds and
their instructions (given to the env as written, so a change in how wordings are drawn cannot
swap them). Prints per category and policy the score and the legacy score, the crawls and
reverse drives, and the share of thoughts the claims reader flags; writes the rows and the
summary as JSON (default benchmarks/results/rescore_car.json).
"""

from __future__ import annotations

import os

# One thread for numeric libraries, set before numpy is imported (the machine is shared; drives are single-threaded).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agents.evaluation.evaluate import (  # noqa: E402
    EvalConfig,
    adaptability,
    disagreement,
    evaluate_car,
    policies_for,
)
from agents.tasks.car.instructions import CATEGORIES, parse_instruction  # noqa: E402
from agents.tasks.car.metrics import MIN_PROGRESS_RATIO, PROGRESS_WEIGHT  # noqa: E402
from agents.vlm.parsing import parse_car  # noqa: E402
from twin.core.contracts import Decision, Observation  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class ReplayPolicy:
    """A stored evaluation's answers, one per episode in the order the episodes are given: each is parsed
    as the agent parses its text today (agents.vlm.parsing.parse_car) and so drives the same parameters."""

    def __init__(self, label: str, policy_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.label, self.policy_id = f"{label}, replayed", policy_id
        self._rows = list(rows)
        self.parse_changed = 0  # answers whose parse failure differs from the stored one (the parser changed since)

    def decide(self, observation: Observation) -> Decision:
        if not self._rows:
            raise RuntimeError(f"{self.label}: more episodes than stored answers; pass the replay's episodes only")
        row = self._rows.pop(0)
        if " ".join(str(observation.instruction).split()) != " ".join(row["instruction"].split()):
            raise RuntimeError(f"{self.label}: the episode's instruction {observation.instruction!r} is not the stored "
                               f"answer's {row['instruction']!r}; replay answers on the stored episodes, in order")
        parsed = parse_car(row["raw"])
        self.parse_changed += parsed.failed != bool(row["parse_failed"])
        return Decision(action=parsed.action, policy_id=self.policy_id, thought=parsed.thought, raw_output=row["raw"],
                        parse_status=parsed.status)


def replay_plan(path: Path, episodes: int) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]], list[ReplayPolicy]]:
    """From a `shakedown eval car` results.json: its config, its first `episodes` episodes per category as
    (seed, reset options with the stored instruction), and a ReplayPolicy per language-model policy (one that
    left a raw answer on some row; SB3 and fixed policies leave none: they are run live instead)."""
    stored = json.loads(path.read_text())
    rows = stored["rows"]
    if not rows or "category" not in rows[0]:
        raise ValueError(f"{path} holds no car evaluation rows; give a `shakedown eval car` results.json")
    chosen: list[tuple[int, dict[str, Any]]] = []
    for cat in CATEGORIES:
        seeds = sorted({r["seed"] for r in rows if r["category"] == cat})
        if len(seeds) < episodes:
            raise ValueError(f"{path} has {len(seeds)} {cat} episodes, fewer than --episodes {episodes}; ask for fewer")
        for seed in seeds[:episodes]:
            text = next(r["instruction"] for r in rows if r["seed"] == seed)
            instruction = parse_instruction(text)
            if instruction.category != cat:
                raise ValueError(f"{path}: seed {seed}'s instruction {text!r} now reads as {instruction.category!r}, "
                                 f"stored as {cat!r}; the instruction reader changed, this replay cannot be trusted")
            chosen.append((seed, {"instruction": instruction}))
    keys = {seed for seed, _ in chosen}
    order = {seed: i for i, (seed, _) in enumerate(chosen)}
    policies = []
    for label in dict.fromkeys(r["policy"] for r in rows):
        mine = [r for r in rows if r["policy"] == label]
        if any(r.get("raw") for r in mine):
            mine = sorted((r for r in mine if r["seed"] in keys), key=lambda r: order[r["seed"]])
            policies.append(ReplayPolicy(label, mine[0]["policy_id"], mine))
    return stored["config"], chosen, policies


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per policy: the score and the legacy score by category and their means, failures, thought disagreement."""
    out = {}
    for label in dict.fromkeys(r["policy"] for r in rows):
        mine = [r for r in rows if r["policy"] == label]
        per, mean = adaptability(mine)
        legacy_per, legacy_mean = adaptability(mine, "legacy_improvement")
        out[label] = {"score": {**dict(zip(CATEGORIES, per)), "adaptability": mean},
                      "legacy": {**dict(zip(CATEGORIES, legacy_per)), "adaptability": legacy_mean},
                      "failures": {f: sum(r["failure"] == f for r in mine) for f in sorted({r["failure"] for r in mine})
                                   if f},
                      "thought_disagreement": disagreement(mine), "episodes": len(mine)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=3, help="episodes per category")
    ap.add_argument("--replay", type=Path, help="a `shakedown eval car` results.json whose answers to drive again")
    ap.add_argument("--adapter", action="append", default=[], help="adapter to run live (repeatable; slow on a CPU)")
    ap.add_argument("--baseline", action="append", default=[], help="SB3 run folder to run live (repeatable)")
    ap.add_argument("--seed", type=int, default=1000, help="first episode seed (without --replay)")
    ap.add_argument("--duration-s", type=float, default=8.0, help="simulated seconds per drive (without --replay)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rescore_car.json")
    args = ap.parse_args(argv)
    for path in args.baseline:
        if not Path(path).exists():
            raise SystemExit(f"SB3 run folder {path} does not exist; train it (shakedown train car --stage sb3) "
                             "or leave it out")
    seed, duration, episodes, replayed = args.seed, args.duration_s, None, []
    if args.replay is not None:
        config, episodes, replayed = replay_plan(args.replay, args.episodes)
        seed, duration = int(config["seed"]), float(config["duration_s"])
    cfg = EvalConfig(world="car", adapters=tuple(args.adapter), baselines=tuple(args.baseline), zero_shot=False,
                     episodes=args.episodes, duration_s=duration, seed=seed)
    live = policies_for(cfg)  # default, SB3, adapters, expert
    policies = [live[0], *live[1:-1], *replayed, live[-1]]
    t0 = time.perf_counter()
    rows = evaluate_car(cfg, policies, episodes=episodes)
    seconds = time.perf_counter() - t0
    summary = summarize(rows)

    console = Console(width=None if Console().is_terminal else 170)
    table = Table(title=f"car: score (legacy score), {args.episodes} episodes per category; a crawl is under "
                        f"{MIN_PROGRESS_RATIO:.0%} of the default's progress")
    for col in ("policy", *CATEGORIES, "adaptability", "failures", "thought disagreement"):
        table.add_column(col, justify="right")
    for label, s in summary.items():
        cells = [f"{100 * s['score'][k]:.1f} % ({100 * s['legacy'][k]:.1f} %)" for k in (*CATEGORIES, "adaptability")]
        table.add_row(label, *cells, ", ".join(f"{n} {f}" for f, n in s["failures"].items()) or "-",
                      s["thought_disagreement"])
    console.print(table)
    changed = {p.label: p.parse_changed for p in replayed if p.parse_changed}
    if changed:
        console.print(f"answers that parse differently today than when stored: {changed}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.rescore_car", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {"episodes": args.episodes, "seed": seed, "duration_s": duration,
                     "replay": str(args.replay) if args.replay else None, "min_progress_ratio": MIN_PROGRESS_RATIO,
                     "progress_weight": PROGRESS_WEIGHT},
        "seconds": seconds, "summary": summary, "parse_changed": changed,
        "rows": [{k: v for k, v in r.items() if k != "raw"} for r in rows]}, indent=1, default=str))
    console.print(f"{seconds:.0f} s; results: {args.out}")


if __name__ == "__main__":
    main()
