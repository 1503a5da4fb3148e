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
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from agents.evaluation.evaluate import EvalConfig  # noqa: E402
from agents.policies.car_expert import WALL_GAP  # noqa: E402
from benchmarks.centerline_moves import compare_moves  # noqa: E402
from benchmarks.expert_headroom import ROOT, SEARCH_SEED, SearchEpisodes  # noqa: E402
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
    train = SearchEpisodes("centerline", args.train_episodes, args.train_duration_s,
                           training_tracks(tuple(args.track_widths)))
    cfg = EvalConfig(world="car", episodes=args.episodes, duration_s=args.duration_s, zero_shot=False)
    compare_moves("centerline_insets", moves(args.insets, args.headings), train, cfg, args, t0,
                  f"The centerline margin's inset and the heading weight: {args.train_episodes} training episodes "
                  f"(widths {args.track_widths[0]:g}-{args.track_widths[1]:g} m, seeds from {SEARCH_SEED}), "
                  f"{args.episodes} held-out (score points; held-out paired against the expert, 95 % BCa)")

if __name__ == "__main__":
    main()
