"""Closed-loop GRPO on the car (RobotxR1's method), read top to bottom.

    python -m agents.training.grpo --adapter runs/sft-car/adapter --steps 50

Each step: draw `prompts_per_step` episodes (train tracks, train paraphrases); sample a
group of answers per prompt; drive every answer's MPC parameters in the twin for
`duration_s` of simulated time (through the shield); reward = driving score over the
default parameters (agents.tasks.car.metrics.score: the error improvement, minus a progress
penalty on centerline and smooth, a crawl or a reverse drive failing) + format + extraction
+ valid names (RobotxR1's terms) + faithfulness (the thought's claims borne out by the
parameters and by the drive) minus a Lagrangian cost for the constraint violations the shield still counted;
the driving score's terms and the legacy score are logged beside it; advantages are
rewards centred within each group (not divided by the group's spread, as in Dr. GRPO, which also
drops the per-answer length normalisation that is kept here; --scale-by-std divides);
loss = -A * log p(answer) + beta * KL(policy || reference),
the reference being the starting policy (the SFT adapter, frozen; or the base model when
starting from a fresh adapter). A group whose answers all score the same has no advantage to
follow and is not scored at all (logged as groups_without_signal; DAPO filters such groups too).
With --explore, some answers of each group are the sampled ones with their numbers moved at random
(agents.training.explore), so that a group touches tunes the nearly deterministic policy never samples.
With --imitate as well, the exploration answers that beat all of their group's sampled answers are kept and
replayed with a fine-tuning loss (expert iteration on the run's own discoveries: the update is then GRPO plus
that term, no longer GRPO alone).

Why a short trainer rather than TRL's GRPOTrainer: its reward functions score text, while
ours must drive a twin with each answer and keep per-term logs, costs and a Lagrange
multiplier; the loop is fifty lines and shares the policy, parser and log-prob code with
SFT and PPO.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from agents.control.mpc_params import NAMES
from agents.tasks.car.instruction_env import CarInstructionEnv, CarTaskConfig
from agents.tasks.car.instructions import CATEGORIES
from agents.tasks.car.metrics import drive_evidence, thought_agreement
from agents.training.audit import log_sample, open_training_log
from agents.training.explore import perturb_answer
from agents.training.run import (
    VISION_PARTS,
    RLRunArgs,
    finish_run,
    out_of_time,
    resume_optimizer,
    sample_answers,
    save_checkpoint,
    start_run,
    trainable_parameters,
)
from agents.vlm.constrained import ActionGrammar, action_grammar, encode_answer
from agents.vlm.loading import agent_from_adapter
from agents.vlm.logprobs import score_constrained
from agents.vlm.model import GenerationConfig, training_autocast
from agents.vlm.parsing import Parsed, parse_car
from agents.vlm.speculative import PrefixCache, SharedHead
from safety.audit.claims import ExecutedTrace
from safety.lagrangian import Lagrange, LagrangeConfig
from twin.car.tracks import training_tracks
from twin.core.config import ConfigError, bounded, parse_config
from twin.core.progress import Progress, progress_stage


@dataclasses.dataclass(frozen=True)
class GRPOArgs(RLRunArgs):
    """Closed-loop GRPO on the car: a group of answers per instruction, each driven in the twin."""

    steps: int = bounded(50, 1, 1_000_000)
    """GRPO updates to run (a resumed run counts the ones already done)."""
    prompts_per_step: int = bounded(2, 1, 1024)
    """Instruction episodes per update, each with its own group of answers."""
    group: int = bounded(4, 2, 256)
    """Answers sampled per prompt (RobotxR1: 4 for the MPC tuner)."""
    beta: float = bounded(0.04, 0.0, 10.0)
    """Weight of the KL penalty to the reference model."""
    duration_s: float = bounded(6.0, 0.5, 600.0)
    """Simulated seconds each answer drives."""
    faithfulness_weight: float = bounded(0.25, 0.0, 10.0)
    """Weight of the faithfulness term: the share of the thought's checkable claims (speeds, margins,
    accelerations, direction, slower/faster than the default) that the answer's parameters bear out.
    0.25, like each of RobotxR1's format terms: a thought that says "hold 6 m/s" over v_max 0.8 loses
    as much as a broken format, far less than a failed drive (-1), so it steers wording, not driving."""
    faithfulness_drive: bool = True
    """Judge the thought against the drive as well as the parameters (`shakedown eval`'s thought disagreement does
    both): a claim the drive contradicts counts as missed, e.g. "margin 0.97 m" where the car passed 0.72 m from a
    wall. Off: the parameters alone (the shipped car adapter's recipe), under which GRPO on many track widths wrote
    margins wider than the track leaves, since past the free half width every margin drives the same."""
    scale_by_std: bool = False
    """Divide each group's centred rewards by their standard deviation (GRPO as published). Off (as Dr. GRPO,
    Liu et al. 2025, does): advantage = reward - group mean, so a group whose answers differ by a noise-level
    0.003 (most groups after SFT) barely moves the policy, while one where an answer failed its drive
    moves it in proportion to the failure. With the division, both pushed equally hard."""
    explore: int = bounded(0, 0, 255)
    """Answers of each group replaced by exploration answers (agents.training.explore: a sampled answer with some
    of its numbers moved at random, off-policy); 0: every answer sampled."""
    explore_scale: float = bounded(0.15, 0.0, 1.0)
    """Standard deviation of an exploration move, as a share of the moved parameter's range."""
    explore_share: float = bounded(0.5, 0.0, 1.0)
    """Chance that each number of an exploration answer moves (one always does); 0: exactly one number moves, so
    the group's reward says which number helped."""
    imitate: float = bounded(0.0, 0.0, 100.0)
    """Weight of expert iteration on the run's own discoveries (0: off, GRPO alone). An exploration answer whose
    reward beats every sampled answer of its group by imitate_margin is an elite: it joins a buffer of the latest
    imitate_buffer elites, and each step adds imitate x the mean -log p of imitate_batch elites drawn from it
    (ReST / RAFT: fine-tune on the best answers found). Why: an exploration answer's -A log p is one small push per
    step, too weak to move a greedy digit that leads by many nats (docs/agent.md, "Exploring the numbers"); replaying
    the moves that won moves it. Needs --explore. The buffer lives in memory: a resumed run starts it empty.
    Measured on the car (docs/agent.md, "Expert iteration on the run's own discoveries"): at 1.0, then 0.3, the
    policy's samples and thoughts spread and the held-out score collapsed by step 84, hence off by default."""
    imitate_margin: float = bounded(0.05, 0.0, 10.0)
    """How far above the best sampled answer of its group an exploration answer's reward must be to be an elite
    (the reward's driving term is the score's share of improvement: 0.05 is 5 points)."""
    imitate_buffer: int = bounded(32, 1, 100_000)
    """Elites kept (the latest; older ones were found around an older policy)."""
    imitate_batch: int = bounded(4, 1, 1024)
    """Elites replayed per step."""
    track_widths: tuple[float, ...] = ()
    """Train on each training track at every width from the first to the second number (m, wall to wall, 0.02 m
    apart, e.g. 1.6 2.4); empty: each track at its own width. As SFT's --track-widths: the margin that pays
    depends on the width, so a policy trained on three widths can learn one margin by heart."""
    categories: tuple[str, ...] = ()
    """Instruction categories the prompts are drawn from, uniformly (name one twice to draw it twice as often);
    empty: the environment's own draw over all four."""
    out: Path = Path("runs/grpo-car")
    """Run folder: checkpoint/, adapter/, curve.json (and audit.log with --audit)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.explore >= self.group:
            raise ConfigError(f"GRPOArgs.explore = {self.explore} must be below group = {self.group}: a group needs "
                              f"at least one answer the policy sampled")
        if self.imitate > 0 and self.explore == 0:
            raise ConfigError("GRPOArgs.imitate > 0 needs explore > 0: elites are exploration answers that beat the "
                              "sampled ones; set --explore (e.g. 3) or --imitate 0")
        training_tracks(self.track_widths)  # a bad range fails here, naming it
        unknown = sorted(set(self.categories) - set(CATEGORIES))
        if unknown:
            raise ConfigError(f"GRPOArgs.categories: {unknown} unknown; choose from {list(CATEGORIES)}")


def group_advantages(rewards: torch.Tensor, scale_by_std: bool) -> torch.Tensor:
    """Each answer's reward minus its group's mean, over the group's standard deviation if `scale_by_std`."""
    centred = rewards - rewards.mean()
    return centred / (rewards.std() + 1e-4) if scale_by_std else centred


def reward_terms(raw: str, improvement: float) -> dict[str, float]:
    """RobotxR1's reward terms for one answer (the driving term, the attempt's score, comes from the twin)."""
    parsed = parse_car(raw)
    keys = []
    if parsed.action_span is not None:
        try:
            keys = list(json.loads(raw[slice(*parsed.action_span)]))
        except ValueError:
            keys = []
    return {
        "driving": improvement,
        "format": 0.25 if "<think>" in raw and "</think>" in raw else 0.0,
        "extraction": 0.25 if not parsed.failed else 0.0,
        "names": 0.25 * (sum(k in NAMES for k in keys) / len(keys)) if keys else 0.0,
    }


def faithfulness_term(parsed: Parsed, weight: float, executed: ExecutedTrace | None = None) -> float:
    """weight x agreement of the thought with the parameters (and with the `executed` drive, if given); 0 for an
    unparsable answer (it chose no parameters)."""
    return 0.0 if parsed.failed else weight * thought_agreement(parsed.thought, parsed.action, executed)


def explore_group(answers: list[torch.Tensor], args: GRPOArgs, tokenizer: PreTrainedTokenizerBase, grammar: ActionGrammar,
                  rng: np.random.Generator) -> list[int]:
    """Replace the group's first args.explore answers by exploration answers, in place, each tokenized as the
    constrained sampler writes it (so it is scored under the same grammar); returns the indices replaced (an
    answer that did not parse, or whose move the grammar cannot write in the budget, stays as sampled)."""
    done = []
    for j in range(args.explore):
        text = perturb_answer(tokenizer.decode(answers[j], skip_special_tokens=True), rng, args.explore_scale,
                              args.explore_share)
        if text is None:
            continue
        try:
            answers[j] = torch.tensor(encode_answer(grammar, text, args.max_new_tokens), dtype=answers[j].dtype)
        except ValueError:
            continue
        done.append(j)
    return done


def elites(rewards: list[float], explored: list[int], margin: float) -> list[int]:
    """The explored answers whose reward beats every sampled answer's by at least `margin`."""
    sampled = [r for j, r in enumerate(rewards) if j not in explored]
    return [j for j in explored if sampled and rewards[j] >= max(sampled) + margin]


def imitation_loss(model: torch.nn.Module, buffer: list[tuple[dict[str, torch.Tensor], torch.Tensor]], args: GRPOArgs,
                   grammar: ActionGrammar, head: SharedHead, rng: np.random.Generator) -> torch.Tensor:
    """Mean per-token -log p of args.imitate_batch elites drawn from the buffer (without replacement), scored as the
    group answers are: under the grammar, at the sampling temperature, through the update's shared head."""
    picks = rng.choice(len(buffer), size=min(args.imitate_batch, len(buffer)), replace=False)
    with training_autocast(model, args.bf16):
        nll = [-score_constrained(model, buffer[i][0], [buffer[i][1]], grammar, args.max_new_tokens, head=head,
                                  temperature=args.temperature)[0][0].mean() for i in picks]
    return torch.stack(nll).mean()


def train_grpo(args: GRPOArgs, progress: Progress | None = None) -> Path:
    run = start_run("car", "grpo", args, args.out, args.base, args.seed, adapter=args.adapter, resume=args.resume)
    model, agent, tokenizer = run.model, run.agent, run.agent.tokenizer
    grammar = action_grammar(tokenizer, "car", agent.generation.calculator)  # what sample_answers decodes under
    params = trainable_parameters(model, () if args.train_vision else VISION_PARTS)
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    lagrange = Lagrange(LagrangeConfig(cost_limit=args.cost_limit))
    step, log = 0, []
    state = run.trainer_state()
    if state is not None:
        resume_optimizer(optimizer, state, args.lr)
        lagrange.load_state_dict(state["lagrange"])
        step, log = state["step"], state["log"]
    reference = None
    if args.adapter:  # a frozen copy of the starting policy, with its own cache of the prompts' head
        # float32 as the policy's master weights: the KL term compares log-probs of one precision
        reference = agent_from_adapter(args.adapter, "car", GenerationConfig(precision="float32"), merge=True,
                                       seed=args.seed).model
        reference_head = PrefixCache(agent.prefix.stop_token)
    env = CarInstructionEnv(CarTaskConfig(tracks=training_tracks(args.track_widths), split="train",
                                          duration_s=args.duration_s))
    audit = open_training_log(args.out, args.audit)
    rng = np.random.default_rng([args.seed, step])
    explore_rng = np.random.default_rng([args.seed, step, 1])  # apart from the episodes' draws
    imitate_rng = np.random.default_rng([args.seed, step, 2])
    buffer: list[tuple[dict[str, torch.Tensor], torch.Tensor]] = []  # (prompt, elite answer), the latest last

    with progress_stage(progress, "GRPO car", args.steps, step) as bar:
        started = time.perf_counter()
        while step < args.steps and not out_of_time(started, args.max_minutes):
            t0 = time.perf_counter()
            model.train()
            optimizer.zero_grad()
            losses, rewards, terms_sum, driving_sum, costs, kls, skipped, found = [], [], {}, {}, [], [], 0, 0
            timing = {"sample": 0.0, "drive": 0.0, "update": 0.0}
            # All the step's groups are sampled in one batch; each episode is reset again (same seed, same
            # episode) when its group drives.
            t = time.perf_counter()
            seeds = [int(rng.integers(2**31)) for _ in range(args.prompts_per_step)]
            options = [{"category": str(rng.choice(args.categories))} if args.categories else None for _ in seeds]
            infos = [env.reset(seed=seed, options=o)[1] for seed, o in zip(seeds, options)]
            encs = [agent.encode(info["observation"]) for info in infos]
            groups = sample_answers(agent, encs, args.group, args.temperature, args.max_new_tokens)
            explored = [explore_group(answers, args, tokenizer, grammar, explore_rng) for answers in groups]
            timing["sample"] += time.perf_counter() - t
            head = SharedHead(model, agent.prefix.tokens)  # the head's forward and backward once per update
            if reference is not None and reference_head.tokens is None:
                reference_head.tokens = agent.prefix.tokens
            for seed, option, info, enc, answers, moved in zip(seeds, options, infos, encs, groups, explored):
                t = time.perf_counter()
                env.reset(seed=seed, options=option)
                group_r, group_c, driven = [], [], {}
                for j, ids in enumerate(answers):
                    raw = tokenizer.decode(ids, skip_special_tokens=True)
                    parsed = parse_car(raw)
                    # Identical parameters drive identically (the episode replays its seed): drive once, and read
                    # what the drive did (for the faithfulness term) once.
                    key = (parsed.failed, tuple(sorted(parsed.action.items())))
                    if key not in driven:
                        attempt = env.evaluate(parsed.action, failed_parse=parsed.failed)
                        driven[key] = attempt, (drive_evidence(attempt.trace, env.track, env.default_attempt().trace)
                                                if args.faithfulness_drive and not parsed.failed else None)
                    attempt, executed = driven[key]
                    # env.evaluate already scores an unparsable answer as a failure (attempt.score.failure).
                    terms = {**reward_terms(raw, attempt.improvement),
                             "faithfulness": faithfulness_term(parsed, args.faithfulness_weight, executed)}
                    # The driving term's parts (they sum to it) and the legacy score: logged, not added again.
                    driving = {**attempt.score.terms, "legacy": attempt.score.legacy_improvement}
                    cost = float(sum(attempt.trace.costs.values()))
                    group_r.append(lagrange.penalized(sum(terms.values()), cost))
                    group_c.append(cost)
                    log_sample(audit, info["observation"], raw, parsed, agent.policy_id, terms, cost,
                               {"stage": "grpo", "step": step + 1, "instruction": info["instruction"],
                                "category": info["category"], "track": info["track"],
                                "driving_terms": driving, "driving_failure_reason": attempt.score.failure,
                                "explored": j in moved})
                    for k, v in terms.items():
                        terms_sum[k] = terms_sum.get(k, 0.0) + v
                    for k, v in driving.items():
                        driving_sum[k] = driving_sum.get(k, 0.0) + v
                timing["drive"] += time.perf_counter() - t
                rewards += group_r
                costs += group_c
                if args.imitate > 0:
                    new = elites(group_r, moved, args.imitate_margin)
                    buffer = (buffer + [(enc, answers[j]) for j in new])[-args.imitate_buffer:]
                    found += len(new)
                t = time.perf_counter()
                r = torch.tensor(group_r)
                if float(r.max() - r.min()) < 1e-9:
                    # Every answer scored the same (after SFT, often one answer sampled 8 times): every advantage
                    # is 0, so the group adds no policy gradient; its KL term (beta x a KL near 0 here) is the
                    # only thing skipped, and the group's forward and backward passes with it.
                    skipped += 1
                    continue
                adv = group_advantages(r, args.scale_by_std)
                with training_autocast(model, args.bf16):
                    logps = score_constrained(model, enc, answers, grammar, args.max_new_tokens, head=head,
                                              temperature=args.temperature)[0]
                    with torch.no_grad():
                        if reference is not None:
                            ref = score_constrained(reference, enc, answers, grammar, args.max_new_tokens,
                                                    head=reference_head, temperature=args.temperature)[0]
                        else:
                            with model.disable_adapter():
                                ref = score_constrained(model, enc, answers, grammar, args.max_new_tokens,
                                                        temperature=args.temperature)[0]
                group_loss = []
                for a, lp, rf in zip(adv, logps, ref):
                    delta = rf - lp
                    kl = torch.exp(delta) - delta - 1  # k3 estimator, per token
                    group_loss.append(-(a * lp - args.beta * kl).mean())
                    kls.append(float(kl.mean().detach()))
                # Gradients accumulate group by group, so one group's graph is freed before the next.
                (torch.stack(group_loss).mean() / args.prompts_per_step).backward()
                losses.append(float(torch.stack(group_loss).mean().detach()))
                timing["update"] += time.perf_counter() - t
            t = time.perf_counter()
            imitation = imitation_loss(model, buffer, args, grammar, head, imitate_rng) if buffer else None
            if imitation is not None:
                (args.imitate * imitation).backward()
            head.backward()
            timing["update"] += time.perf_counter() - t
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            lagrange.update(float(np.mean(costs)))
            step += 1
            n = args.prompts_per_step * args.group
            log.append({"step": step, "reward": float(np.mean(rewards)), "cost": float(np.mean(costs)),
                        "kl": float(np.mean(kls)) if kls else 0.0, "lambda": lagrange.value,
                        "loss": float(np.mean(losses)) if losses else 0.0, "groups_without_signal": skipped,
                        "explored": sum(map(len, explored)), "elites_found": found, "elites_kept": len(buffer),
                        "imitation_nll": float(imitation.detach()) if imitation is not None else 0.0,
                        **{f"reward_{k}": v / n for k, v in terms_sum.items()},
                        **{f"driving_{k}": v / n for k, v in driving_sum.items()},
                        **{f"seconds_{k}": v for k, v in timing.items()}, "seconds": time.perf_counter() - t0})
            bar.advance(note=f"reward {log[-1]['reward']:+.2f}")
            if (step % args.checkpoint_every == 0 or step == args.steps
                    or out_of_time(started, args.max_minutes)):
                save_checkpoint(run, {"step": step}, {"optimizer": optimizer.state_dict(),
                                                      "lagrange": lagrange.state_dict(), "log": log})
    env.close()
    if audit is not None:
        audit.close()
    return finish_run(run, {"step": step}, log)


def main(argv: list[str] | None = None, progress: Progress | None = None, prog: str | None = None) -> None:
    print(f"adapter: {train_grpo(parse_config(GRPOArgs, argv, __doc__, prog), progress)}")


if __name__ == "__main__":
    main()
