"""`shakedown eval`: the evaluation job. agents.evaluation runs the policies and returns rows;
this module prints the table and builds the report: the table, the adapters' learning curves,
per-policy bars and example chains of thought."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from agents.evaluation.evaluate import EvalConfig, categories_of, evaluate, gains_table, summary_table
from agents.tasks.car.metrics import MIN_PROGRESS_RATIO
from shakedown.progress import RichProgress
from shakedown.report import HtmlReport, plt

CURVE_KEYS = ("reward", "reward_driving", "driving_legacy", "reward_faithfulness", "accuracy", "loss")
"""What a learning curve plots: RL runs their reward (GRPO also its driving score under the legacy metric,
both also the faithfulness term, PPO its accuracy), SFT its loss."""
COLUMNS_NOTE = {
    "car": ("Scores: improvement over the default parameters on the same episode; centerline and smooth also need "
            f"forward progress (under {MIN_PROGRESS_RATIO:.0%} of the default's is a crawl, a reverse drive fails, "
            "below the default's pace a penalty). Legacy adaptability: the same drives under the old score, without the "
            "progress term. Thought disagreement: share of decisions whose thought has a claim the parameters "
            "or the drive do not bear out (safety.audit.claims). 95 % CI: the adaptability's BCa bootstrap interval over "
            "episodes (10,000 resamples)."),
    "factory": ("Thought disagreement: share of decisions whose thought concludes another decision, reports a "
                "defect on an accepted part or a clean part that is rejected (agents.tasks.factory.faithfulness). "
                "95 % CI: the accuracy's BCa bootstrap interval over parts (10,000 resamples)."),
}
"""What the table's less obvious columns mean, printed under it."""
GAINS_NOTE = ("Each adapter after the first against the first (give --adapter in training order: SFT, then SFT+GRPO), "
              "and each adapter against the scripted expert: the difference on each episode (same seed, same world), "
              "its mean and a 95 % BCa bootstrap interval over episodes (10,000 resamples); car in score points.")


def _curves_figure(runs: tuple[str, ...]) -> plt.Figure | None:
    """One panel per run that left a curve.json (adapters, SB3 baselines), smoothed over 10 entries."""
    curves = []
    for a in runs:
        # a run folder keeps curve.json beside adapter/; a shipped adapter or an SB3 run keeps it inside
        path = next((p for p in (Path(a) / "curve.json", Path(a).parent / "curve.json") if p.exists()), None)
        curve = json.loads(path.read_text()) if path is not None else []
        if curve:
            name = Path(a).parent.name if Path(a).name == "adapter" else Path(a).name
            curves.append((name, curve))
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.3), squeeze=False)
    for ax, (name, curve) in zip(axes[0], curves):
        xkey = next(k for k in ("step", "iteration", "timestep") if k in curve[0])
        xs = np.array([c[xkey] for c in curve])
        for key in (k for k in CURVE_KEYS if k in curve[0]):
            ys = np.array([c[key] for c in curve], dtype=float)
            width = min(10, len(ys))
            smooth = np.convolve(ys, np.ones(width) / width, mode="valid")
            ax.plot(xs, ys, alpha=0.25)
            ax.plot(xs[width - 1:], smooth, label=key)
        ax.set(title=name, xlabel=xkey)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _scores_figure(world: str, rows: list[dict[str, Any]]) -> plt.Figure:
    """Car: improvement per category and policy; factory: accuracy and error rates per policy."""
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    groups = categories_of(rows) if world == "car" else ["correct", "false_accept", "false_reject", "parse_failed"]
    fig, ax = plt.subplots(figsize=(11, 3.6))
    width = 0.8 / len(policies)
    for i, p in enumerate(policies):
        mine = [r for r in rows if r["policy"] == p]
        if world == "car":
            values = [100 * np.mean([r["improvement"] for r in mine if r["category"] == c]) for c in groups]
        else:
            values = [100 * np.mean([float(r[g]) for r in mine]) for g in groups]
        ax.bar(np.arange(len(groups)) + i * width, values, width, label=p)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
    ax.set_ylabel("improvement over default (%)" if world == "car" else "% of decisions")
    ax.axhline(0, color="black", lw=0.8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, not over them
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def _write_results(run_dir: Path, results: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))


def _episodes(world: str, rows: list[dict[str, Any]]) -> str:
    """How many episodes each policy met, as a table title states it."""
    first = rows[0]["policy"]
    mine = [r for r in rows if r["policy"] == first]
    if world == "car":
        n = len(mine) // len(categories_of(mine))
        return f"{n} episode{'s' * (n != 1)} per category"
    n = len({r["seed"] for r in mine})
    return f"{n} episode{'s' * (n != 1)}, {len(mine)} parts"


def run_eval(cfg: EvalConfig, console: Console | None = None) -> Path:
    """Evaluate (agents.evaluation), print the table, write report.html and results.json."""
    console = console or Console(width=None if Console().is_terminal else 160)
    rows = evaluate(cfg, RichProgress())
    run_dir = cfg.out_dir / f"eval-{cfg.world}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    results = {"config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()}, "rows": rows}
    _write_results(run_dir, results)  # the episodes first: a summary that fails must not lose an hour of driving
    header, table_rows = summary_table(cfg.world, rows)
    words = " (blind wordings)" if cfg.split == "blind" else ""
    title = f"{cfg.world}: held-out evaluation{words}, {_episodes(cfg.world, rows)} (failed parses count as failures)"
    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="right")
    for r in table_rows:
        table.add_row(*(str(v) for v in r))
    console.print(table)
    console.print(COLUMNS_NOTE[cfg.world])
    gains_header, gains_rows = gains_table(cfg.world, rows)
    if gains_rows:
        gains = Table(title="paired gains on the same episodes (95 % BCa bootstrap interval)")
        for h in gains_header:
            gains.add_column(h, justify="right")
        for r in gains_rows:
            gains.add_row(*(str(v) for v in r))
        console.print(gains)
    rep = HtmlReport(f"Shakedown evaluation: {cfg.world}")
    rep.text(title)
    rep.table(header, table_rows)
    rep.text(COLUMNS_NOTE[cfg.world])
    if gains_rows:
        rep.heading("Paired gains")
        rep.table(gains_header, gains_rows)
        rep.text(GAINS_NOTE)
    fig = _curves_figure(cfg.adapters + cfg.baselines)
    if fig is not None:
        rep.heading("Learning curves")
        rep.figure(fig)
    rep.heading("Per policy")
    rep.figure(_scores_figure(cfg.world, rows))
    rep.heading("Example chains of thought")
    seen: dict[tuple[str, str], int] = {}
    examples = []
    for r in rows:  # two per policy and case kind, so every model and category shows
        key = (r["policy"], r.get("category", r.get("defect", "")))
        if r["raw"] and seen.get(key, 0) < 2:
            seen[key] = seen.get(key, 0) + 1
            examples.append(r)
    rep.table(["policy", "case", "chain of thought", "raw answer"],
              [[r["policy"], r.get("instruction", r.get("defect", "")), r["thought"][:300], r["raw"][:300]]
               for r in examples] or [["(no language-model policy evaluated)", "", "", ""]])
    rep.write(run_dir / "report.html")
    _write_results(run_dir, {**results, "summary": {"header": header, "rows": table_rows},
                             "gains": {"header": gains_header, "rows": gains_rows}})
    console.print(f"report: {run_dir / 'report.html'}")
    return run_dir
