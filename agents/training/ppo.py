"""PPO with chain of thought on factory inspection (RL4VLM's method, multi-step), top to bottom.

    python -m agents.training.ppo --adapter runs/sft-factory/adapter --iterations 20

Rollout: `num_envs` inspection lines run side by side (vectorised, as CleanRL's envs); for each
line's next part the agent sees the frame, writes a chain of thought and a JSON decision (all
lines' decisions sampled in one batch); the decision is executed in the twin (an unparsable answer executes the safe
default, hold, and is penalised); a faithfulness term rewards a thought that agrees with the
decision (agents.tasks.factory.faithfulness: the claims reader of safety.audit has nothing to
check on a part decision). The buffer keeps every step's own prompt and image
(RL4VLM re-scores with the first prompt, one of its bugs), the answer tokens, and which
answer tokens are the action, found by text offsets. A decision's log-probability is
lambda * log p(CoT) + log p(action); the value head reads the hidden state of the last
prompt token. Advantages by GAE on the Lagrangian reward (reward - lambda_c * cost), each line's
decisions as their own sequence; then `epochs` passes of the clipped PPO objective, each
minibatch scored in one forward pass.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from agents.evaluation.evaluate import EvalConfig, evaluate_factory, vlm_policies
from agents.tasks.factory.envs import FactoryInspectionEnv, inspection_task
from agents.tasks.factory.faithfulness import thought_agreement
from agents.training.audit import log_sample, open_training_log
from agents.training.run import (
    VISION_PARTS,
    RLRunArgs,
    Run,
    finish_run,
    out_of_time,
    resume_optimizer,
    sample_answers,
    save_checkpoint,
    save_policy,
    start_run,
    trainable_parameters,
)
from agents.vlm.constrained import ActionGrammar, action_grammar
from agents.vlm.logprobs import action_mask, decision_logprob, score_decisions, token_char_spans
from agents.vlm.model import training_autocast
from agents.vlm.parsing import Parsed, parse_factory
from safety.lagrangian import Lagrange, LagrangeConfig
from twin.core.config import ConfigError, bounded, parse_config
from twin.core.progress import Progress, progress_stage
from twin.factory.twin import DECISIONS

PARSE_PENALTY = -0.5
"""Reward term added when the answer could not be parsed (the safe default was executed)."""


@dataclasses.dataclass(frozen=True)
class PPOArgs(RLRunArgs):
    """PPO with chain of thought on factory inspection (RL4VLM's method)."""

    iterations: int = bounded(20, 1, 1_000_000)
    """Rollout-and-update iterations to run (a resumed run counts the ones already done)."""
    rollout_steps: int = bounded(16, 1, 100_000)
    """Decisions collected per iteration, over all inspection lines (a multiple of num_envs)."""
    num_envs: int = bounded(4, 1, 1024)
    """Inspection lines run side by side (as vectorised envs): their decisions are sampled in one batch and
    scored in one pass; each line's decisions form its own sequence for GAE."""
    epochs: int = bounded(4, 1, 100)
    """PPO passes over each rollout (RL4VLM: 4)."""
    minibatch: int = bounded(4, 1, 4096)
    """Decisions per gradient step."""
    clip: float = bounded(0.1, 0.01, 1.0)
    """PPO ratio clip (RL4VLM: 0.1)."""
    gamma: float = bounded(0.9, 0.0, 1.0)
    """Discount per decision (RL4VLM: 0.9)."""
    gae_lambda: float = bounded(0.95, 0.0, 1.0)
    """GAE lambda (RL4VLM: 0.95)."""
    cot_lambda: float = bounded(0.5, 0.0, 1.0)
    """Weight of the chain of thought's log-probability (RL4VLM: 0.3-0.5 learn)."""
    value_coef: float = bounded(0.5, 0.0, 100.0)
    """Weight of the value loss."""
    max_grad_norm: float = bounded(1.0, 1e-4, 100.0)
    """Gradient norm clip."""
    parts_per_episode: int = bounded(8, 1, 10_000)
    """Parts decided per inspection episode."""
    trigger_jitter_s: float = bounded(0.0, 0.0, 0.5)
    """The camera trigger's latency on the training lines and the check, drawn per part from [0, this] s."""
    max_new_tokens: int = bounded(48, 1, 4096)
    """Longest answer sampled (tokens): a part decision is shorter than the car's parameters."""
    faithfulness_weight: float = bounded(0.25, 0.0, 10.0)
    """Weight of the faithfulness term (1 when the thought agrees with the decision: no other decision
    concluded, no defect reported on an accepted part, no clean part rejected). 0.25, the hold penalty's
    size: a quarter of a correct decision, so it steers the wording without outweighing correctness."""
    validate_every: int = bounded(0, 0, 1_000_000)
    """Every this many iterations, and once before the first, decide a fixed set of held-out parts as `shakedown
    eval factory` does (merged weights, greedy, constrained) and keep the most accurate adapter so far in out/best/
    (the starting adapter competes too: if no iteration beats it, best/ holds its weights); 0: no check. Greedy
    decisions can move away from a sampled accuracy that rose, and back, within a few iterations."""
    validate_episodes: int = bounded(8, 1, 10_000)
    """Inspection episodes of the check, parts_per_episode parts each."""
    validate_seed: int = bounded(500, 0, 2**31 - 1)
    """First seed of the check's episodes: below the evaluation's (1000 on, EvalConfig.seed), so choosing the best
    adapter by the check does not peek at the parts the evaluation reports on."""
    out: Path = Path("runs/ppo-factory")
    """Run folder: checkpoint/, adapter/, curve.json; with --validate-every best/ (the kept policy) and candidate/ (the
    policy last checked); audit.log with --audit."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.validate_every and self.validate_seed + self.validate_episodes > EvalConfig.seed:
            raise ConfigError(f"PPOArgs.validate_seed = {self.validate_seed} with {self.validate_episodes} episodes reaches "
                              f"the evaluation's seeds ({EvalConfig.seed} on): choose a lower --validate-seed")
        if self.rollout_steps % self.num_envs:
            raise ConfigError(f"PPOArgs.rollout_steps = {self.rollout_steps} must be a multiple of num_envs = "
                              f"{self.num_envs} (each line decides the same number of parts per iteration)")


class ValueHead(torch.nn.Module):
    """MLP on the hidden state of the last prompt token (RL4VLM)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(hidden, 256), torch.nn.Tanh(), torch.nn.Linear(256, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h.float()).squeeze(-1)


@dataclasses.dataclass
class Step:
    """One decision in the rollout buffer, with its own prompt and image."""

    enc: dict[str, torch.Tensor]
    answer: torch.Tensor
    is_action: torch.Tensor
    logp: float
    value: float
    reward: float
    cost: float
    done: bool


def score(model: torch.nn.Module, value_head: ValueHead, encs: list[dict[str, torch.Tensor]],
          answers: list[torch.Tensor], is_actions: list[torch.Tensor], cot_lambda: float,
          grammar: ActionGrammar | None = None, max_new_tokens: int = 0,
          temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(decision log-probs, values) of a batch of decisions, each after its own prompt, in one pass
    (agents.vlm.logprobs.score_decisions); the value head reads each last prompt token's hidden state. With
    a grammar, log p is that of the constrained policy that sampled the answer with max_new_tokens (as
    train_ppo samples, at its temperature), else the model's plain softmax. An empty answer gives the prompt's
    value alone."""
    logps, hidden = score_decisions(model, encs, answers, grammar, max_new_tokens, temperature)
    return (torch.stack([decision_logprob(lp, m, cot_lambda) for lp, m in zip(logps, is_actions)]),
            value_head(hidden))


def gae(steps: list[Step], last_value: float, gamma: float, lam: float, penalty: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns of the Lagrangian reward (reward - penalty * cost)."""
    adv = np.zeros(len(steps))
    running = 0.0
    for t in reversed(range(len(steps))):
        s = steps[t]
        next_value = last_value if t == len(steps) - 1 else steps[t + 1].value
        nonterminal = 0.0 if s.done else 1.0
        delta = s.reward - penalty * s.cost + gamma * next_value * nonterminal - s.value
        running = delta + gamma * lam * nonterminal * running
        adv[t] = running
    return adv, adv + np.array([s.value for s in steps])


def faithfulness_term(parsed: Parsed, weight: float) -> float:
    """weight x agreement of the thought with the decision; 0 for an unparsable answer (it chose no decision)."""
    return 0.0 if parsed.failed else weight * thought_agreement(parsed.thought, parsed.action["decision"])


def validate(run: Run, args: PPOArgs) -> dict[str, float]:
    """The policy as it is now, judged as the evaluation judges it: saved as out/candidate, loaded merged at the
    evaluation's precision, and run greedily on the check's parts; accuracy and the false accept/reject shares."""
    candidate = run.out / "candidate"
    save_policy(run, candidate, {})
    cfg = EvalConfig("factory", adapters=(str(candidate),), zero_shot=False, episodes=args.validate_episodes,
                     parts=args.parts_per_episode, trigger_jitter_s=args.trigger_jitter_s, seed=args.validate_seed)
    rows = evaluate_factory(cfg, vlm_policies(cfg))
    return {f"val_{k}": float(np.mean([r[k] for r in rows])) for k in ("correct", "false_accept", "false_reject")}


def keep_if_best(run: Run, check: dict[str, float], best: dict[str, float], iteration: int) -> dict[str, float]:
    """out/best/ becomes this policy if its check is strictly more accurate than the best so far (ties keep the
    earlier, closer to the starting policy); returns the best check with its iteration."""
    if best and check["val_correct"] <= best["val_correct"]:
        return best
    save_policy(run, run.out / "best", {"iteration": iteration, "validation": check})
    return {**check, "iteration": iteration}


def train_ppo(args: PPOArgs, progress: Progress | None = None) -> Path:
    run = start_run("factory", "ppo", args, args.out, args.base, args.seed, adapter=args.adapter,
                    resume=args.resume)
    model, agent, tokenizer = run.model, run.agent, run.agent.tokenizer
    grammar = action_grammar(tokenizer, "factory", agent.generation.calculator)  # what sample_answers decodes under
    value_head = ValueHead(model.config.text_config.hidden_size).to(model.device)
    params = trainable_parameters(model, () if args.train_vision else VISION_PARTS) + list(value_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    lagrange = Lagrange(LagrangeConfig(cost_limit=args.cost_limit))
    iteration, log, best = 0, [], {}
    state = run.trainer_state()
    if state is not None:
        value_head.load_state_dict(state["value_head"])
        resume_optimizer(optimizer, state, args.lr)
        lagrange.load_state_dict(state["lagrange"])
        iteration, log, best = state["iteration"], state["log"], state.get("best", {})
    if args.validate_every and not best:
        best = keep_if_best(run, validate(run, args), best, iteration)
        print(f"held-out check before PPO (iteration {iteration}): accuracy {best['val_correct']:.3f}")
    envs = [FactoryInspectionEnv(inspection_task(args.parts_per_episode, args.trigger_jitter_s))
            for _ in range(args.num_envs)]
    audit = open_training_log(args.out, args.audit)
    rng = np.random.default_rng([args.seed, iteration])
    infos = [env.reset(seed=int(rng.integers(2**31)))[1] for env in envs]

    with progress_stage(progress, "PPO factory", args.iterations, iteration) as bar:
        started = time.perf_counter()
        while iteration < args.iterations and not out_of_time(started, args.max_minutes):
            t0 = time.perf_counter()
            model.eval()
            rollouts: list[list[Step]] = [[] for _ in envs]  # one sequence of decisions per inspection line
            correct = parsed_ok = 0
            terms_sum: dict[str, float] = {}
            # seconds per phase: sample (answers and their old log-probs), line (the twin), update (GAE, PPO epochs)
            timing = {"sample": 0.0, "line": 0.0, "update": 0.0}
            for _ in range(args.rollout_steps // args.num_envs):
                # Every line's next decision is sampled in one batch, and scored in one pass.
                t = time.perf_counter()
                observations = [info["observation"] for info in infos]
                encs = [agent.encode(obs) for obs in observations]
                answers = [group[0] for group in sample_answers(agent, encs, 1, args.temperature, args.max_new_tokens)]
                raws = [tokenizer.decode(answer, skip_special_tokens=True) for answer in answers]
                parsed = [parse_factory(raw) for raw in raws]
                is_actions = [action_mask(token_char_spans(tokenizer, a.tolist()), p.action_span)
                              for a, p in zip(answers, parsed)]
                with torch.no_grad(), training_autocast(model, args.bf16):  # as in the update: ratios start at 1
                    logps, values = score(model, value_head, encs, answers, is_actions, args.cot_lambda, grammar,
                                          args.max_new_tokens, args.temperature)
                timing["sample"] += time.perf_counter() - t
                t = time.perf_counter()
                for k, env in enumerate(envs):
                    _, _, term, trunc, infos[k] = env.step(DECISIONS.index(parsed[k].action["decision"]))
                    info = infos[k]
                    terms = {**info["reward_terms"], "parse": PARSE_PENALTY if parsed[k].failed else 0.0,
                             "faithfulness": faithfulness_term(parsed[k], args.faithfulness_weight)}
                    for name, v in terms.items():
                        terms_sum[name] = terms_sum.get(name, 0.0) + v
                    log_sample(audit, observations[k], raws[k], parsed[k], agent.policy_id, terms, float(info["cost"]),
                               {"stage": "ppo", "iteration": iteration + 1, "line": k,
                                "defect": observations[k].privileged["defect"]})
                    correct += info["reward_terms"]["correct"] > 0
                    parsed_ok += not parsed[k].failed
                    rollouts[k].append(Step(encs[k], answers[k], is_actions[k], float(logps[k]), float(values[k]),
                                            float(sum(terms.values())), float(info["cost"]), term or trunc))
                    if term or trunc:
                        infos[k] = env.reset(seed=int(rng.integers(2**31)))[1]
                timing["line"] += time.perf_counter() - t
            t = time.perf_counter()
            with torch.no_grad():  # each line's next observation bootstraps its return
                last = [agent.encode(info["observation"]) for info in infos]
                _, last_values = score(model, value_head, last, [torch.zeros(0, dtype=torch.long)] * len(last),
                                       [torch.zeros(0)] * len(last), args.cot_lambda)
            parts = [gae(r, float(v), args.gamma, args.gae_lambda, lagrange.value) for r, v in zip(rollouts, last_values)]
            steps = [s for r in rollouts for s in r]
            adv = np.concatenate([a for a, _ in parts])
            returns = np.concatenate([r for _, r in parts])
            adv_t = torch.tensor((adv - adv.mean()) / (adv.std() + 1e-8), dtype=torch.float32, device=model.device)
            ret_t = torch.tensor(returns, dtype=torch.float32, device=model.device)

            model.train()
            clipfracs, losses = [], []
            for _ in range(args.epochs):
                order = rng.permutation(len(steps))
                for mb in np.array_split(order, max(1, len(steps) // args.minibatch)):
                    batch = [steps[i] for i in mb]
                    with training_autocast(model, args.bf16):
                        logp, value = score(model, value_head, [b.enc for b in batch], [b.answer for b in batch],
                                            [b.is_action for b in batch], args.cot_lambda, grammar, args.max_new_tokens,
                                            args.temperature)
                    ratio = torch.exp(logp - torch.tensor([b.logp for b in batch], device=logp.device))
                    a, ret = adv_t[mb], ret_t[mb]
                    surrogate = torch.min(ratio * a, torch.clamp(ratio, 1 - args.clip, 1 + args.clip) * a)
                    loss = (-surrogate + args.value_coef * (value - ret) ** 2).mean()
                    clipfracs += ((ratio - 1).abs() > args.clip).float().tolist()
                    optimizer.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
                    optimizer.step()
                    losses.append(float(loss.detach()))
            timing["update"] += time.perf_counter() - t
            lagrange.update(float(np.mean([s.cost for s in steps])))
            iteration += 1
            log.append({"iteration": iteration, "reward": float(np.mean([s.reward for s in steps])),
                        "accuracy": correct / len(steps), "parsed": parsed_ok / len(steps),
                        "cost": float(np.mean([s.cost for s in steps])), "lambda": lagrange.value,
                        "loss": float(np.mean(losses)), "clipfrac": float(np.mean(clipfracs)),
                        **{f"reward_{k}": v / len(steps) for k, v in terms_sum.items()},
                        **{f"seconds_{k}": v for k, v in timing.items()}, "seconds": time.perf_counter() - t0})
            if args.validate_every and iteration % args.validate_every == 0:
                check = validate(run, args)
                log[-1].update(check)
                best = keep_if_best(run, check, best, iteration)
            bar.advance(note=f"acc {log[-1]['accuracy']:.2f}" + (f" check {log[-1]['val_correct']:.2f}"
                                                                  if "val_correct" in log[-1] else ""))
            if (iteration % args.checkpoint_every == 0 or iteration == args.iterations
                    or out_of_time(started, args.max_minutes)):
                save_checkpoint(run, {"iteration": iteration}, {"value_head": value_head.state_dict(),
                                                                "optimizer": optimizer.state_dict(),
                                                                "lagrange": lagrange.state_dict(), "log": log,
                                                                "best": best})
    for env in envs:
        env.close()
    if audit is not None:
        audit.close()
    return finish_run(run, {"iteration": iteration}, log)


def main(argv: list[str] | None = None, progress: Progress | None = None, prog: str | None = None) -> None:
    print(f"adapter: {train_ppo(parse_config(PPOArgs, argv, __doc__, prog), progress)}")


if __name__ == "__main__":
    main()
