"""How far inside the free half width the centerline margin should go, with and without a higher heading weight:
the landscape GRPO climbs once the decoder's calculator does the subtraction (agents.vlm.grammar.subtracted_margin).

The expert puts its margin 0.03 m inside the free half width (half width - half the car's width) with a heading
weight (qalpha) of 10. A centerline answer now states an inset and the calculator subtracts it, so what GRPO can
move is one number the same on every track. This drives the expert's centerline template with the margin at several
insets (written to 0.01 m, as an answer writes it; an inset of 0 or below closes the soft bounds on the centre line,
so every such margin drives alike) and qalpha 10 or 32, on training episodes drawn as GRPO draws them (the training
tracks at every width in --track-widths, GRPO's 6 s drives) and on the evaluation's held-out centerline episodes
(paired against the expert, 95 % BCa).

    python -m benchmarks.centerline_insets          # ~6 min on one thread

Prints the table and writes benchmarks/results/centerline_insets.json.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agents.evaluation.evaluate import EvalConfig, car_episodes, evaluate_car  # noqa: E402
from agents.evaluation.intervals import paired_gain, policy_ci  # noqa: E402
from agents.policies.car_expert import WALL_GAP, ScriptedCarExpert  # noqa: E402
from benchmarks.expert_headroom import ROOT, SEARCH_SEED, SearchEpisodes, TunedCarExpert  # noqa: E402
from twin.car.tracks import training_tracks  # noqa: E402


def moves(insets: list[float], headings: list[float]) -> dict[str, dict[str, float]]:
    """Every inset with every heading weight, named as the table shows them."""
    return {f"inset {inset:.3f}, qalpha {qa:g}": {"margin_inset": inset, "qalpha": qa} for qa in headings for inset in insets}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--insets", type=float, nargs="+", default=[0.06, WALL_GAP, 0.015, 0.0, -0.05],
                    help="m inside the free half width (the expert's: 0.03)")
    ap.add_argument("--headings", type=float, nargs="+", default=[10.0, 32.0], help="qalpha values (the expert's: 10)")
    ap.add_argument("--train-episodes", type=int, default=24, help="training episodes every move drives")
    ap.add_argument("--track-widths", type=float, nargs=2, default=(1.6, 2.4), help="as GRPO's --track-widths")
    ap.add_argument("--train-duration-s", type=float, default=6.0, help="simulated seconds per training drive (GRPO's)")
    ap.add_argument("--episodes", type=int, default=40, help="held-out centerline episodes")
    ap.add_argument("--duration-s", type=float, default=8.0, help="simulated seconds per held-out drive (the eval's)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "centerline_insets.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    named = moves(args.insets, args.headings)
    train = SearchEpisodes("centerline", args.train_episodes, args.train_duration_s,
                           training_tracks(tuple(args.track_widths)))
    train_scores = {}
    for i, (name, move) in enumerate(named.items(), 1):
        train_scores[name] = train.score(move)
        print(f"  training episodes: {i}/{len(named)} moves ({time.perf_counter() - t0:.0f} s)", flush=True)
    expert_train = train.score({})
    train.close()
    policies = []
    for name, move in named.items():
        policy = TunedCarExpert({"centerline": move})
        policy.label = policy.policy_id = name
        policies.append(policy)
    expert = ScriptedCarExpert()
    cfg = EvalConfig(world="car", episodes=args.episodes, duration_s=args.duration_s, zero_shot=False)
    held_out = [e for e in car_episodes(cfg) if e[1]["category"] == "centerline"]
    rows = evaluate_car(cfg, [expert, *policies], episodes=held_out)
    table = Table(title=f"The centerline margin's inset and the heading weight: {args.train_episodes} training "
                        f"episodes (widths {args.track_widths[0]:g}-{args.track_widths[1]:g} m, seeds from "
                        f"{SEARCH_SEED}), {args.episodes} held-out (score points; held-out paired against the expert, "
                        f"95 % BCa). The expert: training {100 * expert_train:.1f}")
    for col in ("move", "training tracks", "held-out", "held-out - expert"):
        table.add_column(col)
    summary = {"expert": {"train": expert_train, "heldout": dataclasses.asdict(policy_ci(rows, expert.label,
                                                                                           category="centerline"))}}
    for name in named:
        held = policy_ci(rows, name, category="centerline")
        gain = paired_gain(rows, name, expert.label, category="centerline")
        summary[name] = {"train": train_scores[name], "heldout": dataclasses.asdict(held), "gain": dataclasses.asdict(gain)}
        table.add_row(name, f"{100 * train_scores[name]:.1f}", f"{100 * held.mean:.1f}",
                      f"{100 * gain.mean:+.1f} [{100 * gain.low:+.1f}, {100 * gain.high:+.1f}]")
    Console(width=160).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "centerline_insets", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seconds": time.perf_counter() - t0, "moves": named, "summary": summary,
        "rows": [{k: v for k, v in r.items() if k not in ("thought", "raw", "thought_flags")} for r in rows],
    }, indent=1))
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
