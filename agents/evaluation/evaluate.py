"""`shakedown eval`: policies side by side on held-out worlds, failures counted, never dropped.

Car: the held-out track and held-out paraphrases (and speeds), each episode driven by every
policy in the same randomized world; score = improvement over the default parameters per
category, a failed parse or a crash scoring -1. Factory: the same randomized inspection
episodes for every policy; accuracy, false accept/reject, parse failures.
The report shows the table, the adapters' learning curves and example chains of thought.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from agents.tasks.car.instruction_env import CarInstructionEnv, CarTaskConfig
from agents.policies.car_expert import FixedParamsPolicy, ScriptedCarExpert
from agents.policies.inspectors import HeuristicInspector, ScriptedInspector
from agents.tasks.car.instructions import CATEGORIES
from twin.core.contracts import Policy
from agents.vlm.loading import agent_from_adapter, zero_shot_agent
from agents.training.sb3 import SB3Policy
from agents.vlm.model import GenerationConfig
from shakedown.progress import progress_bar
from shakedown.report import HtmlReport, plt
from twin.core.config import ConfigError
from agents.tasks.factory.envs import FactoryInspectionEnv, FactoryTaskConfig
from twin.factory.twin import DECISIONS
from twin.car.tracks import HELD_OUT


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    world: str = "car"
    """'car' or 'factory'."""
    adapters: tuple[str, ...] = ()
    """Adapter directories to evaluate (each as its own policy)."""
    baselines: tuple[str, ...] = ()
    """stable-baselines3 run folders (agents.training.sb3) to evaluate."""
    zero_shot: bool = True
    """Also evaluate the assembled VLM without any adapter."""
    episodes: int = 3
    """Car: episodes per category; factory: episodes."""
    parts: int = 8
    """Factory: parts per episode."""
    duration_s: float = 8.0
    max_new_tokens: int = 128
    seed: int = 1000
    """Evaluation seeds start here, apart from training's."""
    out_dir: Path = Path("runs")

    def __post_init__(self) -> None:
        if self.world not in ("car", "factory"):
            raise ConfigError(f"EvalConfig.world {self.world!r} must be 'car' or 'factory'")
        if self.episodes < 1:
            raise ConfigError("EvalConfig.episodes must be >= 1")


def vlm_policies(cfg: EvalConfig) -> list[Policy]:
    """The zero-shot model (if asked) and each adapter as its own agent (LoRA merged: inference only)."""
    gen = GenerationConfig(max_new_tokens=cfg.max_new_tokens)
    out: list[Policy] = [zero_shot_agent(cfg.world, gen)] if cfg.zero_shot else []
    return out + [agent_from_adapter(path, cfg.world, gen, merge=True) for path in cfg.adapters]


def label(policy: Policy) -> str:
    """A policy's name in tables: its label if it has one, else its id."""
    return getattr(policy, "label", policy.policy_id)


def evaluate_car(cfg: EvalConfig, policies: list[Policy]) -> list[dict[str, Any]]:
    env = CarInstructionEnv(CarTaskConfig(tracks=HELD_OUT, split="heldout", duration_s=cfg.duration_s))
    rows = []
    with progress_bar() as bar:
        task = bar.add_task("evaluating", total=len(CATEGORIES) * cfg.episodes * len(policies))
        for ci, cat in enumerate(CATEGORIES):
            for i in range(cfg.episodes):
                seed = cfg.seed + 100 * ci + i
                _, info = env.reset(seed=seed, options={"category": cat})
                obs = info["observation"]
                for policy in policies:
                    t0 = time.perf_counter()
                    decision = policy.decide(obs)
                    latency = time.perf_counter() - t0
                    failed = decision.parse_status.startswith("fallback")
                    attempt = env.evaluate(decision.action, failed_parse=failed)
                    rows.append({"policy": label(policy), "policy_id": policy.policy_id, "category": cat, "seed": seed,
                                 "instruction": info["instruction"], "improvement": attempt.improvement,
                                 "error": attempt.metrics["error"], "crashed": attempt.trace.crashed,
                                 "parse_failed": failed, "latency_s": latency, "thought": decision.thought,
                                 "raw": decision.raw_output})
                    bar.advance(task)
    env.close()
    return rows


def evaluate_factory(cfg: EvalConfig, policies: list[Policy]) -> list[dict[str, Any]]:
    rows = []
    with progress_bar() as bar:
        task = bar.add_task("evaluating", total=cfg.episodes * cfg.parts * len(policies))
        for policy in policies:
            env = FactoryInspectionEnv(FactoryTaskConfig(parts_per_episode=cfg.parts))
            for ep in range(cfg.episodes):
                _, info = env.reset(seed=cfg.seed + ep)
                done = False
                while not done:
                    obs = info["observation"]
                    t0 = time.perf_counter()
                    decision = policy.decide(obs)
                    latency = time.perf_counter() - t0
                    _, _, term, trunc, info = env.step(DECISIONS.index(decision.action["decision"]))
                    rows.append({"policy": label(policy), "policy_id": policy.policy_id, "episode": ep, "defect": obs.privileged["defect"],
                                 "decision": decision.action["decision"],
                                 "correct": info["reward_terms"]["correct"] > 0,
                                 "false_accept": info["reward_terms"]["false_accept"] < 0,
                                 "false_reject": info["reward_terms"]["false_reject"] < 0,
                                 "parse_failed": decision.parse_status.startswith("fallback"),
                                 "latency_s": latency, "thought": decision.thought, "raw": decision.raw_output})
                    done = term or trunc
                    bar.advance(task)
            env.close()
    return rows


def summary_table(world: str, rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    if world == "car":
        header = ["policy", *CATEGORIES, "adaptability", "parse failures", "crashes", "decision p50 (s)"]
        table = []
        for p in policies:
            mine = [r for r in rows if r["policy"] == p]
            per = [float(np.mean([r["improvement"] for r in mine if r["category"] == c])) for c in CATEGORIES]
            table.append([p, *(f"{100 * v:.1f} %" for v in per), f"{100 * np.mean(per):.1f} %",
                          sum(r["parse_failed"] for r in mine), sum(r["crashed"] for r in mine),
                          f"{np.median([r['latency_s'] for r in mine]):.3f}"])
        return header, table
    header = ["policy", "accuracy", "false accept", "false reject", "parse failures", "decision p50 (s)"]
    table = []
    for p in policies:
        mine = [r for r in rows if r["policy"] == p]
        table.append([p, f"{np.mean([r['correct'] for r in mine]):.3f}",
                      f"{np.mean([r['false_accept'] for r in mine]):.3f}",
                      f"{np.mean([r['false_reject'] for r in mine]):.3f}", sum(r["parse_failed"] for r in mine),
                      f"{np.median([r['latency_s'] for r in mine]):.3f}"])
    return header, table


CURVE_KEYS = ("reward", "reward_driving", "accuracy", "loss")
"""What a learning curve plots: RL runs their reward (PPO also accuracy), SFT its loss."""


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
    groups = list(CATEGORIES) if world == "car" else ["correct", "false_accept", "false_reject", "parse_failed"]
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


def run_eval(cfg: EvalConfig, console: Console | None = None) -> Path:
    console = console or Console(width=None if Console().is_terminal else 160)
    baseline: list[Policy] = ([FixedParamsPolicy(), ScriptedCarExpert()] if cfg.world == "car"
                              else [HeuristicInspector(), ScriptedInspector()])
    policies = [baseline[0], *(SB3Policy(b) for b in cfg.baselines), *vlm_policies(cfg), baseline[1]]
    rows = evaluate_car(cfg, policies) if cfg.world == "car" else evaluate_factory(cfg, policies)
    header, table_rows = summary_table(cfg.world, rows)
    table = Table(title=f"{cfg.world}: held-out evaluation (failed parses count as failures)")
    for h in header:
        table.add_column(h, justify="right")
    for r in table_rows:
        table.add_row(*(str(v) for v in r))
    console.print(table)
    run_dir = cfg.out_dir / f"eval-{cfg.world}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    rep = HtmlReport(f"Shakedown evaluation: {cfg.world}")
    rep.table(header, table_rows)
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
    (run_dir / "results.json").write_text(json.dumps({"config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()},
                                                      "summary": {"header": header, "rows": table_rows},
                                                      "rows": rows}, indent=1, default=str))
    console.print(f"report: {run_dir / 'report.html'}")
    return run_dir
