"""Policies side by side on held-out worlds, failures counted, never dropped.

Car: the held-out track and held-out paraphrases (and speeds), each episode driven by every
policy in the same randomized world; score = improvement over the default parameters per
category, a failed parse or a crash scoring -1. Factory: the same randomized inspection
episodes for every policy; accuracy, false accept/reject, parse failures.
`shakedown eval` (shakedown/eval.py) prints the table and builds the report from these rows.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import tyro

from agents.policies.car_expert import FixedParamsPolicy, ScriptedCarExpert
from agents.policies.inspectors import HeuristicInspector, ScriptedInspector
from agents.policies.sb3 import SB3Policy
from agents.tasks.car.instruction_env import CarInstructionEnv, CarTaskConfig
from agents.tasks.car.instructions import CATEGORIES
from agents.tasks.factory.envs import FactoryInspectionEnv, FactoryTaskConfig
from agents.vlm.loading import agent_from_adapter, zero_shot_agent
from agents.vlm.model import GenerationConfig
from twin.car.tracks import HELD_OUT
from twin.core.config import ConfigError
from twin.core.contracts import Policy
from twin.core.progress import Progress, progress_stage
from twin.factory.twin import DECISIONS


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Policies side by side on held-out worlds: the default, SB3 baselines, the zero-shot VLM, each
    adapter, and the scripted expert, on the same episodes; failed parses count as failures."""

    world: Annotated[Literal["car", "factory"], tyro.conf.Positional] = "car"
    """Which world: 'car' (held-out track and wordings) or 'factory' (held-out inspection episodes)."""
    adapters: Annotated[tuple[str, ...], tyro.conf.arg(name="adapter"), tyro.conf.UseAppendAction] = ()
    """Adapter directory to evaluate, each as its own policy (repeat the flag for more)."""
    baselines: Annotated[tuple[str, ...], tyro.conf.arg(name="baseline"), tyro.conf.UseAppendAction] = ()
    """stable-baselines3 run folder (shakedown train <world> --stage sb3) to evaluate (repeatable)."""
    zero_shot: bool = True
    """Also evaluate the assembled VLM without any adapter."""
    episodes: int = 3
    """Car: episodes per instruction category; factory: episodes."""
    parts: int = 8
    """Factory: parts per episode."""
    duration_s: float = 8.0
    """Car: simulated seconds per drive."""
    max_new_tokens: int = 128
    """Longest answer a language-model policy may write (tokens)."""
    seed: int = 1000
    """Evaluation seeds start here, apart from training's."""
    out_dir: Annotated[Path, tyro.conf.arg(name="out")] = Path("runs")
    """Where the run folder (report.html, results.json) is created."""

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


def evaluate_car(cfg: EvalConfig, policies: list[Policy], progress: Progress | None = None) -> list[dict[str, Any]]:
    env = CarInstructionEnv(CarTaskConfig(tracks=HELD_OUT, split="heldout", duration_s=cfg.duration_s))
    rows = []
    with progress_stage(progress, "evaluating car", len(CATEGORIES) * cfg.episodes * len(policies)) as bar:
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
                    bar.advance()
    env.close()
    return rows


def evaluate_factory(cfg: EvalConfig, policies: list[Policy], progress: Progress | None = None) -> list[dict[str, Any]]:
    rows = []
    with progress_stage(progress, "evaluating factory", cfg.episodes * cfg.parts * len(policies)) as bar:
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
                    rows.append({"policy": label(policy), "policy_id": policy.policy_id, "episode": ep,
                                 "defect": obs.privileged["defect"],
                                 "decision": decision.action["decision"],
                                 "correct": info["reward_terms"]["correct"] > 0,
                                 "false_accept": info["reward_terms"]["false_accept"] < 0,
                                 "false_reject": info["reward_terms"]["false_reject"] < 0,
                                 "parse_failed": decision.parse_status.startswith("fallback"),
                                 "latency_s": latency, "thought": decision.thought, "raw": decision.raw_output})
                    done = term or trunc
                    bar.advance()
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


def policies_for(cfg: EvalConfig) -> list[Policy]:
    """Default first, then SB3 baselines, the VLM policies, and the scripted expert last."""
    baseline: list[Policy] = ([FixedParamsPolicy(), ScriptedCarExpert()] if cfg.world == "car"
                              else [HeuristicInspector(), ScriptedInspector()])
    return [baseline[0], *(SB3Policy(b) for b in cfg.baselines), *vlm_policies(cfg), baseline[1]]


def evaluate(cfg: EvalConfig, progress: Progress | None = None) -> list[dict[str, Any]]:
    """One row per decision of every policy on the held-out episodes."""
    policies = policies_for(cfg)
    return evaluate_car(cfg, policies, progress) if cfg.world == "car" else evaluate_factory(cfg, policies, progress)
