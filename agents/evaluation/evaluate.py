"""Policies side by side on held-out worlds, failures counted, never dropped.

Car: the held-out track and held-out paraphrases (and speeds), each episode driven by every
policy in the same randomized world; score = agents.tasks.car.metrics.score per category
(improvement over the default parameters, centerline and smooth judged on forward progress
too), a failed parse, a crash, a crawl or a reverse drive scoring -1; the legacy score (no
progress term) is kept beside it. Factory: the same randomized inspection episodes for every
policy; accuracy, false accept/reject, parse failures. Both worlds: the share of decisions
whose thought disagrees with the action (car: safety.audit.claims.check_claims against the
parameters and the drive; factory: agents.tasks.factory.faithfulness).
Rows keep what re-scoring needs without driving again (errors, progress, the action).
`shakedown eval` (shakedown/eval.py) prints the table and builds the report from these rows.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import tyro

from agents.evaluation.intervals import Interval, paired_gain, policy_ci
from agents.policies.car_expert import FixedParamsPolicy, ScriptedCarExpert
from agents.policies.inspectors import HeuristicInspector, ScriptedInspector
from agents.policies.sb3 import SB3Policy
from agents.tasks.car.instruction_env import CarInstructionEnv, CarTaskConfig
from agents.tasks.car.instructions import CATEGORIES
from agents.tasks.car.metrics import thought_flags
from agents.tasks.factory.envs import FactoryInspectionEnv, inspection_task
from agents.tasks.factory.faithfulness import thought_flags as part_thought_flags
from agents.vlm.loading import agent_from_adapter, zero_shot_agent
from agents.vlm.model import GenerationConfig
from twin.car.tracks import HELD_OUT, Track, load_track
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
    trigger_jitter_s: float = 0.0
    """Factory: the camera trigger's latency, drawn per part from [0, this] s (0: a perfect trigger; 0.15: up to 3
    control periods late, as a PLC-cycled photo-eye may be)."""
    duration_s: float = 8.0
    """Car: simulated seconds per drive."""
    max_new_tokens: int = 128
    """Longest answer a language-model policy may write (tokens)."""
    unconstrained: bool = False
    """Decode without the answer grammar (as before it existed): answers may then fail to parse, and
    each failure scores as one; for comparing against free decoding."""
    calculator: bool = True
    """Car: the decoder computes a speed the thought converts ("nine km/h is" -> " 2.5 m/s") and a margin it
    subtracts ("half width 0.95 less 0.18 is" -> " 0.77"; agents.vlm.grammar.calculated); --no-calculator leaves
    the arithmetic to the model, as before 2026-11-27."""
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Weights of the language-model policies: 'auto' is bfloat16 where the device computes it natively,
    else float32 (agents.vlm.model.GenerationConfig.precision)."""
    categories: tuple[str, ...] = ()
    """Car: evaluate only these instruction categories (empty: all four), e.g. `--categories centerline --episodes
    40` for a tighter interval on one; an episode keeps its seed, so it is the same episode as in a full evaluation.
    The adaptability is then the mean over these categories."""
    split: Literal["heldout", "blind"] = "heldout"
    """Car: the instructions' wordings: 'heldout' (our held-out grammar, every table in docs/agent.md) or 'blind'
    (sentences by a writer shown no wording, sharing no phrase with training: agents.tasks.car.written). The seeds
    are the same; the episodes are not (the words are drawn first, so the start and the world's draws move too)."""
    seed: int = 1000
    """Evaluation seeds start here, apart from training's."""
    out_dir: Annotated[Path, tyro.conf.arg(name="out")] = Path("runs")
    """Where the run folder (report.html, results.json) is created."""

    def __post_init__(self) -> None:
        if self.world not in ("car", "factory"):
            raise ConfigError(f"EvalConfig.world {self.world!r} must be 'car' or 'factory'")
        if self.split not in ("heldout", "blind") or (self.split != "heldout" and self.world != "car"):
            raise ConfigError(f"EvalConfig.split {self.split!r}: the car reads 'heldout' or 'blind' wordings; the "
                              "factory has none")
        if self.episodes < 1:
            raise ConfigError("EvalConfig.episodes must be >= 1")
        unknown = sorted(set(self.categories) - set(CATEGORIES))
        if unknown or (self.categories and self.world != "car") or len(set(self.categories)) < len(self.categories):
            raise ConfigError(f"EvalConfig.categories {list(self.categories)}: name car instruction categories, each "
                              f"once, from {list(CATEGORIES)}" + (" (the factory has none)" if self.world != "car" else ""))


def vlm_policies(cfg: EvalConfig) -> list[Policy]:
    """The zero-shot model (if asked) and each adapter as its own agent (LoRA merged: inference only)."""
    gen = GenerationConfig(max_new_tokens=cfg.max_new_tokens, constrained=not cfg.unconstrained,
                           precision=cfg.precision, calculator=cfg.calculator)
    out: list[Policy] = [zero_shot_agent(cfg.world, gen)] if cfg.zero_shot else []
    return out + [agent_from_adapter(path, cfg.world, gen, merge=True) for path in cfg.adapters]


def label(policy: Policy) -> str:
    """A policy's name in tables: its label if it has one, else its id."""
    return getattr(policy, "label", policy.policy_id)


def car_episodes(cfg: EvalConfig) -> list[tuple[int, dict[str, Any]]]:
    """The evaluation's car episodes as (seed, reset options): `episodes` per category, seeds from `seed`."""
    return [(cfg.seed + 100 * ci + i, {"category": cat}) for ci, cat in enumerate(CATEGORIES)
            if not cfg.categories or cat in cfg.categories for i in range(cfg.episodes)]


def evaluate_car(cfg: EvalConfig, policies: list[Policy], progress: Progress | None = None,
                 episodes: Sequence[tuple[int, Mapping[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """One row per policy and episode; `episodes`: (seed, reset options) pairs, car_episodes(cfg) by default
    (options may give the instruction itself, as a re-score of a stored evaluation does)."""
    env = CarInstructionEnv(CarTaskConfig(tracks=HELD_OUT, split=cfg.split, duration_s=cfg.duration_s))
    episodes = car_episodes(cfg) if episodes is None else episodes
    tracks: dict[str, Track] = {}
    rows = []
    with progress_stage(progress, "evaluating car", len(episodes) * len(policies)) as bar:
        for seed, options in episodes:
            _, info = env.reset(seed=seed, options=options)
            obs, cat = info["observation"], info["category"]
            default = env.default_attempt()
            if info["track"] not in tracks:
                tracks[info["track"]] = load_track(info["track"])
            track = tracks[info["track"]]
            for policy in policies:
                t0 = time.perf_counter()
                decision = policy.decide(obs)
                latency = time.perf_counter() - t0
                failed = decision.parse_status.startswith("fallback")
                attempt = env.evaluate(decision.action, failed_parse=failed)
                flags = thought_flags(decision.thought, decision.action, attempt.trace, track, default.trace)
                rows.append({"policy": label(policy), "policy_id": policy.policy_id, "category": cat, "seed": seed,
                             "instruction": info["instruction"], "improvement": attempt.improvement,
                             "legacy_improvement": attempt.score.legacy_improvement, "failure": attempt.score.failure,
                             "progress_ratio": attempt.score.progress_ratio, "progress": attempt.metrics["progress"],
                             "default_progress": default.metrics["progress"], "error": attempt.metrics["error"],
                             "default_error": default.metrics["error"], "crashed": attempt.trace.crashed,
                             "parse_failed": failed, "action": dict(decision.action), "thought_flags": flags,
                             "latency_s": latency, "thought": decision.thought, "raw": decision.raw_output})
                bar.advance()
    env.close()
    return rows


def evaluate_factory(cfg: EvalConfig, policies: list[Policy], progress: Progress | None = None) -> list[dict[str, Any]]:
    rows = []
    with progress_stage(progress, "evaluating factory", cfg.episodes * cfg.parts * len(policies)) as bar:
        for policy in policies:
            env = FactoryInspectionEnv(inspection_task(cfg.parts, cfg.trigger_jitter_s))
            for ep in range(cfg.episodes):
                _, info = env.reset(seed=cfg.seed + ep)
                done, part = False, 0
                while not done:
                    obs = info["observation"]
                    t0 = time.perf_counter()
                    decision = policy.decide(obs)
                    latency = time.perf_counter() - t0
                    _, _, term, trunc, info = env.step(DECISIONS.index(decision.action["decision"]))
                    rows.append({"policy": label(policy), "policy_id": policy.policy_id, "episode": ep,
                                 "seed": cfg.seed + ep, "part": part, "defect": obs.privileged["defect"],
                                 "decision": decision.action["decision"],
                                 "correct": info["reward_terms"]["correct"] > 0,
                                 "false_accept": info["reward_terms"]["false_accept"] < 0,
                                 "false_reject": info["reward_terms"]["false_reject"] < 0,
                                 "parse_failed": decision.parse_status.startswith("fallback"),
                                 "thought_flags": part_thought_flags(decision.thought, decision.action["decision"]),
                                 "latency_s": latency, "thought": decision.thought, "raw": decision.raw_output})
                    done, part = term or trunc, part + 1
                    bar.advance()
            env.close()
    return rows


def categories_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The instruction categories the rows hold, in CATEGORIES order (all four unless --categories chose)."""
    return [c for c in CATEGORIES if any(r.get("category") == c for r in rows)]


def adaptability(rows: Sequence[Mapping[str, Any]], key: str = "improvement") -> tuple[list[float], float]:
    """Per-category means of `key` ('improvement' or 'legacy_improvement') over categories_of(rows) and their
    mean, the control adaptability."""
    per = [float(np.mean([r[key] for r in rows if r["category"] == c])) for c in categories_of(rows)]
    return per, float(np.mean(per))


def disagreement(rows: Sequence[Mapping[str, Any]]) -> str:
    """The share of decisions whose thought has at least one flag, as the table prints it ('-': no thoughts;
    rows from before the column existed count as unflagged)."""
    if not any(r.get("thought") for r in rows):
        return "-"
    return f"{np.mean([bool(r.get('thought_flags')) for r in rows]):.3f}"


def _bracket(interval: Interval, sign: str) -> str:
    """An interval in score points, as the tables print it: '[12.3, 45.6]' (sign '+': '[+12.3, +45.6]')."""
    return f"[{100 * interval.low:{sign}.1f}, {100 * interval.high:{sign}.1f}]"


def summary_table(world: str, rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """One row per policy: car, each category's mean score with its 95 % interval, the adaptability with its
    interval, the legacy score, failures and thought disagreement; factory, accuracy and its error rates."""
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    if world == "car":
        categories = categories_of(rows)
        header = ["policy", *categories, "adaptability", "95 % CI", "legacy adaptability", "parse failures", "crashes",
                  "crawls / reverse", "thought disagreement", "decision p50 (s)"]
        table = []
        for p in policies:
            mine = [r for r in rows if r["policy"] == p]
            per, mean = adaptability(mine)
            # rows from before the progress term have no legacy score: their improvement was the legacy one
            _, legacy = adaptability([{**r, "legacy_improvement": r.get("legacy_improvement", r["improvement"])}
                                      for r in mine], "legacy_improvement")
            ci = policy_ci(rows, p)
            cells = [f"{100 * v:.1f} % {_bracket(policy_ci(mine, p, category=c), '')}"
                     for v, c in zip(per, categories)]
            table.append([p, *cells, f"{100 * mean:.1f} %",
                          _bracket(ci, ''), f"{100 * legacy:.1f} %",
                          sum(r["parse_failed"] for r in mine), sum(r["crashed"] for r in mine),
                          sum(r.get("failure") in ("crawl", "reverse") for r in mine), disagreement(mine),
                          f"{np.median([r['latency_s'] for r in mine]):.3f}"])
        return header, table
    header = ["policy", "accuracy", "95 % CI", "false accept", "false reject", "parse failures",
              "thought disagreement", "decision p50 (s)"]
    table = []
    for p in policies:
        mine = [r for r in rows if r["policy"] == p]
        ci = policy_ci(rows, p, key="correct")
        table.append([p, f"{ci.mean:.3f}", f"[{ci.low:.3f}, {ci.high:.3f}]",
                      f"{np.mean([r['false_accept'] for r in mine]):.3f}",
                      f"{np.mean([r['false_reject'] for r in mine]):.3f}", sum(r["parse_failed"] for r in mine),
                      disagreement(mine), f"{np.median([r['latency_s'] for r in mine]):.3f}"])
    return header, table


def policies_for(cfg: EvalConfig) -> list[Policy]:
    """Default first, then SB3 baselines, the VLM policies, and the scripted expert last."""
    baseline: list[Policy] = ([FixedParamsPolicy(), ScriptedCarExpert()] if cfg.world == "car"
                              else [HeuristicInspector(), ScriptedInspector()])
    return [baseline[0], *(SB3Policy(b) for b in cfg.baselines), *vlm_policies(cfg), baseline[1]]


def evaluate(cfg: EvalConfig, progress: Progress | None = None) -> list[dict[str, Any]]:
    """One row per decision of every policy on the held-out episodes; each row's 'role' says whether its
    policy is an adapter (--adapter), the scripted expert or another baseline (what gains_table compares)."""
    policies = policies_for(cfg)
    rows = evaluate_car(cfg, policies, progress) if cfg.world == "car" else evaluate_factory(cfg, policies, progress)
    adapters = {label(p) for p in policies[len(policies) - 1 - len(cfg.adapters):-1]}
    for r in rows:
        r["role"] = "adapter" if r["policy"] in adapters else "expert" if r["policy"] == label(policies[-1]) else "baseline"
    return rows


def gains_table(world: str, rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Paired gains, episode by episode, with their bootstrap intervals (agents.evaluation.intervals): every
    adapter after the first against the first (e.g. SFT+GRPO against SFT, given in that order), and every
    adapter against the scripted expert; car per category and overall (score points), factory accuracy."""
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    adapters = [p for p in policies if any(r["policy"] == p and r.get("role") == "adapter" for r in rows)]
    experts = [p for p in policies if any(r["policy"] == p and r.get("role") == "expert" for r in rows)]
    pairs = [(a, adapters[0]) for a in adapters[1:]] + [(a, e) for a in adapters for e in experts]
    if world == "car":
        categories = categories_of(rows)
        header = ["policy", "against", *categories, "adaptability (95 % CI)", "CI excludes 0"]
        table = []
        for policy, against in pairs:
            per = [paired_gain(rows, policy, against, category=c) for c in categories]
            overall = paired_gain(rows, policy, against)
            table.append([policy, against, *(f"{100 * g.mean:+.1f} {_bracket(g, '+')}" for g in per),
                          f"{100 * overall.mean:+.1f} {_bracket(overall, '+')}",
                          "yes" if overall.excludes_zero else "no"])
        return header, table
    header = ["policy", "against", "accuracy gain (95 % CI)", "CI excludes 0"]
    table = []
    for policy, against in pairs:
        g = paired_gain(rows, policy, against, key="correct")
        table.append([policy, against, f"{g.mean:+.3f} [{g.low:+.3f}, {g.high:+.3f}]",
                      "yes" if g.excludes_zero else "no"])
    return header, table
