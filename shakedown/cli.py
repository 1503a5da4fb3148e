"""The `shakedown` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from twin.config import ConfigError


def _demo(args: argparse.Namespace) -> int:
    from shakedown.demo import DemoConfig, run_demo

    run_demo(DemoConfig(track=args.track, episodes_per_category=args.episodes, duration_s=args.duration,
                        seed=args.seed, out_dir=Path(args.out)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shakedown", description="Digital twins for taking robot policies "
                                     "from simulation to real machines safely.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="default MPC vs scripted expert on a held-out track, with an HTML report")
    demo.add_argument("--world", choices=["car"], default="car", help="which twin (the factory twin comes later)")
    demo.add_argument("--track", default="sprint", help="track name or procedural-<seed> (default: held-out 'sprint')")
    demo.add_argument("--episodes", type=int, default=3, help="randomized episodes per instruction category")
    demo.add_argument("--duration", type=float, default=8.0, help="simulated seconds per drive")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="runs", help="folder for run outputs")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"shakedown: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
