"""`shakedown scenario list|show|run|search|estimate|shrink|replay|export|report`.

Every study writes into one folder per scenario (default `runs/scenario-<name>/`): the
episode database (`campaign.db`, one row per episode, resumable: run the same command
again after a kill), one JSON per study, and `report.html`.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from twin.core.config import ConfigError

BACKENDS = ("pool", "ray", "inline")


def _scenario_text(args: argparse.Namespace) -> tuple[str, str]:
    """(scenario text, name) with --shield applied; loading validates it (errors name file, line, field)."""
    from scenarios.export import with_system
    from scenarios.loader import load

    scenario = load(args.scenario)
    text = Path(scenario.source).read_text()
    if getattr(args, "shield", None) is not None:
        text = with_system(text, shield=args.shield == "on")
    return text, scenario.name


def _out(args: argparse.Namespace, name: str) -> Path:
    out = Path(args.out) if getattr(args, "out", None) else Path("runs") / f"scenario-{name}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _store(out: Path):
    from scenarios.campaign import EpisodeStore

    return EpisodeStore(out / "campaign.db")


def _bar():
    from shakedown.progress import RichProgress

    return RichProgress()


def _suffix(args: argparse.Namespace) -> str:
    return f"-shield-{args.shield}" if getattr(args, "shield", None) else ""


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from scenarios.loader import library, library_name, load
    from scenarios.space import SampleSpace

    table = Table(title="Shipped rare-event scenarios (shakedown scenario show NAME)")
    table.add_column("name", no_wrap=True)
    for col in ("world", "system under test", "shield", "dims", "what happens"):
        table.add_column(col)
    for path in library():
        sc = load(path)
        table.add_row(library_name(path), sc.world.kind, sc.system.policy, "on" if sc.system.shield else "off",
                      str(SampleSpace(sc).d), sc.description.split(". ")[0])
    Console().print(table)
    return 0


def _show(args: argparse.Namespace) -> int:
    from scenarios.loader import load
    from scenarios.space import SampleSpace
    from scenarios.worlds import WORLDS

    sc = load(args.scenario)
    print(Path(sc.source).read_text())
    print(f"# sample vector: {SampleSpace(sc).d} standard-normal coordinates")
    for dim in SampleSpace(sc).dims:
        print(f"#   {dim.name:40} {dim.dist if dim.dist is not None else f'disturbance, std {dim.scale}'}")
    decl = WORLDS[sc.world.kind]
    print(f"# signals: {', '.join(decl.signals)}")
    print(f"# actions: {', '.join(decl.actions)}; channels: {', '.join(decl.channels)}")
    return 0


def _print_study(result, path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from shakedown.scenario_report import sample_rows

    table = Table(title=f"{result.kind} {result.method}: lowest robustness first")
    for col in ("episode", "robustness", "failed", "monitor", "when (s)", "where", "log-likelihood"):
        table.add_column(col, justify="right")
    for row in sample_rows(result.episodes, 10):
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row))
    Console().print(table)
    fails = result.failures()
    errored = sum(e["error"] is not None for e in result.episodes)
    invalid = sum((not e["valid"]) and e["error"] is None for e in result.episodes)
    print(f"{result.scenario}: {len(result.episodes)} episodes, {len(fails)} failures, {invalid} rejected as invalid, "
          f"{errored} errored")
    if result.estimate:
        print(f"  {result.estimate['summary']}")
    if result.most_likely:
        ml = result.most_likely
        print(f"  most likely failure: episode {ml['index']} {ml['signature']} log-likelihood {ml['loglik']:.2f}")
    print(f"  saved {path}")


def _run(args: argparse.Namespace) -> int:
    from scenarios.study import run_nominal

    text, name = _scenario_text(args)
    out = _out(args, name)
    result = run_nominal(text, _store(out), args.episodes, args.seed, args.backend, args.workers, _bar(),
                         source=args.scenario)
    _print_study(result, result.save(out / f"run-{args.seed}{_suffix(args)}.json"))
    return 0


def _search(args: argparse.Namespace) -> int:
    from scenarios.study import search_failures

    text, name = _scenario_text(args)
    out = _out(args, name)
    result = search_failures(text, _store(out), args.method, args.budget, args.seed, args.batch, args.backend,
                             args.workers, _bar(), source=args.scenario)
    _print_study(result, result.save(out / f"search-{args.method}-{args.seed}{_suffix(args)}.json"))
    for e in sorted(result.failures(), key=lambda e: -e["loglik"])[:3]:
        print(f"  replay: {replay_command(args.scenario, e['z'], e['seed'], args.shield)}")
    return 0


def _estimate(args: argparse.Namespace) -> int:
    from scenarios.study import estimate_probability

    text, name = _scenario_text(args)
    out = _out(args, name)
    sizes = {"mc": {"n": args.episodes}, "ce-is": {"n_per_stage": args.per_stage, "n_final": args.episodes},
             "subset": {"n_per_level": args.per_stage}}[args.method]
    result = estimate_probability(text, _store(out), args.method, args.seed, args.backend, args.workers, _bar(),
                                  source=args.scenario, **sizes)
    _print_study(result, result.save(out / f"estimate-{args.method}-{args.seed}{_suffix(args)}.json"))
    return 0


def _z_and_seed(args: argparse.Namespace) -> tuple[list[float], int]:
    if args.from_study:
        study = json.loads(Path(args.from_study).read_text())
        episodes = study["episodes"]
        if args.index is None:
            fails = [e for e in episodes if e["failed"]]
            if not fails:
                raise ConfigError(f"{args.from_study} holds no failure; pass --index to pick an episode")
            pick = max(fails, key=lambda e: e["loglik"])
        else:
            pick = next((e for e in episodes if e["index"] == args.index), None)
            if pick is None:
                raise ConfigError(f"{args.from_study} has no episode {args.index}")
        return pick["z"], pick["seed"]
    if args.z is None or args.seed is None:
        raise ConfigError("give --z and --seed, or --from-study STUDY.json [--index N]")
    return [float(v) for v in args.z.split(",")] if args.z else [], args.seed


def replay_command(scenario: str, z: list[float], seed: int, shield: str | None = None) -> str:
    """The exact command that replays an episode."""
    zs = ",".join(repr(float(v)) for v in z)
    shield_flag = f" --shield {shield}" if shield else ""
    return f"shakedown scenario replay {shlex.quote(str(scenario))} --z={shlex.quote(zs)} --seed {seed}{shield_flag}"


def _replay(args: argparse.Namespace) -> int:
    from scenarios.episode import run_episode
    from scenarios.export import load_case, replay

    if args.case:
        case = load_case(args.case)
        result, identical = replay(case)
        print(f"{case.case_id}: robustness {result.robustness:.4g}, failed={result.failed}, {result.signature}")
        print(f"trace {'identical to' if identical else 'DIFFERS from'} the recorded one ({result.trace_hash[:16]})")
        return 0 if identical else 1
    text, _ = _scenario_text(args)
    z, seed = _z_and_seed(args)
    result, _ = run_episode(text, z, seed)
    print(json.dumps({k: v for k, v in result.row().items() if k != "info"}, indent=1, default=str))
    return 0


def _shrink(args: argparse.Namespace) -> int:
    from scenarios.shrink import shrink

    text, name = _scenario_text(args)
    z, seed = _z_and_seed(args)
    result = shrink(text, z, seed)
    print(f"{name}: {result.signature} kept while shrinking ({result.episodes} episodes); "
          f"log-likelihood {result.loglik_before:.2f} -> {result.loglik_after:.2f}")
    print(f"deviations needed ({len(result.needed)}):")
    for dim, dev in result.needed.items():
        print(f"  {dim:40} {dev['value']:.4g} (nominal {dev['nominal']:.4g}, z {dev['z']:+.2f})")
    print(f"not needed ({len(result.dropped)}): {', '.join(result.dropped) or '-'}")
    out = _out(args, name)
    path = out / f"shrunk-{seed}{_suffix(args)}.json"
    path.write_text(json.dumps({"scenario": name, "shrink": result.__dict__ | {"signature": result.signature.__dict__}},
                               indent=1, default=str))
    print(f"replay: {replay_command(args.scenario, list(result.shrunk), seed, args.shield)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from scenarios.export import export, make_case, with_system

    study = json.loads(Path(args.study).read_text())
    fails = sorted((e for e in study["episodes"] if e["failed"]), key=lambda e: -e["loglik"])[: args.top]
    if not fails:
        raise ConfigError(f"{args.study} holds no failure to export")
    text, _ = _scenario_text(args)
    if args.fixed_shield:
        text = with_system(text, shield=True)
    cases = [make_case(text, e["z"], e["seed"], args.expect)[0] for e in fails]
    for path in export(cases, args.out):
        print(f"wrote {path}")
    print(f"run them: python -m pytest {args.out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from shakedown.scenario_report import write_report

    path = write_report(Path(args.folder), axes=tuple(args.axes.split(",")) if args.axes else None)
    print(f"report: {path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `scenario` command and its subcommands."""
    shown = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}
    sc = sub.add_parser("scenario", help="author rare events, search for failures, estimate their probability, shrink "
                        "and export them as regression tests").add_subparsers(dest="scenario_command", required=True)

    def common(p: argparse.ArgumentParser, campaign: bool = True) -> None:
        p.add_argument("scenario", help="a scenario file, or a library name such as car/friction-drop-before-corner")
        p.add_argument("--shield", choices=["on", "off"], help="override the scenario's shield setting")
        p.add_argument("--out", help="folder for the database, results and report (default runs/scenario-<name>)")
        if campaign:
            p.add_argument("--seed", type=int, default=0, help="seed of the study (same seed, same episodes)")
            p.add_argument("--backend", choices=BACKENDS, default="pool", help="where episodes run")
            p.add_argument("--workers", type=int, default=2, help="parallel episodes")

    sc.add_parser("list", **shown, help="the shipped scenarios").set_defaults(func=_list)
    p = sc.add_parser("show", **shown, help="a scenario's file, sample vector, signals and actions")
    p.add_argument("scenario")
    p.set_defaults(func=_show)
    p = sc.add_parser("run", **shown, help="episodes under the nominal distributions (plain Monte Carlo)")
    common(p)
    p.add_argument("-n", "--episodes", type=int, default=100, help="episodes")
    p.set_defaults(func=_run)
    p = sc.add_parser("search", **shown, help="look for failures (minimise robustness)")
    common(p)
    from scenarios.search import SAMPLERS

    p.add_argument("--method", choices=SAMPLERS, default="cross_entropy", help="search method")
    p.add_argument("--budget", type=int, default=200, help="episodes to spend")
    p.add_argument("--batch", type=int, default=16, help="episodes per ask/tell round")
    p.set_defaults(func=_search)
    p = sc.add_parser("estimate", **shown, help="failure probability under the nominal model, with its interval")
    common(p)
    p.add_argument("--method", choices=["ce-is", "subset", "mc"], default="ce-is", help="estimator")
    p.add_argument("--per-stage", type=int, default=200, help="episodes per CE stage / subset level")
    p.add_argument("-n", "--episodes", type=int, default=400, help="final-stage episodes (ce-is) / all episodes (mc)")
    p.set_defaults(func=_estimate)
    for name, func, what in (("shrink", _shrink, "move a failure toward the nominal scenario, keeping the same failure"),
                             ("replay", _replay, "replay one episode exactly (or a regression case with --case)")):
        p = sc.add_parser(name, **shown, help=what)
        common(p, campaign=False)
        p.add_argument("--z", help="the sample vector, comma-separated (write --z=-1.2,0.3 when it starts with '-')")
        p.add_argument("--seed", type=int, help="the episode's seed")
        p.add_argument("--from-study", help="take z and seed from a study JSON (its most likely failure, or --index)")
        p.add_argument("--index", type=int, help="episode index within --from-study")
        if name == "replay":
            p.add_argument("--case", help="a regression case JSON (checks the trace hash)")
        p.set_defaults(func=func)
    p = sc.add_parser("export", **shown, help="write failures as a regression corpus and a pytest module")
    p.add_argument("scenario")
    p.add_argument("study", help="a search or run JSON holding failures")
    p.add_argument("--out", required=True, help="corpus folder (cases/*.json and test_scenario_regressions.py)")
    p.add_argument("--top", type=int, default=3, help="most likely failures to keep")
    p.add_argument("--expect", choices=["pass", "fail"], default="fail",
                   help="'fail': the failure must reproduce; 'pass': the system (fixed) must hold")
    p.add_argument("--fixed-shield", action="store_true", help="export against the shielded system (with --expect pass)")
    p.add_argument("--shield", choices=["on", "off"], help="the shield setting the study ran with")
    p.set_defaults(func=_export)
    p = sc.add_parser("report", **shown, help="HTML report of every study in a folder")
    p.add_argument("folder", help="a study folder (runs/scenario-<name>)")
    p.add_argument("--axes", help="two sample coordinates for the failure map, comma-separated (default: the two that "
                   "separate failures best)")
    p.set_defaults(func=_report)

