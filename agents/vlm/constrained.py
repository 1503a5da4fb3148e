"""Decoding under the answer's grammar (agents.vlm.grammar): every answer parses 'ok', by construction.

llguidance computes which tokens the grammar allows after an answer so far (docs/agent.md,
"Constrained decoding", says why this library). The decoding policy is a function of the answer so
far and the token budget only, so agents.vlm.logprobs replays it token for token:
1. forced: the tokens the grammar forces - llguidance's fast-forward tokens (the rest of `<think>`,
   `</think>` once `</` is written, `": `, `, "`, a key's rest once its prefix is unique) and the only
   token the mask allows (EOS after `}`) - are appended without a sampling step; they go to the model
   in one forward pass together with the sampled token before them (jump-forward). With the calculator
   (the default), so is what the car thought asks the calculator for: after "nine km/h is" comes
   " 2.5 m/s", after "half width 0.95 less 0.18 is" comes " 0.77" (grammar.calculated);
2. finish: once the answer has max_new_tokens tokens, it is completed without the model: with the
   neutral ending (grammar.neutral_endings: a key at its default, the factory's hold) that best
   continues the text, else the closing character, digit or lowest token the grammar allows. These
   tokens cost no forward pass, so max_new_tokens still bounds the model's work; the answer may run
   `overrun` tokens past it (measured on the grammar: the longest completion after one more token).
   Reserving those tokens inside the budget instead cut 3 of 4 answers of the shipped car adapter
   (86-91 tokens, budget 96) and closed them with defaults, e.g. v_max 12 where the model wrote -0.98;
3. sampled: otherwise a token is drawn from the model's distribution restricted to the allowed tokens
   (the most likely allowed one at temperature 0).
A group of answers to one prompt shares one prompt pass (its key/value cache is copied to each member,
as in agents.training.run) and decodes as a batch: each member's forced tokens are fed with its sampled
one, left-padded to the longest in the step, so jump-forward works for n > 1 too.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import weakref
from collections.abc import Sequence
from typing import Any

import llguidance
import llguidance.hf
import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from agents.vlm.grammar import (
    CONVERSION_CUE,
    THOUGHT_CHARS,
    answer_lark,
    calculated,
    neutral_endings,
    probe_texts,
    written_bounds,
)
from agents.vlm.speculative import Drafter, PrefixCache

_LL_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_GRAMMARS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CLOSERS = ("}", *"0123456789", ".", "-")
"""Characters that lead to the end of an answer, tried in this order when no neutral ending fits."""
_MAX_FINISH = 2 * THOUGHT_CHARS
"""More tokens than any completion needs; reaching it is a bug in the grammar or this module."""


def _ll_tokenizer(tokenizer: PreTrainedTokenizerBase) -> llguidance.LLTokenizer:
    lltok = _LL_TOKENIZERS.get(tokenizer)
    if lltok is None:  # ~0.7 s for the 49k-token SmolLM2 vocabulary: once per tokenizer
        lltok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer))
        _LL_TOKENIZERS[tokenizer] = lltok
    return lltok


def action_grammar(tokenizer: PreTrainedTokenizerBase, task: str, calculator: bool = True) -> ActionGrammar:
    """The task's answer grammar on this tokenizer, built once per tokenizer, task and calculator (~1 s)."""
    per_task = _GRAMMARS.setdefault(tokenizer, {})
    if (task, calculator) not in per_task:
        per_task[task, calculator] = ActionGrammar(tokenizer, task, calculator)
    return per_task[task, calculator]


class ActionGrammar:
    """One task's answer grammar on one tokenizer: fresh matchers, the neutral endings, the overrun; with
    `calculator`, a conversion or subtraction the car thought asks for is completed by grammar.calculated (policy
    rule 1)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, task: str, calculator: bool = True) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("constrained decoding needs a tokenizer with an end token (eos_token_id is None)")
        self.task, self.calculator = task, calculator
        self.lltok = _ll_tokenizer(tokenizer)
        self.vocab = len(tokenizer)
        self.eos = int(tokenizer.eos_token_id)
        self._fresh: dict[tuple[tuple[str, float], ...], llguidance.LLMatcher] = {}
        self.endings = tuple(text.encode() for text in neutral_endings(task))
        self.closers = tuple(ids[0] for ids in (self.lltok.tokenize_str(c) for c in _CLOSERS) if len(ids) == 1)
        self.shortest, self.overrun = self._measure()

    def matcher(self, written: dict[str, float]) -> llguidance.LLMatcher:
        """A matcher at the start of an answer; `written` specialises later bounds (grammar.written_bounds)."""
        key = tuple(sorted(written.items()))
        fresh = self._fresh.get(key)
        if fresh is None:  # compiling takes ~25 ms, copying a fresh matcher ~4 us
            fresh = llguidance.LLMatcher(self.lltok, llguidance.LLMatcher.grammar_from_lark(
                answer_lark(self.task, written)), log_level=0)
            if fresh.is_error():
                raise RuntimeError(f"the {self.task} grammar does not compile: {fresh.get_error()}")
            if len(self._fresh) >= 256:
                self._fresh.clear()
            self._fresh[key] = fresh
        return fresh.deep_copy()

    @functools.cached_property
    def token_bytes(self) -> tuple[list[bytes], dict[int, list[int]]]:
        """Every token's bytes and the tokens by their first byte (built on first use, ~0.01 s), for encode_answer."""
        table = [self.lltok.decode_bytes([t]) for t in range(self.vocab)]
        first: dict[int, list[int]] = {}
        for t, b in enumerate(table):
            if b:
                first.setdefault(b[0], []).append(t)
        return table, first

    def allowed(self, matcher: llguidance.LLMatcher) -> np.ndarray:
        """Which tokens the grammar allows next: a bool per token of the vocabulary."""
        bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        return bits[: self.vocab].astype(bool)

    def start(self, max_new_tokens: int | None) -> AnswerState:
        """A new answer (at most max(max_new_tokens + overrun, shortest) tokens); None: no budget."""
        return AnswerState(self, max_new_tokens)

    def _measure(self) -> tuple[int, int]:
        """(tokens of the shortest answer, overrun): the overrun is the most tokens the forced tokens
        after one more sampled token and the completion after them take, from the probe prefixes
        (grammar.probe_texts)."""
        start = self.start(None)
        start.finish()
        shortest, overrun = len(start.tokens), 0
        for text in probe_texts(self.task):
            state = self.start(None)
            state.push(self.lltok.tokenize_str(text), forced=False)
            allowed = np.flatnonzero(self.allowed(state.matcher))
            if len(allowed) > 256:  # a thought: an ordinary token, `</`, and tokens ending 1-3 bytes short of a character
                short = {_utf8_missing(self.lltok.decode_bytes([int(t)])): int(t) for t in allowed[::-1]}
                allowed = [int(allowed[0]), *self.lltok.tokenize_str("</"), *short.values()]
            for token in allowed:
                probe = state.copy()
                probe.push([int(token)], forced=False)
                before = len(probe.tokens)
                probe.finish()
                overrun = max(overrun, len(probe.tokens) - before)
        return shortest, overrun


def _utf8_missing(data: bytes) -> int:
    """How many continuation bytes the last character of `data` still needs (0: complete)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: the character's first byte
            length = 2 if byte >= 0xC0 else 1
            length = 3 if byte >= 0xE0 else length
            length = 4 if byte >= 0xF0 else length
            return max(0, length - back)
    return 0


class AnswerState:
    """One answer being decoded or replayed: its tokens, which of them were forced, the grammar's state."""

    def __init__(self, grammar: ActionGrammar, budget: int | None) -> None:
        self.grammar, self.budget = grammar, budget
        self.written: dict[str, float] = {}
        self.matcher = grammar.matcher(self.written)
        self.tokens: list[int] = []
        self.forced: list[bool] = []
        self.text = b""
        self.done = False

    def copy(self) -> AnswerState:
        other = AnswerState.__new__(AnswerState)
        other.__dict__.update(self.__dict__, matcher=self.matcher.deep_copy(), tokens=list(self.tokens),
                              forced=list(self.forced), written=dict(self.written))
        return other

    def push(self, tokens: list[int], forced: bool) -> None:
        for token in tokens:  # one at a time: a value completed by one token bounds what the next may be
            if not self.matcher.consume_token(token):
                raise ValueError(f"the {self.grammar.task} grammar refuses token {token} after {self.text!r}: "
                                 f"{self.matcher.get_error()}")
            self.tokens.append(token)
            self.forced.append(forced)
            if token == self.grammar.eos:
                self.done = True
                continue
            self.text += self.grammar.lltok.decode_bytes([token])
            written = written_bounds(self.grammar.task, self.text.decode("utf-8", "replace"))
            if written != self.written:  # e.g. v_min complete: v_max's lower bound is now known
                self.written = written
                self.matcher = self.grammar.matcher(written)
                if not all(self.matcher.consume_token(t) for t in self.tokens):
                    raise RuntimeError(f"the specialised grammar refuses the answer so far {self.text!r}")

    def advance(self) -> np.ndarray | None:
        """Append what the policy chooses without the model (forced tokens, or the whole finish); the
        allowed tokens of the next sampling step, or None when the answer is complete."""
        while not self.done:
            forced = self.matcher.compute_ff_tokens() or self._calculated()
            if forced:
                self.push(forced, forced=True)
                continue
            if self.budget is not None and len(self.tokens) >= self.budget:
                self.finish()
                break
            allowed = self.grammar.allowed(self.matcher)
            ids = np.flatnonzero(allowed)
            if len(ids) == 1:
                self.push([int(ids[0])], forced=True)
                continue
            if len(ids) == 0:
                raise RuntimeError(f"the grammar allows no token after {self.text!r}")
            return allowed
        return None

    def _calculated(self) -> list[int]:
        """The tokens of the calculation the thought asks for (grammar.calculated), if the grammar has the
        calculator, they fit the budget and the grammar takes them (a thought at its length limit may not); else []."""
        if not self.grammar.calculator or not self.text.endswith(CONVERSION_CUE.encode()):
            return []  # the common case, on every sampled token: no decode of the text so far
        text = calculated(self.grammar.task, self.text.decode("utf-8", "replace"))
        if text is None:
            return []
        tokens = self.grammar.lltok.tokenize_str(text)
        if self.budget is not None and len(self.tokens) + len(tokens) >= self.budget:
            return []
        return tokens if self.matcher.validate_tokens(tokens) == len(tokens) else []

    def sample(self, token: int) -> None:
        """Append a sampled token."""
        self.push([int(token)], forced=False)

    def finish(self) -> None:
        """Complete the answer without the model (policy rule 2); every token it adds is forced."""
        eos = self.grammar.eos
        for _ in range(_MAX_FINISH):
            if self.done:
                return
            forced = self.matcher.compute_ff_tokens()
            if forced:
                self.push(forced, forced=True)
                continue
            allowed = self.grammar.allowed(self.matcher)
            if allowed[eos]:
                self.push([eos], forced=True)
                continue
            ending = self._ending()
            if ending is not None:
                self.push(ending, forced=True)  # the end token follows on the next round
                continue
            closer = next((t for t in self.grammar.closers if allowed[t]), None)
            self.push([int(np.flatnonzero(allowed)[0]) if closer is None else closer], forced=True)
        raise RuntimeError(f"could not complete the answer {self.text!r} in {_MAX_FINISH} tokens")

    def _ending(self) -> list[int] | None:
        """Tokens of the neutral ending that continues the most of the text so far (the earlier one on ties)
        and that the grammar accepts to the end; None if none does."""
        best, overlap = None, -1
        for text in self.grammar.endings:
            for split in range(len(text) - 1, overlap, -1):
                if not self.text.endswith(text[:split]):
                    continue
                tail = self.grammar.lltok.tokenize_bytes(text[split:])
                if self.matcher.validate_tokens(tail + [self.grammar.eos]) == len(tail) + 1:
                    best, overlap = tail, split
                    break
        return best


@dataclasses.dataclass(frozen=True)
class Decoded:
    """Answers to one prompt, decoded under the grammar, and what that took."""

    answers: tuple[torch.Tensor, ...]
    """Token ids of each answer, ending with the end token."""
    forced: tuple[torch.Tensor, ...]
    """Per answer token: True where the grammar chose it (no sampling step), False where it was sampled."""
    passes: int
    """Forward passes after the prompt pass: one per sampling step of the group (forced tokens ride along)."""
    grammar_seconds: float
    """Wall time spent in the grammar (masks, fast-forward tokens, finishing), not in the model."""
    drafted: int = 0
    """Sampled tokens that came from a verified draft (agents.vlm.speculative) instead of a pass of their own."""
    prompt_seconds: float = 0.0
    """Wall time of the prompt pass (the part not in the cached head, when one is given)."""

    def __post_init__(self) -> None:
        if len(self.answers) != len(self.forced) or any(len(a) != len(f) for a, f in zip(self.answers, self.forced)):
            raise ValueError("Decoded: every answer needs one forced flag per token")

    @property
    def sampled_tokens(self) -> int:
        return sum(int((~f).sum()) for f in self.forced)

    @property
    def forced_tokens(self) -> int:
        return sum(int(f.sum()) for f in self.forced)


def _distribution(logits: torch.Tensor, allowed: np.ndarray, temperature: float,
                  top_p: float) -> tuple[np.ndarray, np.ndarray | None]:
    """(allowed token ids, their probabilities under softmax(logits / temperature) and the nucleus), in numpy:
    torch.multinomial and fancy indexing over 49k entries took 20-35 ms a call on two busy cores, this ~1.5 ms.
    Probabilities are None at temperature 0 (greedy: the argmax)."""
    ids = np.flatnonzero(allowed)
    scores = logits.detach().float().cpu().numpy()[ids].astype(np.float64)
    if temperature == 0:
        return ids[[int(np.argmax(scores))]], None
    probs = np.exp((scores - scores.max()) / temperature)
    probs /= probs.sum()
    if top_p < 1.0:  # nucleus: the most likely allowed tokens up to top_p of the mass (the first always)
        order = np.argsort(-probs, kind="stable")
        keep = order[np.cumsum(probs[order]) - probs[order] < top_p]
        ids, probs = ids[keep], probs[keep] / probs[keep].sum()
    return ids, probs


def _draw(ids: np.ndarray, probs: np.ndarray | None, generator: torch.Generator | None) -> int:
    """A draw by inverse CDF (the argmax when greedy)."""
    if probs is None:
        return int(ids[0])
    cdf = np.cumsum(probs)
    u = float(torch.rand((), dtype=torch.float64, generator=generator))
    return int(ids[min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), len(ids) - 1)])


def _pick(logits: torch.Tensor, allowed: np.ndarray, temperature: float, top_p: float,
          generator: torch.Generator | None) -> int:
    """A draw from softmax(logits / temperature) over the allowed tokens (their argmax at temperature 0)."""
    return _draw(*_distribution(logits, allowed, temperature, top_p), generator)


def _verify(logits: torch.Tensor, allowed: np.ndarray, draft: int, temperature: float, top_p: float,
            generator: torch.Generator | None) -> int:
    """The token the policy takes where a draft proposed `draft`: the draft itself if greedy picks it, or with
    the probability p(draft) when sampling; otherwise a draw from p without the draft, renormalised. Every
    token so taken has exactly the distribution _pick gives (speculative sampling with a point-mass draft)."""
    ids, probs = _distribution(logits, allowed, temperature, top_p)
    if probs is None:
        return int(ids[0])
    hit = np.flatnonzero(ids == draft)
    p_draft = float(probs[hit[0]]) if len(hit) else 0.0
    if p_draft > 0 and float(torch.rand((), dtype=torch.float64, generator=generator)) < p_draft:
        return draft
    if len(hit):
        if p_draft >= 1.0:
            return draft
        probs = probs.copy()
        probs[hit[0]] = 0.0
    return _draw(ids, probs / probs.sum(), generator)


def _candidate(state: AnswerState, allowed: np.ndarray, draft: list[int]) -> tuple[list[int], list[tuple], AnswerState,
                                                                            np.ndarray | None]:
    """The tokens a draft puts after the answer so far, as the policy would append them: each drafted token
    the mask allows at a sampling point, then the forced tokens after it (the draft's own copy of those is
    skipped; where it departs from them, the draft ends). Returns (tokens to feed, checks, the state after
    them, its mask): a check is (offset of the token in the fed tokens, the state before it, the mask
    there, the drafted token)."""
    sim, mask, fed, checks, i = state.copy(), allowed, [], [], 0
    while i < len(draft) and mask is not None and mask[draft[i]]:
        checks.append((len(fed), sim.copy(), mask, draft[i]))
        before = len(sim.tokens)
        sim.sample(draft[i])
        mask = sim.advance()
        added = sim.tokens[before:]
        fed += added
        if draft[i:i + len(added)] != added:
            break
        i += len(added)
    return fed, checks, sim, mask


@dataclasses.dataclass
class _Row:
    """One answer of a group being decoded: its state and what of it the model has seen."""

    state: AnswerState
    allowed: np.ndarray | None
    """The mask at its next sampling point; None when the answer is complete."""
    logits: torch.Tensor | None = None
    """The model's next-token logits after every token fed so far (the prompt's at first)."""
    length: int = 0
    """Tokens of the prompt and the answer in the cache that this row attends to."""
    fed: int = 0
    """Answer tokens fed to the model so far."""
    prompt: list[int] = dataclasses.field(default_factory=list)
    """The prompt's token ids (drafts may copy from it)."""


def constrained_generate(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, enc: dict[str, torch.Tensor],
                         task: str, n: int = 1, temperature: float = 0.0, max_new_tokens: int = 128,
                         top_p: float = 1.0, generator: torch.Generator | None = None, drafter: Drafter | None = None,
                         prefix: PrefixCache | None = None, calculator: bool = True) -> Decoded:
    """n answers to one prompt (`enc`: a batch of one, as VLMAgent.encode makes it), each complete under
    the task's grammar and ending with the end token; temperature 0 is greedy. `generator` seeds the
    sampling (None: torch's global generator). With a `prefix` cache and a `drafter` (agents.vlm.speculative)
    the prompt's head is not recomputed and drafted tokens are verified in the passes the answers need
    anyway: the same answers (greedy) or the same distribution (sampling), fewer passes. The drafter
    remembers every answer given. `calculator`: the conversions and subtractions a car thought asks for are computed
    (grammar.calculated)."""
    return generate_groups(model, tokenizer, [enc], task, n, temperature, max_new_tokens, top_p, generator,
                           drafter, prefix, calculator=calculator)[0]


@torch.no_grad()
def generate_groups(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[dict[str, torch.Tensor]],
                    task: str, n: int = 1, temperature: float = 0.0, max_new_tokens: int = 128, top_p: float = 1.0,
                    generator: torch.Generator | None = None, drafter: Drafter | None = None,
                    prefix: PrefixCache | None = None, max_width: int | None = None,
                    calculator: bool = True) -> list[Decoded]:
    """A group of n answers to each prompt, all decoded in one batch (constrained_generate's answers, one
    Decoded per prompt). Each prompt runs once and its key/value cache is copied to its n rows; prompts of
    different lengths are padded after their end and the padding masked out, so every row sees exactly its
    own prompt. On a CPU a pass over 4 x 8 rows costs far less than four passes over 8, so a GRPO step's
    groups decode together. The Decoded of every prompt reports the batch's passes and times.

    Each pass feeds every unfinished answer's unseen tokens (its last sampled token, the forced ones after
    it, then a draft), left-padded to a common width. A refused drafted token and everything after it stay
    in the key/value cache but are masked out of attention, so rows that keep different amounts of their
    drafts share one cache; positions count the tokens a row attends to."""
    if (not prompts or n < 1 or temperature < 0 or not 0 < top_p <= 1
            or any(enc["input_ids"].shape[0] != 1 for enc in prompts)):
        raise ValueError(f"constrained_generate: need prompts of one row each, n >= 1, temperature >= 0, 0 < top_p <= 1 "
                         f"(got {[enc['input_ids'].shape[0] for enc in prompts]} rows, n={n}, "
                         f"temperature={temperature}, top_p={top_p})")
    grammar = action_grammar(tokenizer, task, calculator)
    started = time.perf_counter()
    rows = [_Row(state, state.advance()) for state in (grammar.start(max_new_tokens) for _ in range(n * len(prompts)))]
    grammar_s = time.perf_counter() - started
    prompt_started = time.perf_counter()
    caches, lengths = [], []
    for j, enc in enumerate(prompts):
        cache, rest = prefix.split(model, enc) if prefix is not None else (None, enc)
        out = model(**rest, **({"cache": cache} if cache is not None else {}), use_cache=True, logits_to_keep=1)
        caches.append(out.cache)
        lengths.append(enc["input_ids"].shape[1])
        for row in rows[j * n:(j + 1) * n]:
            row.logits, row.length = out.logits[0, -1].float(), lengths[-1]
            row.prompt = enc["input_ids"][0].tolist()
    cache = _stack_caches(caches, lengths, n)
    prompt_s = time.perf_counter() - prompt_started
    device = prompts[0]["input_ids"].device
    attention = torch.cat([torch.nn.functional.pad(enc["attention_mask"], (0, max(lengths) - length)).repeat(n, 1)
                           for enc, length in zip(prompts, lengths)])
    live, passes, drafted = list(range(len(rows))), 0, 0  # live: the rows still in the batch (and the cache)
    while True:
        keep = [k for k, i in enumerate(live) if rows[i].allowed is not None]
        if not keep:
            break
        if len(keep) < len(live):  # finished answers leave the batch
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            attention, live = attention[index], [live[k] for k in keep]
        t = time.perf_counter()
        plans = []
        for i in live:
            row = rows[i]
            pending = row.state.tokens[row.fed:]
            if max_width is not None and len(pending) > max_width:  # the rest of its forced tokens next pass
                plans.append((pending[:max_width], [], [], None, None))
                continue
            draft = drafter.propose(row.state.tokens, row.prompt) if drafter is not None else []
            extra, checks, end, end_allowed = (_candidate(row.state, row.allowed, draft) if draft
                                               else ([], [], row.state, row.allowed))
            plans.append((pending, extra, checks, end, end_allowed))
        grammar_s += time.perf_counter() - t
        seqs = [pending + extra for pending, extra, *_ in plans]
        width = max(map(len, seqs))
        # Without drafts only each row's last position is sampled from (rows are left-padded): the output
        # layer (49k words, a fifth of a pass's arithmetic) runs on that one position alone.
        logit_positions = width if any(checks for _, _, checks, *_ in plans) else 1
        if width:
            pads = [width - len(seq) for seq in seqs]
            ids = torch.tensor([[0] * p + seq for p, seq in zip(pads, seqs)], device=device)
            new = torch.tensor([[0] * p + [1] * (width - p) for p in pads], device=device, dtype=attention.dtype)
            positions = torch.tensor([[0] * p + list(range(rows[i].length, rows[i].length + width - p))
                                      for p, i in zip(pads, live)], device=device)
            attention = torch.cat([attention, new], 1)
            out = model(input_ids=ids, attention_mask=attention, position_ids=positions, cache=cache, use_cache=True,
                        logits_to_keep=logit_positions)
            cache, passes = out.cache, passes + 1
        t = time.perf_counter()
        for r, (i, seq, (pending, _extra, checks, end, end_allowed)) in enumerate(zip(live, seqs, plans)):
            row = rows[i]
            if end is None:  # fed part of its forced tokens (max_width): nothing to sample yet
                row.length, row.fed = row.length + len(seq), row.fed + len(seq)
                continue
            # dists[k]: the distribution of the token at seq[k]; the last one is of the token after seq (without
            # drafts only that one is computed)
            if not seq:
                dists = [row.logits]
            elif logit_positions == 1:
                dists = [out.logits[r, -1].float()]
            else:
                dists = [row.logits, *out.logits[r, width - len(seq):].float()]
            kept = _settle_draft(row, dists, len(pending), checks, temperature, top_p, generator)
            drafted += kept
            if kept < len(checks):  # a refusal: the row's tokens after the kept ones are masked out
                cut = len(pending) + checks[kept][0]
                attention[r, attention.shape[1] - len(seq) + cut:] = 0
                row.length, row.fed = row.length + cut, row.fed + cut
                continue
            row.length, row.fed, row.logits = row.length + len(seq), row.fed + len(seq), dists[-1]
            if checks:
                row.state, row.allowed = end, end_allowed
            if row.allowed is not None:
                row.state.sample(_pick(row.logits, row.allowed, temperature, top_p, generator))
                row.allowed = row.state.advance()
        grammar_s += time.perf_counter() - t
    for row in rows if drafter is not None else ():
        drafter.remember(row.state.tokens)
    return [Decoded(tuple(torch.tensor(row.state.tokens) for row in group),
                    tuple(torch.tensor(row.state.forced) for row in group), passes, grammar_s, drafted, prompt_s)
            for group in (rows[j * n:(j + 1) * n] for j in range(len(prompts)))]


def _stack_caches(caches: list[Any], lengths: list[int], n: int) -> Any:
    """One key/value cache for every row: prompt j's cache (batch of one, `lengths[j]` positions) repeated n
    times, each padded after its end to the longest prompt (the padding is masked out of attention)."""
    cache, width = caches[0], max(lengths)
    if len(caches) == 1:
        cache.batch_repeat_interleave(n)
        return cache
    for layer, *others in zip(cache.layers, *(c.layers for c in caches[1:])):
        for name in ("keys", "values"):
            parts = [getattr(each, name) for each in (layer, *others)]
            padded = [torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[2])) for t in parts]
            setattr(layer, name, torch.cat(padded, 0).repeat_interleave(n, dim=0))
    return cache


def _settle_draft(row: _Row, dists: list[torch.Tensor], pending: int, checks: list[tuple], temperature: float,
                  top_p: float, generator: torch.Generator | None) -> int:
    """Verify a row's drafted tokens in order; at the first refusal, the row takes the policy's own token there
    (its state moves to just after it). Returns how many drafted tokens were kept."""
    for kept, (offset, before, mask, token) in enumerate(checks):
        chosen = _verify(dists[pending + offset], mask, token, temperature, top_p, generator)
        if chosen != token:
            row.state = before
            row.state.sample(chosen)
            row.allowed = row.state.advance()
            return kept
    return len(checks)


def encode_answer(grammar: ActionGrammar, text: str, max_new_tokens: int) -> list[int]:
    """The tokens the constrained sampler writes `text` with, ending with the end token: the grammar's forced
    tokens where it forces them, elsewhere the longest allowed token that continues the text. For an answer the
    model did not sample (an exploration answer, agents.training.explore), so that `replay` and
    agents.vlm.logprobs.score_constrained score it as they score sampled ones (a tokenizer's own split may
    differ from the grammar's forced tokens, which replay would refuse). Raises ValueError if the grammar
    cannot write `text` within max_new_tokens."""
    target = text.encode()
    table, by_first = grammar.token_bytes
    state = grammar.start(max_new_tokens)
    while True:
        allowed = state.advance()
        if not target.startswith(state.text):
            raise ValueError(f"the {grammar.task} grammar cannot write {text!r} in {max_new_tokens} tokens: it "
                             f"departs after {state.text.decode('utf-8', 'replace')!r}")
        if allowed is None:
            return state.tokens
        rest = target[len(state.text):]
        if not rest:
            if not allowed[grammar.eos]:
                raise ValueError(f"{text!r} ends before the {grammar.task} grammar's answer does")
            state.sample(grammar.eos)
            continue
        fits = [t for t in by_first.get(rest[0], ()) if allowed[t] and rest.startswith(table[t])]
        if not fits:
            raise ValueError(f"the {grammar.task} grammar cannot write {text!r}: no allowed token continues "
                             f"{rest.decode('utf-8', 'replace')!r}")
        state.sample(max(fits, key=lambda t: len(table[t])))


def replay(grammar: ActionGrammar, answer: Sequence[int], max_new_tokens: int) -> tuple[list[int], np.ndarray, list[bool]]:
    """How the policy produced an answer: the positions it sampled, the tokens allowed at each of them
    (k, vocabulary) and a forced flag per token. Raises ValueError for an answer it could not have made."""
    answer = [int(t) for t in answer]
    state = grammar.start(max_new_tokens)
    positions, masks = [], []
    while True:
        allowed = state.advance()
        k = len(state.tokens)
        if state.tokens != answer[:k]:
            raise ValueError(f"the answer {answer} was not decoded under the {grammar.task} grammar with "
                             f"max_new_tokens={max_new_tokens}: it departs from it at token {k}")
        if allowed is None:
            break
        if k >= len(answer):
            raise ValueError(f"the answer {answer} ends before its grammar is complete")
        positions.append(k)
        masks.append(allowed)
        state.sample(answer[k])
    if len(state.tokens) != len(answer):
        raise ValueError(f"the answer {answer} goes on after its grammar is complete")
    return positions, np.stack(masks) if masks else np.zeros((0, grammar.vocab), dtype=bool), state.forced
