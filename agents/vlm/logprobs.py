"""Log-probabilities of an answer, split into chain-of-thought and action tokens.

RL4VLM scores a decision as  lambda * log p(CoT tokens) + log p(action tokens). The split is
made by *text offsets*: each answer token's character span (found by decoding growing
prefixes) is compared with the action's span from the parser, so it holds for any
tokenizer (RL4VLM locates the action by hard-coded token ids, one of its bugs).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase


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


def score_answers(model: torch.nn.Module, prompt: dict[str, torch.Tensor], answers: list[torch.Tensor],
                  hidden: bool = False) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Per-token log p of each answer (1-D id tensors) after the same prompt, and (if `hidden`)
    the last layer's hidden state at the last prompt token (what a value head reads).

    The prompt runs once and its key/value cache is shared by every answer (gradients flow
    through it), so a group of n answers costs one prompt pass plus the answer tokens,
    not n prompt passes.
    """
    out = model(input_ids=prompt["input_ids"], attention_mask=prompt["attention_mask"],
                pixel_values=prompt["pixel_values"], use_cache=True, output_hidden_states=hidden)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # predicts each answer's first token
    last_hidden = out.hidden_states[-1][0, -1] if hidden else None
    cache = out.past_key_values
    cache.batch_repeat_interleave(len(answers))
    device = prompt["input_ids"].device
    width = max(len(a) for a in answers)
    ids = torch.zeros((len(answers), width), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, a in enumerate(answers):
        ids[i, : len(a)] = a.to(device)
        mask[i, : len(a)] = 1
    prompt_mask = prompt["attention_mask"].expand(len(answers), -1)
    logits = model(input_ids=ids, attention_mask=torch.cat([prompt_mask, mask], 1), past_key_values=cache).logits
    result = []
    for i, a in enumerate(answers):
        a = a.to(device)
        rest = torch.log_softmax(logits[i, : len(a) - 1].float(), dim=-1).gather(1, a[1:].view(-1, 1)).squeeze(1)
        result.append(torch.cat([first[a[:1]], rest]))
    return result, last_hidden


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
