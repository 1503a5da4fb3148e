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


def group_logprobs(model: torch.nn.Module, prompt: dict[str, torch.Tensor],
                   answers: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-token log p of each answer (1-D id tensors) after the same prompt, in one batch."""
    p = prompt["input_ids"].shape[1]
    width = p + max(len(a) for a in answers)
    device = prompt["input_ids"].device
    ids = torch.zeros((len(answers), width), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, a in enumerate(answers):
        ids[i, :p] = prompt["input_ids"][0]
        ids[i, p:p + len(a)] = a.to(device)
        mask[i, :p + len(a)] = 1
    pixels = prompt["pixel_values"].expand(len(answers), *prompt["pixel_values"].shape[1:])
    logits = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits.float()
    out = []
    for i, a in enumerate(answers):
        lp = torch.log_softmax(logits[i, p - 1 : p - 1 + len(a)], dim=-1)
        out.append(lp.gather(1, a.view(-1, 1).to(device)).squeeze(1))
    return out


def answer_logprobs(model: torch.nn.Module, prompt: dict[str, torch.Tensor], answer_ids: torch.Tensor) -> torch.Tensor:
    """Per-token log p of one answer after the prompt (batch of one), shape (len(answer_ids),)."""
    return group_logprobs(model, prompt, [answer_ids])[0]


def decision_logprob(token_logps: torch.Tensor, is_action: torch.Tensor, lam: float) -> torch.Tensor:
    """lambda * sum log p(CoT) + sum log p(action)."""
    is_action = is_action.to(token_logps.device)
    return lam * (token_logps * (1 - is_action)).sum() + (token_logps * is_action).sum()
