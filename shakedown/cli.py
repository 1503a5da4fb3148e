"""The `shakedown` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from twin.core.config import ConfigError


def _demo(args: argparse.Namespace) -> int:
    if args.world == "factory":
        from shakedown.demo_factory import FactoryDemoConfig, run_factory_demo

        run_factory_demo(FactoryDemoConfig(episodes=args.episodes or 3, parts=args.parts, seed=args.seed,
                                           out_dir=Path(args.out)))
        return 0
    from shakedown.demo import DemoConfig, run_demo

    run_demo(DemoConfig(track=args.track, episodes_per_category=args.episodes or 3, duration_s=args.duration,
                        seed=args.seed, out_dir=Path(args.out), stress_episodes=args.stress_episodes,
                        vlm=not args.no_vlm))
    return 0


def _public_key(args: argparse.Namespace):
    from safety.audit.keys import load_public

    if args.key:
        return load_public(Path(args.key))
    beside = Path(args.log).parent / "audit-key.pub"
    if not beside.exists():
        raise ConfigError(f"no --key given and no audit-key.pub beside {args.log}; pass the trusted public key")
    print(f"note: trusting {beside}, stored beside the log; pass --key to verify against an independent copy",
          file=sys.stderr)
    return load_public(beside)


def _audit_verify(args: argparse.Namespace) -> int:
    import json

    from safety.audit.verify import prove, verify, verify_proof

    public = _public_key(args)
    report = verify(args.log, public)
    print(report.summary())
    if args.prove is not None:
        proof = prove(args.log, args.prove)
        ok = verify_proof(proof, public)
        print(json.dumps({k: v for k, v in proof.items() if k != "entry"}, indent=1))
        print(f"inclusion of entry {args.prove} in the signed tree of {proof['tree_size']} entries: "
              f"{'VERIFIED' if ok else 'FAILED'}")
        return 0 if report.ok and ok else 1
    return 0 if report.ok else 1


def _audit_search(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from safety.audit.search import Query, search, total_cost

    q = Query(kind=None if args.kind == "any" else args.kind, interventions=args.interventions,
              min_cost=args.min_cost, thought=args.thought, policy=args.policy, since=args.since, until=args.until)
    hits = list(search(args.log, q))
    if args.json:
        for e in hits:
            print(json.dumps(e))
        return 0
    table = Table(title=f"{len(hits)} matching entries")
    for col in ("seq", "kind", "policy", "instruction", "thought", "interventions", "cost"):
        table.add_column(col)
    for e in hits:
        b = e.get("body", {})
        table.add_row(str(e["seq"]), e["kind"], str(b.get("policy_id", "")), str(b.get("instruction", ""))[:40],
                      str(b.get("thought", ""))[:60], str((b.get("shield") or {}).get("interventions", "")),
                      f"{total_cost(b):.2f}")
    Console().print(table)
    return 0


def _audit_report(args: argparse.Namespace) -> int:
    from safety.audit.report import write_audit_report

    out = Path(args.out) if args.out else Path(args.log).with_suffix(".report.html")
    print(f"report: {write_audit_report(Path(args.log), _public_key(args), out)}")
    return 0


def _audit_repair(args: argparse.Namespace) -> int:
    from safety.audit.keys import load_private
    from safety.audit.log import AuditLog

    with AuditLog(args.log, load_private(Path(args.private_key)), repair=True) as log:
        print(f"{args.log}: {log.size} entries; any torn tail was quarantined and recorded")
    return 0


STAGES = {
    # stage: (module, worlds it serves, the flag naming the world in the stage's args)
    "vision": ("agents.training.vision", ("car", "factory"), "--task"),
    "sft": ("agents.training.sft", ("car", "factory"), "--task"),
    "grpo": ("agents.training.grpo", ("car",), None),
    "ppo": ("agents.training.ppo", ("factory",), None),
    "sb3": ("agents.training.sb3", ("car", "factory"), "--world"),
}


def _train(args: argparse.Namespace, extra: list[str]) -> int:
    """Every flag after the stage goes to that stage's own args (one definition, no copies here)."""
    import importlib

    module, worlds, world_flag = STAGES[args.stage]
    if args.world not in worlds:
        raise ConfigError(f"stage {args.stage!r} trains {' and '.join(worlds)}, not {args.world!r} "
                          "(car: vision, sft, grpo, sb3; factory: vision, sft, ppo, sb3)")
    argv = ([world_flag, args.world] if world_flag else []) + ["--out", f"runs/{args.stage}-{args.world}"] + extra
    importlib.import_module(module).main(argv)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from agents.evaluation.evaluate import EvalConfig, run_eval

    run_eval(EvalConfig(world=args.world, adapters=tuple(args.adapter), baselines=tuple(args.baseline),
                        zero_shot=not args.no_zero_shot,
                        episodes=args.episodes, parts=args.parts, max_new_tokens=args.max_new_tokens,
                        out_dir=Path(args.out)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shakedown", description="Digital twins for taking robot policies "
                                     "from simulation to real machines safely.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="default MPC vs scripted expert on a held-out track, with an HTML report")
    demo.add_argument("--world", choices=["car", "factory"], default="car", help="which twin")
    demo.add_argument("--track", default="sprint", help="track name or procedural-<seed> (default: held-out 'sprint')")
    demo.add_argument("--episodes", type=int, default=None,
                      help="randomized episodes per instruction category (car, default 3) or per policy (factory, default 3)")
    demo.add_argument("--parts", type=int, default=12, help="factory: parts inspected per episode")
    demo.add_argument("--duration", type=float, default=8.0, help="simulated seconds per drive")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--stress-episodes", type=int, default=4, help="reckless-driver episodes for the shield test")
    demo.add_argument("--no-vlm", action="store_true", help="skip the VLM agent with the shipped adapter")
    demo.add_argument("--out", default="runs", help="folder for run outputs")
    demo.set_defaults(func=_demo)

    train = sub.add_parser("train", help="train the VLM agent: supervised warm-up, then closed-loop RL")
    train.add_argument("world", choices=["car", "factory"])
    train.add_argument("--stage", choices=list(STAGES), default="sft",
                       help="vision (pre-train the vision tower on privileged labels), sft (warm-up), grpo (car, "
                       "closed loop), ppo (factory, chain of thought), sb3 (classical baseline); every further flag "
                       "goes to the stage (see python -m <stage module> --help)")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="policies side by side on held-out worlds")
    ev.add_argument("world", choices=["car", "factory"])
    ev.add_argument("--adapter", action="append", default=[], help="adapter directory (repeatable)")
    ev.add_argument("--no-zero-shot", action="store_true", help="skip the VLM without adapter")
    ev.add_argument("--episodes", type=int, default=3, help="car: per category; factory: episodes")
    ev.add_argument("--parts", type=int, default=8, help="factory: parts per episode")
    ev.add_argument("--baseline", action="append", default=[], help="stable-baselines3 run folder (repeatable)")
    ev.add_argument("--max-new-tokens", type=int, default=128)
    ev.add_argument("--out", default="runs")
    ev.set_defaults(func=_eval)

    audit = sub.add_parser("audit", help="verify, search and report on an audit log").add_subparsers(
        dest="audit_command", required=True)
    v = audit.add_parser("verify", help="check the hash chain, checkpoints and signatures; prove an entry")
    v.add_argument("log")
    v.add_argument("--key", help="trusted Ed25519 public key (PEM); default: audit-key.pub beside the log")
    v.add_argument("--prove", type=int, metavar="SEQ", help="also prove that entry SEQ is in the signed tree")
    v.set_defaults(func=_audit_verify)
    s = audit.add_parser("search", help="find decisions by intervention, cost, thought, policy, time")
    s.add_argument("log")
    s.add_argument("--kind", default="decision", help="entry kind, or 'any'")
    s.add_argument("--interventions", action="store_true", help="only where the shield intervened")
    s.add_argument("--min-cost", type=float)
    s.add_argument("--thought", help="phrase in the chain of thought")
    s.add_argument("--policy", help="policy id (prefix)")
    s.add_argument("--since", type=float, help="Unix time")
    s.add_argument("--until", type=float, help="Unix time")
    s.add_argument("--json", action="store_true", help="print matching entries as JSON lines")
    s.set_defaults(func=_audit_search)
    r = audit.add_parser("report", help="HTML report: timeline, interventions, thoughts beside actions")
    r.add_argument("log")
    r.add_argument("--key")
    r.add_argument("-o", "--out")
    r.set_defaults(func=_audit_report)
    rp = audit.add_parser("repair", help="quarantine a torn last entry and record that in the log")
    rp.add_argument("log")
    rp.add_argument("--private-key", required=True)
    rp.set_defaults(func=_audit_repair)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, extra) if args.command == "train" else args.func(args)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"shakedown: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
