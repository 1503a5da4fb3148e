"""The `shakedown` command."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from twin.core.config import ConfigError, parse_config


def _demo(args: argparse.Namespace, rest: list[str]) -> int:
    """Each world's demo config defines its own flags (docstrings and defaults shown by --help)."""
    if args.world == "factory":
        from shakedown.demo import FactoryDemoConfig, run_factory_demo

        run_factory_demo(parse_config(FactoryDemoConfig, rest, prog="shakedown demo --world factory"))
        return 0
    from shakedown.demo import DemoConfig, run_demo

    run_demo(parse_config(DemoConfig, rest, prog="shakedown demo [--world car]"))
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
    report = verify(args.log, public, allow_unsigned_tail=args.allow_unsigned_tail,
                    allow_missing_head=args.allow_missing_head, witness=args.witness)
    print(report.summary())
    if args.prove is not None and report.exit_code != 2:
        proof = prove(args.log, args.prove)
        ok = verify_proof(proof, public)
        print(json.dumps({k: v for k, v in proof.items() if k != "entry"}, indent=1))
        print(f"inclusion of entry {args.prove} in the signed tree of {proof['tree_size']} entries: "
              f"{'VERIFIED' if ok else 'FAILED'}")
        return report.exit_code or (0 if ok else 1)
    return report.exit_code


def _audit_witness(args: argparse.Namespace) -> int:
    from safety.audit.witness import Witness, WitnessError

    witness = Witness(args.store)
    try:
        head = witness.cosign(args.log, _public_key(args))
    except WitnessError as exc:
        print(f"REFUSED: {exc}")
        return 1
    print(f"co-signed the head of {head['tree_size']} entries (root {head['root'][:16]}...) with witness key "
          f"{head['witness_key_id']}; stored in {args.store}")
    return 0


def _audit_search(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from safety.audit.search import Query, search, total_cost

    q = Query(kind=None if args.kind == "any" else args.kind, interventions=args.interventions,
              min_cost=args.min_cost, thought=args.thought, policy=args.policy, since=args.since, until=args.until)
    if args.log.endswith(".db"):  # an index of many verified logs (shakedown audit index)
        from safety.audit.index import query

        hits = [{"seq": r["seq"], "kind": r["kind"], "body": r["body"], "log": r["log"]}
                for r in query(args.log, **{k: v for k, v in dataclasses.asdict(q).items()})]
    else:
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


def _audit_index(args: argparse.Namespace) -> int:
    from safety.audit.index import index_logs
    from safety.audit.keys import load_public
    from shakedown.audit_report import car_flags

    key = load_public(Path(args.key)) if args.key else None
    results = index_logs(args.db, args.logs, key, car_flags)
    for r in results:
        print(f"{'indexed' if r['ok'] else 'NOT INDEXED'}: {r['path']}: {r['summary']}")
    return 0 if all(r["ok"] for r in results) else 1


def _audit_rates(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from safety.audit.index import rates

    rows = rates(args.db, args.by)
    table = Table(title=f"decisions by {args.by} across every verified log in {args.db}")
    for col in (args.by, "decisions", "interventions", "contradictions", "parse failures", "mean cost"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r[args.by]), str(r["decisions"]), f"{100 * r['intervention_rate']:.1f} %",
                      f"{100 * r['contradiction_rate']:.1f} %", f"{100 * r['parse_failure_rate']:.1f} %",
                      f"{r['mean_cost']:.3f}")
    Console(width=None if Console().is_terminal else 160).print(table)  # piped: do not wrap at 80
    return 0


def _audit_report(args: argparse.Namespace) -> int:
    from shakedown.audit_report import write_audit_report

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


def _train(args: argparse.Namespace, rest: list[str]) -> int:
    """Every flag after the stage goes to that stage's own args (one definition, no copies here);
    the trainer reports progress to a rich bar supplied from here."""
    import importlib

    from shakedown.progress import RichProgress

    module, worlds, world_flag = STAGES[args.stage]
    if args.world not in worlds:
        raise ConfigError(f"stage {args.stage!r} trains {' and '.join(worlds)}, not {args.world!r} "
                          "(car: vision, sft, grpo, sb3; factory: vision, sft, ppo, sb3)")
    argv = ([world_flag, args.world] if world_flag else []) + ["--out", f"runs/{args.stage}-{args.world}"] + rest
    importlib.import_module(module).main(argv, progress=RichProgress(),
                                         prog=f"shakedown train {args.world} --stage {args.stage}")
    return 0


def _eval(args: argparse.Namespace, rest: list[str]) -> int:
    from agents.evaluation.evaluate import EvalConfig
    from shakedown.eval import run_eval

    run_eval(parse_config(EvalConfig, rest, prog="shakedown eval"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shakedown", description="Digital twins for taking robot policies "
                                     "from simulation to real machines safely.")
    sub = parser.add_subparsers(dest="command", required=True)
    # demo, train and eval take their flags from config dataclasses (tyro): `--help` after the
    # command lists every field with its docstring and default, so none is repeated here.
    demo = sub.add_parser("demo", add_help=False,
                          help="the main job: policies on a held-out world, shield, audit log, HTML report "
                          "(shakedown demo [--world factory] --help lists its flags)")
    demo.add_argument("--world", choices=["car", "factory"], default="car", help="which twin")
    demo.set_defaults(func=_demo)

    train = sub.add_parser("train", add_help=False,
                           help="train the VLM agent: vision pre-training, supervised warm-up, closed-loop RL, "
                           "or an SB3 baseline (shakedown train car --stage grpo --help lists the stage's flags)")
    train.add_argument("world", choices=["car", "factory"])
    train.add_argument("--stage", choices=list(STAGES), default="sft",
                       help="vision (pre-train the vision tower on privileged labels), sft (warm-up), grpo (car, "
                       "closed loop), ppo (factory, chain of thought), sb3 (classical baseline); every further flag "
                       "goes to the stage")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", add_help=False, help="policies side by side on held-out worlds "
                        "(shakedown eval --help lists its flags)")
    ev.set_defaults(func=_eval)

    br = sub.add_parser("bridge", add_help=False, help="the ZeroMQ bridge to robots: serve, emulate, keys, record "
                        "(shakedown bridge serve --help lists its flags)")
    br.add_argument("bridge_command", choices=[*BRIDGE, "keys"], nargs="?",
                    help="; ".join(f"{k}: {v[1]}" for k, v in BRIDGE.items()) + "; keys: make a CURVE key pair")
    br.set_defaults(func=_bridge)

    ro = sub.add_parser("rollout", add_help=False, help="a candidate policy up the ladder sim -> shadow -> guarded -> "
                        "canary -> full: plan, run, status, promote, rollback, report (shakedown rollout --help)")
    ro.set_defaults(func=_rollout)

    audit = sub.add_parser("audit", help="verify, search and report on an audit log").add_subparsers(
        dest="audit_command", required=True)
    shown = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}
    v = audit.add_parser("verify", **shown, help="check the hash chain, checkpoints and signatures; prove an entry",
                         description="Exit codes: 0 the log verifies; 1 tampering (its history does not hold); "
                         "2 usage or input (no log, an empty log, a bad option).")
    v.add_argument("log", help="the audit log (JSON lines)")
    v.add_argument("--key", help="trusted Ed25519 public key (PEM); default: audit-key.pub beside the log")
    v.add_argument("--prove", type=int, metavar="SEQ", help="also prove that entry SEQ is in the signed tree")
    v.add_argument("--allow-unsigned-tail", action="store_true",
                   help="accept entries after the last checkpoint (a log still being written)")
    v.add_argument("--allow-missing-head", action="store_true", help="accept a log without its signed head file")
    v.add_argument("--witness", metavar="DIR", help="a witness store: fail if the log is shorter than, or "
                   "inconsistent with, any head it co-signed")
    v.set_defaults(func=_audit_verify)
    w = audit.add_parser("witness", **shown, help="co-sign a log's signed head after checking it extends every "
                         "head this witness saw")
    w.add_argument("log", help="the audit log (JSON lines)")
    w.add_argument("--store", required=True, help="the witness's folder (its key and co-signed heads)")
    w.add_argument("--key", help="the log's trusted public key (PEM); default: audit-key.pub beside the log")
    w.set_defaults(func=_audit_witness)
    s = audit.add_parser("search", **shown, help="find decisions by intervention, cost, thought, policy, time")
    s.add_argument("log", help="the audit log (JSON lines), or a database made by `shakedown audit index` (.db)")
    s.add_argument("--kind", default="decision", help="entry kind, or 'any'")
    s.add_argument("--interventions", action="store_true", help="only where the shield intervened")
    s.add_argument("--min-cost", type=float, help="only decisions whose summed constraint cost is at least this")
    s.add_argument("--thought", help="phrase in the chain of thought")
    s.add_argument("--policy", help="policy id (prefix)")
    s.add_argument("--since", type=float, help="Unix time")
    s.add_argument("--until", type=float, help="Unix time")
    s.add_argument("--json", action="store_true", help="print matching entries as JSON lines")
    s.set_defaults(func=_audit_search)
    ix = audit.add_parser("index", **shown, help="verify logs and load them into one database for audits across "
                          "runs (search it with `audit search DB.db`, summarise with `audit rates`)")
    ix.add_argument("db", help="the SQLite database (created if missing; re-indexing a log replaces its rows)")
    ix.add_argument("logs", nargs="+", help="audit logs (demo runs, training runs, robot sessions)")
    ix.add_argument("--key", help="one trusted public key for all logs; default: audit-key.pub beside each log")
    ix.set_defaults(func=_audit_index)
    rt = audit.add_parser("rates", **shown, help="intervention, contradiction and parse-failure rates across "
                          "every indexed log")
    rt.add_argument("db", help="a database made by `shakedown audit index`")
    rt.add_argument("--by", default="policy", choices=["policy", "robot", "rung", "log", "day"], help="group by")
    rt.set_defaults(func=_audit_rates)
    r = audit.add_parser("report", **shown, help="HTML report: timeline, interventions, thoughts beside actions")
    r.add_argument("log", help="the audit log (JSON lines)")
    r.add_argument("--key", help="trusted Ed25519 public key (PEM); default: audit-key.pub beside the log")
    r.add_argument("-o", "--out", help="HTML file to write; default: the log's name with .report.html")
    r.set_defaults(func=_audit_report)
    rp = audit.add_parser("repair", **shown, help="quarantine a torn last entry and record that in the log")
    rp.add_argument("log", help="the audit log (JSON lines)")
    rp.add_argument("--private-key", required=True, help="the log's Ed25519 signing key (PEM), to sign the repair")
    rp.set_defaults(func=_audit_repair)

    from shakedown.scenario_cli import add_parser as add_scenario_parser

    add_scenario_parser(sub)
    from shakedown.calibrate import add_parser as add_calibrate_parser

    add_calibrate_parser(sub)
    return parser


BRIDGE = {
    # command: (module whose main(argv, prog) runs it, what it does)
    "serve": ("bridge.serve", "serve a policy to robots over ZeroMQ"),
    "emulate": ("bridge.robot.car.emulator", "an emulated car (or --world factory: cell) driven by a policy server"),
    "record": ("bridge.relay", "record every message between robots and a policy server to MCAP"),
    "scenario": ("bridge.calibration.scenario", "a robot's recording as a scenario that replays it in the twin"),
}


def _bridge(args: argparse.Namespace, rest: list[str]) -> int:
    """`keys` is handled here; serve, emulate and record take their flags from their configs."""
    import importlib

    if args.bridge_command is None:
        print("usage: shakedown bridge {serve,emulate,record,keys} [flags]  (each with --help)")
        for name, (_, what) in BRIDGE.items():
            print(f"  {name:8} {what}")
        print("  keys     make a CURVE key pair")
        return 0
    if args.bridge_command == "keys":
        from bridge.keys import make_keys

        parser = argparse.ArgumentParser(prog="shakedown bridge keys", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                         description="Make a CURVE key pair (name.key public, name.key_secret secret). "
                                         "Put each robot's public .key into the server's --allowed-clients folder.")
        parser.add_argument("folder", help="where to write the pair")
        parser.add_argument("--name", default="robot", help="file name of the pair")
        keys = parser.parse_args(rest)
        public, secret = make_keys(keys.folder, keys.name)
        print(f"public: {public}\nsecret: {secret} (keep it on this machine only)")
        return 0
    module, _ = BRIDGE[args.bridge_command]
    prog = f"shakedown bridge {args.bridge_command}"
    if args.bridge_command == "emulate":  # one emulator per world; --world picks it
        world = argparse.ArgumentParser(add_help=False)
        world.add_argument("--world", choices=["car", "factory"], default="car")
        picked, rest = world.parse_known_args(rest)
        if picked.world == "factory":
            module, prog = "bridge.robot.factory.emulator", f"{prog} --world factory"
    importlib.import_module(module).main(rest, prog=prog)
    return 0


def _rollout(args: argparse.Namespace, rest: list[str]) -> int:
    """plan, run, status, promote, rollback and report parse their own flags (shakedown.rollout)."""
    from shakedown.rollout import main as rollout_main

    return rollout_main(rest, prog="shakedown rollout")


TAKES_REST = {"demo", "train", "eval", "bridge", "rollout", "calibrate"}
"""Commands whose further flags are parsed by their config (tyro), not by argparse."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command not in TAKES_REST and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args, rest) if args.command in TAKES_REST else args.func(args)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"shakedown: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # a config's flags were rejected (tyro printed why) or --help was shown
        return exc.code if isinstance(exc.code, int) else 2


if __name__ == "__main__":
    sys.exit(main())
