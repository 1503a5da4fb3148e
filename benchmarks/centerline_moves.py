"""Which moves away from the expert's centerline template pay, one at a time and together: the landscape GRPO climbs.

benchmarks.expert_headroom found a centerline tune 10.6 points above the expert on the held-out track. This
asks what a policy that starts at the expert's template (as the SFT adapter does) must change to get there,
and whether each step on the way already pays, which is what a policy-gradient method needs: the expert's
template with the heading weight raised, the racing-line weight raised, the margin at its top (1.0 m: above
every track's free half width, so the soft bounds close on the centre line), and their combinations, each
scored on the search's training episodes and on the evaluation's held-out centerline episodes.

    python -m benchmarks.centerline_moves          # ~3 min on one thread

Prints the table and writes benchmarks/results/centerline_moves.json.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agents.evaluation.evaluate import EvalConfig, car_episodes, evaluate_car  # noqa: E402
from agents.evaluation.intervals import paired_gain, policy_ci  # noqa: E402
from benchmarks.expert_headroom import ROOT, SearchEpisodes, TunedCarExpert, write_result  # noqa: E402

TOP_MARGIN = {"margin_share": 10.0}
"""A share of the free half width that clips to the margin's top, 1.0 m, on every track."""
MOVES: dict[str, dict[str, float]] = {
    "margin 1.0": TOP_MARGIN,
    "qalpha 32": {"qalpha": 32.0},
    "qn 16": {"qn": 16.0},
    "qalpha 32, qn 16": {"qalpha": 32.0, "qn": 16.0},
    "qalpha 32, margin 1.0": {"qalpha": 32.0, **TOP_MARGIN},
    "qn 16, margin 1.0": {"qn": 16.0, **TOP_MARGIN},
    "qalpha 32, qn 16, margin 1.0": {"qalpha": 32.0, "qn": 16.0, **TOP_MARGIN},
    "qalpha 20, qn 8, margin 1.0": {"qalpha": 20.0, "qn": 8.0, **TOP_MARGIN},
}
"""Moves from the expert's centerline template (the values benchmarks.expert_headroom's best tune has); the
expert itself is always compared too."""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--search-episodes", type=int, default=8, help="training episodes each move drives")
    ap.add_argument("--episodes", type=int, default=10, help="held-out centerline episodes")
    ap.add_argument("--duration-s", type=float, default=8.0, help="simulated seconds per drive")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "centerline_moves.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    train = SearchEpisodes("centerline", args.search_episodes, args.duration_s)
    cfg = EvalConfig(world="car", episodes=args.episodes, duration_s=args.duration_s, zero_shot=False)
    compare_moves("centerline_moves", MOVES, train, cfg, args, t0,
                  f"Moves from the expert's centerline template: {args.search_episodes} training episodes, "
                  f"{args.episodes} held-out (score points; held-out paired against the expert, 95 % BCa)")


def compare_moves(benchmark: str, moves: dict[str, dict[str, float]], train: SearchEpisodes, cfg: EvalConfig,
                  args: argparse.Namespace, t0: float, title: str) -> None:
    """Drive each move from the expert's centerline template (a TunedCarExpert tune; the move named 'expert' is
    the empty tune, the expert itself) on `train`'s episodes and on cfg's held-out centerline episodes, pair each
    held-out score with the expert's, print the table and write args.out. Closes `train`."""
    moves = {"expert": {}, **moves}
    train_scores = {}
    for i, (name, move) in enumerate(moves.items(), 1):
        train_scores[name] = train.score(move)
        print(f"  training episodes: {i}/{len(moves)} moves ({time.perf_counter() - t0:.0f} s)", flush=True)
    train.close()
    policies = []
    for name, move in moves.items():
        policy = TunedCarExpert({"centerline": move})
        policy.label = policy.policy_id = name
        policies.append(policy)
    rows = evaluate_car(cfg, policies, episodes=[e for e in car_episodes(cfg) if e[1]["category"] == "centerline"])
    table = Table(title=title)
    for col in ("move", "training tracks", "held-out", "held-out - expert"):
        table.add_column(col)
    summary = {}
    for name in moves:
        held = policy_ci(rows, name, category="centerline")
        gain = paired_gain(rows, name, "expert", category="centerline") if name != "expert" else None
        summary[name] = {"train": train_scores[name], "heldout": dataclasses.asdict(held),
                         "gain": dataclasses.asdict(gain) if gain else None}
        table.add_row(name, f"{100 * train_scores[name]:.1f}", f"{100 * held.mean:.1f}",
                      f"{100 * gain.mean:+.1f} [{100 * gain.low:+.1f}, {100 * gain.high:+.1f}]" if gain else "-")
    Console(width=160).print(table)
    write_result(benchmark, args, t0, rows, moves={k: v for k, v in moves.items() if k != "expert"}, summary=summary)


if __name__ == "__main__":
    main()
