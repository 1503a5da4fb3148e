"""Log-probabilities of an answer, split into chain-of-thought and action tokens.

RL4VLM scores a decision as  lambda * log p(CoT tokens) + log p(action tokens). The split is
made by *text offsets*: each answer token's character span (found by decoding growing
prefixes) is compared with the action's span from the parser, so it holds for any
tokenizer (RL4VLM locates the action by hard-coded token ids, one of its bugs). Answers decoded
under the grammar (agents.vlm.constrained) are scored by `score_constrained`, under the
distribution they were sampled from.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from agents.vlm.constrained import ActionGrammar, replay
from agents.vlm.speculative import PrefixCache, SharedHead

Head = PrefixCache | SharedHead
"""Where a prompt's constant head comes from when it is not run again (see _answer_logits)."""


def token_char_spans(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[tuple[int, int]]:
    """[start, end) characters of each token in the decoded text of `ids`."""
    spans, prev = [], 0
    for k in range(1, len(ids) + 1):
        end = len(tokenizer.decode(ids[:k], skip_special_tokens=True))
        spans.append((prev, end))
        prev = end
    return spans


def action_mask(spans: list[tuple[int, int]], action_span: tuple[int, int] | None) -> torch.Tensor:
    """1.0 for tokens from the action's first character onward (end token included), else 0."""
    if action_span is None:
        return torch.zeros(len(spans))
    start = action_span[0]
    return torch.tensor([1.0 if end > start else 0.0 for _, end in spans])


def _answer_logits(model: torch.nn.Module, prompt: dict[str, torch.Tensor], answers: list[torch.Tensor],
                   hidden: bool, head: Head | None = None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """For each answer, the logits that predict each of its tokens, (len(answer), vocabulary); and (if
    `hidden`) the last layer's hidden state at the last prompt token.

    The prompt runs once and its key/value cache is shared by every answer (gradients flow
    through it), so a group of n answers costs one prompt pass plus the answer tokens,
    not n prompt passes. With a `head` (a PrefixCache for a frozen model, a SharedHead for one being
    trained) the prompt's constant head is not run again.
    """
    cache, rest = head.split(model, prompt) if isinstance(head, PrefixCache) else (
        head.split(prompt) if head is not None else (None, prompt))
    out = model(**rest, **({"cache": cache} if cache is not None else {}), use_cache=True,
                output_hidden_states=hidden, logits_to_keep=1)
    first = out.logits[0, -1:]  # predicts each answer's first token
    last_hidden = out.hidden_states[-1][0, -1] if hidden else None
    cache = out.cache
    cache.batch_repeat_interleave(len(answers))
    device = prompt["input_ids"].device
    width = max(len(a) for a in answers)
    ids = torch.zeros((len(answers), width), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, a in enumerate(answers):
        ids[i, : len(a)] = a.to(device)
        mask[i, : len(a)] = 1
    prompt_mask = prompt["attention_mask"].expand(len(answers), -1)
    logits = model(input_ids=ids, attention_mask=torch.cat([prompt_mask, mask], 1), cache=cache).logits
    return [torch.cat([first, logits[i, : len(a) - 1]]) for i, a in enumerate(answers)], last_hidden


def score_answers(model: torch.nn.Module, prompt: dict[str, torch.Tensor], answers: list[torch.Tensor],
                  hidden: bool = False) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Per-token log p of each answer (1-D id tensors) after the same prompt, and (if `hidden`)
    the last layer's hidden state at the last prompt token (what a value head reads)."""
    rows, last_hidden = _answer_logits(model, prompt, answers, hidden)
    return [torch.log_softmax(r.float(), -1).gather(1, a.to(r.device).view(-1, 1)).squeeze(1)
            for r, a in zip(rows, answers)], last_hidden


def score_constrained(model: torch.nn.Module, prompt: dict[str, torch.Tensor], answers: list[torch.Tensor],
                      grammar: ActionGrammar, max_new_tokens: int, hidden: bool = False,
                      head: Head | None = None, temperature: float = 1.0) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """As score_answers, for answers decoded under the grammar (agents.vlm.constrained, with the same
    max_new_tokens): per-token log p under the policy that sampled them.

    That policy is not the model's softmax: at a sampled token it draws from the model's distribution
    renormalised over the tokens the grammar allowed there, so log p = log_softmax over the allowed
    logits; a forced token (fast-forward, the only allowed token, the finish when the budget runs out)
    was appended with probability 1 whatever the weights, so its log p is 0 and carries no gradient -
    the model could not have done otherwise, and no update can make it more or less likely. Which tokens
    were allowed and forced is found by replaying the grammar over each answer. The ratios and KL terms
    the trainers build from these are thus those of the distribution the samples came from; scoring
    them with the unconstrained softmax would count probability mass on answers the sampler can never
    produce, and push gradient into tokens it never chooses. For the same reason `temperature` is the one
    the answers were sampled at: the sampler's distribution is softmax(logits / temperature).
    """
    rows, last_hidden = _answer_logits(model, prompt, answers, hidden, head)
    return [_constrained_logps(row, a, grammar, max_new_tokens, temperature) for row, a in zip(rows, answers)], \
        last_hidden


def _constrained_logps(row: torch.Tensor, answer: torch.Tensor, grammar: ActionGrammar,
                       max_new_tokens: int, temperature: float = 1.0) -> torch.Tensor:
    """Per-token log p of one answer from the logits that predict its tokens (score_constrained says why)."""
    a = answer.to(row.device)
    positions, allowed, _ = replay(grammar, a.tolist(), max_new_tokens)
    logps = torch.zeros(len(a), device=row.device)
    if positions:
        at = torch.tensor(positions, device=row.device)
        mask = torch.zeros((len(positions), row.shape[-1]), dtype=torch.bool, device=row.device)
        mask[:, : allowed.shape[1]] = torch.from_numpy(allowed).to(row.device)
        sampled = torch.log_softmax((row[at].float() / temperature).masked_fill(~mask, float("-inf")), -1)
        logps = logps.index_put((at,), sampled.gather(1, a[at].view(-1, 1)).squeeze(1))
    return logps


def score_decisions(model: torch.nn.Module, prompts: list[dict[str, torch.Tensor]], answers: list[torch.Tensor],
                    grammar: ActionGrammar | None = None, max_new_tokens: int = 0,
                    temperature: float = 1.0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-token log p of each answer after its own prompt (one answer per prompt: a PPO minibatch, a
    rollout), in one forward pass over the batch, and the last layer's hidden state at each prompt's last
    token, (len(prompts), hidden) (what a value head reads). With a grammar, log p is the constrained
    policy's (score_constrained), else the model's softmax; both at the sampling `temperature`.

    Each row is its prompt then its answer, padded on the right and masked there, so every real token keeps
    its position; one pass over 4 decisions uses the cores better than four passes over one."""
    if len(prompts) != len(answers) or not prompts:
        raise ValueError(f"score_decisions: one answer per prompt (got {len(prompts)} prompts, {len(answers)} answers)")
    device = prompts[0]["input_ids"].device
    lengths = [enc["input_ids"].shape[1] for enc in prompts]
    width = max(p + len(a) for p, a in zip(lengths, answers))
    ids = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, (enc, a, p) in enumerate(zip(prompts, answers, lengths)):
        ids[i, :p], ids[i, p:p + len(a)] = enc["input_ids"][0], a.to(device)
        mask[i, :p], mask[i, p:p + len(a)] = enc["attention_mask"][0], 1
    extra = {k: torch.cat([enc[k] for enc in prompts]) for k in prompts[0] if k not in ("input_ids", "attention_mask")}
    keep = width - min(lengths) + 1  # logits from the first answer's first prediction on
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=keep, **extra)
    offset = width - keep
    hidden = torch.stack([out.hidden_states[-1][i, p - 1] for i, p in enumerate(lengths)])
    result = []
    for i, (a, p) in enumerate(zip(answers, lengths)):
        row = out.logits[i, p - 1 - offset:p - 1 - offset + len(a)]
        if grammar is not None:
            result.append(_constrained_logps(row, a, grammar, max_new_tokens, temperature))
        else:
            result.append(torch.log_softmax(row.float() / temperature, -1).gather(1, a.to(device).view(-1, 1)).squeeze(1))
    return result, hidden


def group_logprobs(model: torch.nn.Module, prompt: dict[str, torch.Tensor],
                   answers: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-token log p of each answer (1-D id tensors) after the same prompt."""
    return score_answers(model, prompt, answers)[0]


def answer_logprobs(model: torch.nn.Module, prompt: dict[str, torch.Tensor], answer_ids: torch.Tensor) -> torch.Tensor:
    """Per-token log p of one answer after the prompt (batch of one), shape (len(answer_ids),)."""
    return group_logprobs(model, prompt, [answer_ids])[0]


def decision_logprob(token_logps: torch.Tensor, is_action: torch.Tensor, lam: float) -> torch.Tensor:
    """lambda * sum log p(CoT) + sum log p(action)."""
    is_action = is_action.to(token_logps.device)
    return lam * (token_logps * (1 - is_action)).sum() + (token_logps * is_action).sum()
