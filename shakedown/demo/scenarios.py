"""Part 2 of the demo: a rare event, found, measured, shrunk and kept.

On one shipped scenario (the car: a box landing ahead after a bend; the factory: a person
walking into the cell during a jam) the part
1. searches for failures of the system under test with the shield off,
2. replays every failure it found with the shield on (the same sample, the same seed),
3. estimates the failure probability with the shield on by cross-entropy importance sampling,
   with its interval and the episodes plain Monte Carlo would need for the same precision,
4. shrinks the most likely failure to the deviations that matter,
5. exports it as two regression cases (the unshielded failure must still reproduce, the shielded
   system must pass) and runs them with pytest.
Everything goes through `scenarios` (one SQLite episode store: a killed demo resumes its studies),
and the detailed scenario report is written beside.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

from scenarios.campaign import EpisodeStore, run_campaign
from scenarios.episode import episode_row
from scenarios.export import export, make_case, with_system
from scenarios.loader import load
from scenarios.shrink import shrink
from scenarios.study import estimate_probability, search_failures
from shakedown.demo.part import Part, Table
from shakedown.progress import RichProgress
from shakedown.report import HtmlReport
from shakedown.scenario_cli import replay_command
from shakedown.scenario_report import convergence, failure_map
from shakedown.scenario_report import write_report as scenario_report
from twin.core.config import ConfigError, bounded, check_bounds

ESTIMATORS = {"mc": "plain Monte Carlo, exact Clopper-Pearson interval",
              "ce-is": "cross-entropy importance sampling, its weighted interval"}
"""The estimators part 2 offers (scenarios.estimate), as the table names them."""
ESTIMATOR_NOTES = {
    "mc": "Plain Monte Carlo over the scenario's own distributions: every episode weighs the same, and the exact "
          "(Clopper-Pearson) interval holds at any p, zero failures included.",
    "ce-is": "Cross-entropy importance sampling: stages of episodes move a Gaussian proposal toward the failures, "
             "then the final stage's episodes, weighted by nominal over proposal density, give p and its interval; "
             "'as precise as' is the plain Monte Carlo sample with the same relative error."}
SEARCH_METHOD = "sobol"
"""How the failures are searched for (scenarios.search.SAMPLERS): with the shield off they are not rare,
so an even cover of the space finds them and shows where they lie."""


@dataclasses.dataclass(frozen=True)
class ScenarioSettings:
    """Part 2: the rare-event study."""

    budget: int = bounded(24, 4, 100_000)
    """Episodes the failure search (shield off) spends."""
    estimator: str = "mc"
    """How the failure probability with the shield on is estimated: 'mc' (plain Monte Carlo, exact interval) or
    'ce-is' (cross-entropy importance sampling). The car's box scenario takes 'mc': with the shield on its
    robustness sits at the shield's clearance margin in every episode, a plateau with no gradient for the
    sampler to follow (measured: 1,370 CE-IS episodes never moved the level)."""
    per_stage: int = bounded(100, 10, 100_000)
    """ce-is: episodes per stage fitting the proposal."""
    max_stages: int = bounded(4, 1, 100)
    """ce-is: at most this many fitting stages (then the final stage runs anyway, its interval says how sure)."""
    final: int = bounded(80, 10, 1_000_000)
    """Episodes the probability is computed from (mc: all of them; ce-is: the final stage)."""
    workers: int = bounded(2, 1, 256)
    """Worker processes running episodes."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"ScenarioSettings.estimator {self.estimator!r}: choose one of {', '.join(ESTIMATORS)}")


def _shielded_replay(text: str, failures: list[dict], store: EpisodeStore, workers: int,
                     progress: RichProgress) -> list[dict]:
    """Each failure's sample and seed again with the shield on: its stored row (robustness, failed, ...)."""
    items = [(e["index"], {"scenario": text, "z": e["z"], "seed": e["seed"]}) for e in failures]
    # named by what it replays: a later run into the same store with other failures is another campaign
    digest = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:10]
    rows = run_campaign(episode_row, items, store, f"demo/shield-on-replay/{digest}", {"of": "the search's failures"},
                        workers=workers, progress=progress)
    return [{"index": r.index, **(r.result or {"failed": None, "robustness": math.nan}), "error": r.error}
            for r in rows]


def _pytest(directory: Path) -> tuple[bool, str]:
    """Run the exported cases with pytest in a fresh process: (passed, its summary line)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(directory)],
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode == 0, (lines[-1] if lines else proc.stderr.strip()[-200:])


def scenario_part(name: str, out: Path, seed: int, settings: ScenarioSettings,
                  title: str = "2. A rare event: search, estimate, shrink, keep") -> Part:
    """Part 2 on the shipped scenario `name` (a library name such as car/box-after-bend); files go to `out`."""
    budget, estimator, workers = settings.budget, settings.estimator, settings.workers
    scenario = load(name)
    text = Path(scenario.source).read_text()
    off, on = with_system(text, shield=False), with_system(text, shield=True)
    out.mkdir(parents=True, exist_ok=True)
    store = EpisodeStore(out / "campaign.db")
    progress = RichProgress()
    search = search_failures(off, store, SEARCH_METHOD, budget, seed, batch=max(8, 4 * workers), workers=workers,
                             progress=progress, source=name)
    search_file = search.save(out / f"search-{SEARCH_METHOD}-{seed}-shield-off.json")
    failures = search.failures()
    replayed = _shielded_replay(on, failures, store, workers, progress) if failures else []
    sizes = {"n": settings.final} if estimator == "mc" else \
        {"n_per_stage": settings.per_stage, "n_final": settings.final, "max_stages": settings.max_stages}
    estimate = estimate_probability(on, store, estimator, seed, workers=workers, progress=progress, source=name,
                                    **sizes)
    estimate_file = estimate.save(out / f"estimate-{estimator}-{seed}-shield-on.json")
    progress.finish()
    est = estimate.estimate or {}
    mc = (est.get("details") or {}).get("mc_equivalent")  # what importance sampling saved (None for plain MC)

    shrunk, cases, pytest_ok, pytest_line = None, [], False, "no failure to keep"
    if failures:
        likeliest = max(failures, key=lambda e: e["loglik"])
        shrunk = shrink(off, likeliest["z"], likeliest["seed"])
        # kept twice: the unshielded failure must still reproduce, the shielded system must pass it
        cases = [make_case(off, shrunk.shrunk, likeliest["seed"], "fail")[0],
                 make_case(on, shrunk.shrunk, likeliest["seed"], "pass")[0]]
        export(cases, out / "regressions")
        pytest_ok, pytest_line = _pytest(out / "regressions")
    report = scenario_report(out)

    held = [r for r in replayed if r["failed"] is False]
    tables = [
        Table.of(f"{scenario.name}: failure search ({SEARCH_METHOD}, shield off), then the same episodes shield on",
                 ["shield", "episodes", "failures", "failure rate", "most likely failure"],
                 [["off", len(search.episodes), len(failures), len(failures) / max(1, len(search.episodes)),
                   (f"{search.most_likely['signature']['monitor']} at t = {search.most_likely['signature']['t']:.2f} s"
                    if search.most_likely and search.most_likely.get("signature") else "-")],
                  ["on (same samples)", len(replayed), sum(r["failed"] is True for r in replayed),
                   sum(r["failed"] is True for r in replayed) / max(1, len(replayed)), f"{len(held)} prevented"]]),
        Table.of(f"Failure probability with the shield on ({ESTIMATORS[estimator]}, 95 % interval)",
                 ["p", "95 % interval", "episodes", "failures", "as precise as plain Monte Carlo with", "fewer episodes"],
                 [[est.get("p", math.nan), f"[{est.get('ci_low', math.nan):.3g}, {est.get('ci_high', math.nan):.3g}]",
                   est.get("episodes", 0), est.get("failures", 0),
                   "(plain Monte Carlo)" if estimator == "mc" else f"{mc:,.0f} episodes" if mc else
                   "- (no failure in the final stage)",
                   f"{mc / max(1, est.get('episodes', 1)):,.1f}x" if mc else "-"]]),
    ]
    if shrunk is not None:
        tables.append(Table.of("The most likely failure, shrunk and kept",
                               ["deviation needed", "value", "nominal", "z"],
                               [[dim, dev["value"], dev["nominal"], f"{dev['z']:+.2f}"]
                                for dim, dev in shrunk.needed.items()]
                               + [["(none needed)" if not shrunk.needed else "(not needed)",
                                   ", ".join(shrunk.dropped) + (": the nominal episode already fails this way"
                                                                if not shrunk.needed else "") or "-", "", ""],
                                  ["regression cases (pytest)", pytest_line, "", "PASS" if pytest_ok else "FAIL"]]))

    def section(html: HtmlReport) -> None:
        html.text(scenario.description)
        html.figure(failure_map(json.loads(search_file.read_text()), None),
                    "The failure search with the shield off: each episode's sample, red where it failed.")
        html.text(ESTIMATOR_NOTES[estimator], "note")
        if est.get("history"):
            html.figure(convergence(json.loads(estimate_file.read_text())),
                        "The estimate with the shield on, converging inside its interval.")

    commands = []
    if shrunk is not None:
        commands = [("replay the kept failure", replay_command(name, list(shrunk.shrunk), shrunk.seed, "off")),
                    ("run the regression cases", f"python -m pytest {out / 'regressions'}")]
    return Part("scenarios", title, tables,
                {"scenario": scenario.name, "search": {"episodes": len(search.episodes), "failures": len(failures)},
                 "shield_on_replay": {"episodes": len(replayed), "failed": sum(r["failed"] is True for r in replayed)},
                 "estimate": {k: v for k, v in est.items() if k not in ("history", "details")},
                 "mc_equivalent": mc, "shrunk": shrunk.needed if shrunk else None,
                 "regressions": {"passed": pytest_ok, "pytest": pytest_line, "cases": [c.case_id for c in cases]}},
                section, links=[("scenario report", report)], commands=commands)
