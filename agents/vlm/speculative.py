"""What makes a decision cheaper without changing it: a cached prompt prefix, and drafts to verify.

- `PrefixCache`: the key/value cache of the prompt's constant head (the chat template's system turn
  and car-v2's parameter table: ~200 of ~280 prompt tokens), computed once. A prompt that starts with
  those tokens runs the model on its remaining tokens only. Learned from the first two prompts seen
  (their common token prefix, cut before the first image token, whose features depend on the frame).
- `Drafter`: lookup decoding. It proposes the tokens that followed the longest recent n-gram match of
  the answer so far, in the answers given before (this agent's own history, plus an optional corpus)
  and in the prompt (prompt-lookup decoding: a thought copies the instruction's speed). The decoder
  (agents.vlm.constrained) verifies a draft in one forward pass and keeps exactly what the model would
  have chosen (greedy) or drawn (speculative sampling with a point-mass draft: the distribution of
  every token is unchanged), so drafts change the cost of an answer, never the answer's distribution.
  That is exact in float32; in bfloat16 (GenerationConfig.precision) a wide pass's rounding differs
  from a one-token pass's, enough to flip a near-tie now and then.

Why our own: transformers' `prompt_lookup_num_tokens` does not compose with a grammar (a draft must
be checked against the mask at every position, and forced tokens are not sampled), and a draft store
of earlier answers is not in it. The n-gram index is a dict; a lookup costs microseconds.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import DynamicCache

DRAFTS_FILE = "drafts.json"
"""In an adapter folder: answer texts to seed its agent's drafter (SFT writes its targets; RL stages carry
them over). Optional: without it the drafter starts empty and learns from the agent's own answers."""
_START = -1
"""Marks the start of an answer in the history, so the first tokens of an answer have a context."""


class Drafter:
    """Lookup drafts from earlier answers and the current prompt."""

    def __init__(self, max_ngram: int = 6, min_ngram: int = 2, draft_tokens: int = 24, history: int = 512) -> None:
        if not 1 <= min_ngram <= max_ngram or draft_tokens < 1 or history < 1:
            raise ValueError(f"Drafter: need 1 <= min_ngram <= max_ngram, draft_tokens >= 1, history >= 1 (got "
                             f"{min_ngram}, {max_ngram}, {draft_tokens}, {history})")
        self.max_ngram, self.min_ngram, self.draft_tokens, self.history = max_ngram, min_ngram, draft_tokens, history
        self._answers: list[list[int]] = []
        self._index: dict[tuple[int, ...], list[tuple[int, int]]] = defaultdict(list)

    def remember(self, answer: Sequence[int]) -> None:
        """Add an answer given (or a corpus answer) to the history; the oldest go past `history` answers."""
        if len(self._answers) >= self.history:
            self._answers, self._index = [], defaultdict(list)  # rare; a rebuild keeps the code simple
        tokens = [_START, *map(int, answer)]
        source = len(self._answers)
        self._answers.append(tokens)
        self._index[(_START,)].append((source, 1))  # an answer not begun yet matches every answer's start
        for n in range(self.min_ngram, self.max_ngram + 1):
            for end in range(n, len(tokens)):
                self._index[tuple(tokens[end - n:end])].append((source, end))

    def __len__(self) -> int:
        return len(self._answers)

    def propose(self, answer: Sequence[int], prompt: Sequence[int] = ()) -> list[int]:
        """Tokens likely to follow `answer`: after the longest n-gram of its end found in the history (the most
        recent answer on ties) or else in the prompt; [] when none matches."""
        context = [_START, *map(int, answer)]
        for n in range(min(self.max_ngram, len(context)), min(self.min_ngram, len(context)) - 1, -1):
            key = tuple(context[-n:])
            hits = self._index.get(key)
            if hits:
                source, end = hits[-1]
                return self._answers[source][end:end + self.draft_tokens]
            if _START not in key and prompt:
                found = _find(prompt, key)
                if found is not None:
                    return list(prompt[found:found + self.draft_tokens])
        return []


def _find(tokens: Sequence[int], key: tuple[int, ...]) -> int | None:
    """The position just after the last occurrence of `key` in `tokens` that has something after it."""
    n = len(key)
    for end in range(len(tokens) - 1, n - 1, -1):
        if tuple(tokens[end - n:end]) == key:
            return end
    return None


class PrefixCache:
    """The key/value cache of the prompts' constant head, computed once per model (see the module docstring)."""

    def __init__(self, stop_token: int, min_tokens: int = 16) -> None:
        self.stop_token, self.min_tokens = stop_token, min_tokens
        self._first: list[int] | None = None
        self.tokens: list[int] | None = None
        self._cache = None
        self._version = -1
        self.hits = 0

    def split(self, model: torch.nn.Module, enc: dict[str, torch.Tensor]) -> tuple[object | None, dict[str, torch.Tensor]]:
        """(a private copy of the head's cache, the prompt's remaining inputs), or (None, enc) when the prompt
        does not start with the head (or the head is not learned yet)."""
        ids = enc["input_ids"][0].tolist()
        if self.tokens is None:
            self._learn(model, ids, enc["input_ids"].device)
        n = len(self.tokens or ())
        if not n or ids[:n] != self.tokens or len(ids) <= n:
            return None, enc
        if _weights_version(model) != self._version:  # trained since: the head's cache is stale
            self._compute(model, enc["input_ids"].device)
        self.hits += 1
        return copy.deepcopy(self._cache), _after(enc, n)

    def _learn(self, model: torch.nn.Module, ids: list[int], device: torch.device) -> None:
        if self._first is None:
            self._first = ids
            return
        common = 0
        for a, b in zip(self._first, ids):
            if a != b or a == self.stop_token:
                break
            common += 1
        common -= 1  # the last common token may merge differently with what follows in another prompt
        if common < self.min_tokens:
            self.tokens = []  # nothing worth caching: stop trying
            return
        self.tokens = ids[:common]
        self._compute(model, device)

    @torch.no_grad()
    def _compute(self, model: torch.nn.Module, device: torch.device) -> None:
        head = torch.tensor([self.tokens], device=device)
        self._cache = model(input_ids=head, attention_mask=torch.ones_like(head), use_cache=True, logits_to_keep=1).cache
        self._version = _weights_version(model)


def _after(enc: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """A prompt's inputs after its first n tokens, whose key/value cache is given separately."""
    rest = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
    rest["input_ids"] = enc["input_ids"][:, n:]
    rest["attention_mask"] = enc["attention_mask"]  # the whole prompt's: the cached head is attended to
    return rest


class SharedHead:
    """The prompts' constant head run once per update *with* gradients, shared by the update's groups.

    A trainer scores each group's answers with gradients flowing into the head's keys and values. Running the
    head once per group repeats its forward and backward passes; here it runs once: each group reads detached
    copies of its keys and values (leaves that collect that group's gradient), and `backward()` sends the sum
    through the head once. The gradient is the same as with the head run per group (tested), the cost of the
    head is paid once per update instead of once per group. Use one SharedHead per update (the weights change
    after it), with the head's tokens from the sampling PrefixCache.
    """

    def __init__(self, model: torch.nn.Module, tokens: Sequence[int] | None) -> None:
        self.model, self.tokens = model, list(tokens or ())
        self._head: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._leaves: list[list[tuple[torch.Tensor, torch.Tensor]]] = []

    def split(self, enc: dict[str, torch.Tensor]) -> tuple[object | None, dict[str, torch.Tensor]]:
        """(a cache of the head whose leaves collect gradients, the prompt's remaining inputs), or (None, enc)
        when the prompt does not start with the head."""
        n = len(self.tokens)
        if not n or enc["input_ids"].shape[1] <= n or enc["input_ids"][0, :n].tolist() != self.tokens:
            return None, enc
        if self._head is None:
            head = torch.tensor([self.tokens], device=enc["input_ids"].device)
            cache = self.model(input_ids=head, attention_mask=torch.ones_like(head), use_cache=True,
                               logits_to_keep=1).cache
            self._head = [(layer.keys, layer.values) for layer in cache.layers]
        leaves = [(k.detach().requires_grad_(k.requires_grad), v.detach().requires_grad_(v.requires_grad))
                  for k, v in self._head]
        self._leaves.append(leaves)
        return DynamicCache(ddp_cache_data=leaves), _after(enc, n)

    def backward(self) -> None:
        """Send the groups' summed gradients of the head's keys and values through the head (once)."""
        if self._head is None:
            return
        outputs, grads = [], []
        for i, pair in enumerate(self._head):
            for j, tensor in enumerate(pair):
                collected = [leaves[i][j].grad for leaves in self._leaves if leaves[i][j].grad is not None]
                if tensor.requires_grad and collected:
                    outputs.append(tensor)
                    grads.append(torch.stack(collected).sum(0))
        if outputs:
            torch.autograd.backward(outputs, grads)
        self._head, self._leaves = None, []


def _weights_version(model: torch.nn.Module) -> int:
    """Changes whenever a trainable weight is modified in place (an optimizer step bumps each tensor's
    version counter); constant for a frozen or merged model."""
    return sum(p._version for p in model.parameters() if p.requires_grad)


def save_drafts(folder: Path, texts: Sequence[str], limit: int = 512) -> None:
    """Write up to `limit` distinct answer texts (first seen first) as the folder's drafts."""
    unique = list(dict.fromkeys(texts))[:limit]
    (Path(folder) / DRAFTS_FILE).write_text(json.dumps(unique, indent=0))


def read_drafts(folder: Path) -> list[str]:
    """The folder's draft texts; [] if it has none. A malformed file is an error that names it."""
    path = Path(folder) / DRAFTS_FILE
    if not path.exists():
        return []
    try:
        texts = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc}); delete it (drafts only speed decisions up) or rewrite it") from exc
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{path}: expected a JSON list of answer texts; delete it or rewrite it")
    return texts
