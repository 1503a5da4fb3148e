"""`shakedown demo`: default MPC parameters vs the scripted expert on a held-out track.

Runs every instruction category a few times with randomization on, prints a table
(category, default error, expert error, improvement) and writes an HTML report with
the paths and time series, plus the raw numbers as JSON, into a run folder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from agents.car_task import Attempt, CarInstructionEnv, CarTaskConfig
from agents.expert import ScriptedCarExpert
from agents.instructions import CATEGORIES
from shakedown.progress import progress_bar
from shakedown.report import HtmlReport, plt
from twin.config import ConfigError
from twin.tracks import HELD_OUT, load_track


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """What the demo runs."""

    track: str = HELD_OUT[0]
    """Track to drive (a held-out one by default)."""
    episodes_per_category: int = 3
    """Randomized episodes per instruction category."""
    duration_s: float = 8.0
    """Simulated seconds per drive."""
    seed: int = 0
    """Base seed; the same seed gives the same table."""
    out_dir: Path = Path("runs")
    """Where the run folder is created."""

    def __post_init__(self) -> None:
        load_track(self.track)
        if self.episodes_per_category < 1:
            raise ConfigError("DemoConfig.episodes_per_category must be >= 1")


@dataclasses.dataclass
class EpisodeRow:
    category: str
    instruction: str
    seed: int
    default: Attempt
    expert: Attempt


def run_episodes(cfg: DemoConfig, console: Console) -> list[EpisodeRow]:
    env = CarInstructionEnv(CarTaskConfig(tracks=(cfg.track,), split="heldout", duration_s=cfg.duration_s))
    expert = ScriptedCarExpert()
    rows: list[EpisodeRow] = []
    total = len(CATEGORIES) * cfg.episodes_per_category
    with progress_bar() as bar:
        task = bar.add_task("episodes", total=total)
        for ci, cat in enumerate(CATEGORIES):
            for i in range(cfg.episodes_per_category):
                seed = cfg.seed * 10_000 + ci * 100 + i
                _, info = env.reset(seed=seed, options={"category": cat})
                decision = expert.decide(info["observation"])
                rows.append(EpisodeRow(cat, info["instruction"], seed, env.default_attempt(),
                                       env.evaluate(decision.action)))
                bar.advance(task)
    env.close()
    return rows


def summarize(rows: list[EpisodeRow]) -> list[dict]:
    out = []
    for cat in CATEGORIES:
        rs = [r for r in rows if r.category == cat]
        out.append({
            "category": cat,
            "default_error": float(np.mean([r.default.metrics["error"] for r in rs])),
            "expert_error": float(np.mean([r.expert.metrics["error"] for r in rs])),
            "improvement": float(np.mean([r.expert.improvement for r in rs])),
            "default_crashes": int(sum(r.default.trace.crashed for r in rs)),
            "expert_crashes": int(sum(r.expert.trace.crashed for r in rs)),
            "episodes": len(rs),
        })
    return out


def _path_figure(row: EpisodeRow, track_name: str) -> plt.Figure:
    track = load_track(track_name)
    left, right = track.boundaries()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    ax = axes[0]
    ax.plot(*left.T, color="0.3", lw=1)
    ax.plot(*right.T, color="0.3", lw=1)
    for attempt, marker in ((row.default, "o"), (row.expert, "s")):
        tr = attempt.trace
        sc = ax.scatter(tr["x"], tr["y"], c=tr["v"], cmap="viridis", s=6, marker=marker, vmin=-1.5, vmax=5)
    fig.colorbar(sc, ax=ax, label="speed (m/s)")
    ax.set_aspect("equal")
    ax.set_title("path (o default, s expert), coloured by speed")
    for attempt, name in ((row.default, "default"), (row.expert, "expert")):
        tr = attempt.trace
        axes[1].plot(tr["t"], tr["v"], label=name)
        axes[2].plot(tr["t"], tr["d"], label=name)
    axes[1].set(xlabel="time (s)", ylabel="speed (m/s)", title="speed")
    axes[2].set(xlabel="time (s)", ylabel="lateral offset d (m)", title="lateral offset")
    for ax in axes[1:]:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"{row.category}: \u201c{row.instruction}\u201d (seed {row.seed})")
    return fig


def write_report(cfg: DemoConfig, rows: list[EpisodeRow], summary: list[dict], run_dir: Path) -> Path:
    rep = HtmlReport(f"Shakedown demo: instruction following on '{cfg.track}' (held out)")
    rep.text("Each episode draws a randomized world (friction, mass, actuation delay, sensor noise, colours) "
             "and a held-out paraphrase. The default MPC parameters and the scripted expert drive the same "
             "episode; improvement = (default error - expert error) / default error; a crash scores -1.")
    rep.heading("Results")
    rep.table(["category", "default error", "expert error", "improvement", "default crashes", "expert crashes"],
              [[s["category"], s["default_error"], s["expert_error"], f"{100 * s['improvement']:.1f} %",
                s["default_crashes"], s["expert_crashes"]] for s in summary])
    adapt = float(np.mean([s["improvement"] for s in summary]))
    rep.text(f"Control adaptability of the expert (mean improvement): {100 * adapt:.1f} %")
    rep.heading("Drives")
    for cat in CATEGORIES:
        row = next(r for r in rows if r.category == cat)
        rep.figure(_path_figure(row, cfg.track), caption=f"{cat}: first episode")
    rep.heading("Episodes")
    rep.table(["category", "instruction", "seed", "default error", "expert error", "improvement",
               "MPC p50 (ms)"],
              [[r.category, r.instruction, r.seed, r.default.metrics["error"], r.expert.metrics["error"],
                r.expert.improvement, r.expert.metrics["mpc_solve_p50_ms"]] for r in rows])
    return rep.write(run_dir / "report.html")


def run_demo(cfg: DemoConfig, console: Console | None = None) -> Path:
    """Run the demo and return the run folder."""
    console = console or Console()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = cfg.out_dir / f"demo-{stamp}"
    console.print(f"[bold]Shakedown demo[/]: track '{cfg.track}' (held out), "
                  f"{cfg.episodes_per_category} randomized episodes x {len(CATEGORIES)} categories")
    rows = run_episodes(cfg, console)
    summary = summarize(rows)
    table = Table(title="Instruction following: default parameters vs scripted expert")
    for col in ("category", "default error", "expert error", "improvement", "crashes (def/exp)"):
        table.add_column(col, justify="right")
    for s in summary:
        table.add_row(s["category"], f"{s['default_error']:.3f}", f"{s['expert_error']:.3f}",
                      f"{100 * s['improvement']:.1f} %", f"{s['default_crashes']}/{s['expert_crashes']}")
    adapt = float(np.mean([s["improvement"] for s in summary]))
    table.add_row("[bold]adaptability", "", "", f"[bold]{100 * adapt:.1f} %", "")
    console.print(table)
    report = write_report(cfg, rows, summary, run_dir)
    (run_dir / "results.json").write_text(json.dumps({
        "config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()},
        "summary": summary, "control_adaptability": adapt,
        "episodes": [{"category": r.category, "instruction": r.instruction, "seed": r.seed,
                      "default": r.default.metrics, "expert": r.expert.metrics,
                      "expert_improvement": r.expert.improvement} for r in rows],
    }, indent=2))
    console.print(f"report: {report}")
    return run_dir
