"""Drafts and a cached prompt head change what a decision costs, never what it decides: greedy answers are
the same token for token, a sampled token keeps its distribution, and a head cached before the weights
changed is recomputed. The model is test_constrained's tiny random LLaVA with the real tokenizer."""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

from agents.vlm.constrained import (
    _distribution,
    _verify,
    action_grammar,
    constrained_generate,
    generate_groups,
    replay,
)
from agents.vlm.speculative import Drafter, PrefixCache, read_drafts, save_drafts
from tests.agents.test_constrained import QUICK, TASKS, check_answer, encode

pytestmark = pytest.mark.usefixtures("one_thread")

INSTRUCTIONS = ["Drive at 2 m/s.", "Keep to the centre line.", "Reverse slowly.", "Drive smoothly.", "Inspect the part."]


def _plain(model, tok, enc, task, **kw):
    return constrained_generate(model, tok, enc, task, **kw).answers[0].tolist()


@settings(max_examples=8, deadline=None, suppress_health_check=QUICK)
@given(task=st.sampled_from(TASKS), seed=st.integers(0, 2**16), budget=st.integers(1, 40), n=st.integers(1, 3),
       noise=st.lists(st.lists(st.integers(0, 49151), max_size=30), max_size=4))
def test_greedy_answers_are_the_same_with_drafts_and_a_cached_head(model, tok, task, seed, budget, n, noise):
    """Drafts of every kind: none yet, random tokens, the exact answer (learned from an earlier decision);
    one answer or a group, whose rows keep different amounts of their drafts."""
    drafter, prefix = Drafter(), PrefixCache(model.config.image_token_id, min_tokens=4)
    for tokens in noise:
        drafter.remember(tokens)
    for round_ in range(2):
        for k, instruction in enumerate(INSTRUCTIONS[:3]):
            enc = encode(model, tok, task, instruction, number=k + 0.5, seed=seed + k)
            want = _plain(model, tok, enc, task, max_new_tokens=budget)
            fast = constrained_generate(model, tok, enc, task, n=n, max_new_tokens=budget, drafter=drafter,
                                        prefix=prefix)
            assert [a.tolist() for a in fast.answers] == [want] * n, (round_, instruction)
            if round_:  # the second time, the drafter holds this very answer
                assert fast.drafted > 0 or fast.sampled_tokens <= 1
    assert prefix.hits >= 4 and len(prefix.tokens) >= 4


@settings(max_examples=6, deadline=None, suppress_health_check=QUICK)
@given(task=st.sampled_from(TASKS), seed=st.integers(0, 2**16), budget=st.integers(1, 40))
def test_sampled_groups_with_drafts_are_answers_the_policy_can_make(model, tok, task, seed, budget):
    """Every sampled answer parses, and replaying the policy on it (what the trainers score) accepts it."""
    drafter = Drafter()
    grammar = action_grammar(tok, task)
    for k in range(3):
        enc = encode(model, tok, task, INSTRUCTIONS[k], number=k, seed=seed + k)
        decoded = constrained_generate(model, tok, enc, task, n=4, temperature=1.5, max_new_tokens=budget,
                                       generator=torch.Generator().manual_seed(seed + k), drafter=drafter)
        for answer, forced in zip(decoded.answers, decoded.forced):
            check_answer(tok, task, answer, forced, budget)
            assert replay(grammar, answer.tolist(), budget)[2] == forced.tolist()


@settings(max_examples=6, deadline=None, suppress_health_check=QUICK)
@given(task=st.sampled_from(TASKS), seed=st.integers(0, 2**16), budget=st.integers(1, 40), n=st.integers(1, 3),
       cached=st.booleans(), max_width=st.sampled_from([None, 1, 2, 3]))
def test_groups_of_prompts_of_different_lengths_decode_as_each_alone(model, tok, task, seed, budget, n, cached,
                                                                     max_width):
    """generate_groups pads shorter prompts after their end: greedy answers are those of each prompt decoded
    alone (a wrong position or an unmasked pad would change them), with or without a cached head and drafts,
    and with forced tokens fed a few at a time (max_width)."""
    encs = [encode(model, tok, task, instruction, number=k + 0.5, seed=seed + k)
            for k, instruction in enumerate(INSTRUCTIONS[:4])]
    assert len({enc["input_ids"].shape[1] for enc in encs}) > 1  # the padding is exercised
    alone = [_plain(model, tok, enc, task, max_new_tokens=budget) for enc in encs]
    extra = {"prefix": PrefixCache(model.config.image_token_id, min_tokens=4), "drafter": Drafter()} if cached else {}
    for _ in range(2 if cached else 1):  # the second round: the head is cached and the drafter knows the answers
        together = generate_groups(model, tok, encs, task, n=n, max_new_tokens=budget, max_width=max_width, **extra)
        assert [[a.tolist() for a in d.answers] for d in together] == [[want] * n for want in alone]


def test_sampled_groups_of_several_prompts_are_answers_each_prompt_can_make(model, tok):
    grammar = action_grammar(tok, "car")
    encs = [encode(model, tok, "car", instruction, number=k, seed=k) for k, instruction in enumerate(INSTRUCTIONS[:3])]
    groups = generate_groups(model, tok, encs, "car", n=4, temperature=1.5, max_new_tokens=30,
                             generator=torch.Generator().manual_seed(0))
    assert [len(d.answers) for d in groups] == [4, 4, 4]
    for decoded in groups:
        for answer, forced in zip(decoded.answers, decoded.forced):
            check_answer(tok, "car", answer, forced, 30)
            assert replay(grammar, answer.tolist(), 30)[2] == forced.tolist()
    with pytest.raises(ValueError, match="prompts of one row each"):
        generate_groups(model, tok, [], "car")


def test_a_draft_of_the_whole_answer_costs_one_pass(model, tok):
    enc = encode(model, tok, "car", "Drive at 2 m/s.")
    drafter = Drafter(draft_tokens=200)
    first = constrained_generate(model, tok, enc, "car", max_new_tokens=40, drafter=drafter)
    again = constrained_generate(model, tok, enc, "car", max_new_tokens=40, drafter=drafter)
    assert again.answers[0].tolist() == first.answers[0].tolist()
    assert first.passes > 3 and again.passes == 1 and again.drafted == first.sampled_tokens


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), temperature=st.sampled_from([0.7, 1.0, 2.0]), top_p=st.sampled_from([1.0, 0.9]))
@example(seed=316, temperature=0.7, top_p=1.0)
def test_a_verified_draft_keeps_the_distribution(seed, temperature, top_p):
    """Speculative sampling with a point-mass draft: whatever the draft, the token taken is distributed as
    _distribution says (chi-square over 4000 draws, a fixed generator so the test replays)."""
    rng = np.random.default_rng(seed)
    logits = torch.tensor(rng.normal(0, 2, 12), dtype=torch.float32)
    allowed = rng.random(12) < 0.7
    allowed[rng.integers(12)] = True
    ids, probs = _distribution(logits, allowed, temperature, top_p)
    draft = int(rng.choice(np.flatnonzero(allowed)))
    gen = torch.Generator().manual_seed(seed)
    draws = [_verify(logits, allowed, draft, temperature, top_p, gen) for _ in range(4000)]
    counts = np.array([draws.count(int(i)) for i in ids])
    assert counts.sum() == 4000  # never a token outside the allowed nucleus
    counts, expected = _pool_rare_cells(counts, np.asarray(probs) * 4000)
    if len(counts) > 1:
        assert stats.chisquare(counts, expected).pvalue > 1e-4


def _pool_rare_cells(counts: np.ndarray, expected: np.ndarray, least: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Merge the cells expecting fewer than `least` draws into one, the rarest first, until it expects
    `least`: the chi-square approximation fails on rare cells (seed 316 once gave p = 7e-5 from cells
    expecting 0.4 draws)."""
    order = np.argsort(expected)
    merged, cut = 0.0, 0
    while cut < len(order) and (expected[order[cut]] < least or (cut > 0 and merged < least)):
        merged += expected[order[cut]]
        cut += 1
    rare, kept = order[:cut], order[cut:]
    if cut == 0:
        return counts, expected
    return (np.append(counts[kept], counts[rare].sum()), np.append(expected[kept], expected[rare].sum()))


def test_greedy_verification_takes_the_argmax():
    logits = torch.tensor([0.0, 3.0, 1.0, 2.0])
    allowed = np.array([True, False, True, True])
    assert _verify(logits, allowed, 2, 0.0, 1.0, None) == 3
    assert _verify(logits, allowed, 3, 0.0, 1.0, None) == 3


def test_a_head_cached_before_training_is_recomputed(model, tok):
    task, prefix = "car", PrefixCache(model.config.image_token_id, min_tokens=4)
    encs = [encode(model, tok, task, text, number=k, seed=k) for k, text in enumerate(INSTRUCTIONS[:2])]
    for enc in encs:
        constrained_generate(model, tok, enc, task, max_new_tokens=12, prefix=prefix)
    weight = model.get_input_embeddings().weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(1.7)  # an optimizer step would change weights in place just so
        assert constrained_generate(model, tok, encs[0], task, max_new_tokens=12, prefix=prefix).answers[0].tolist() == \
            _plain(model, tok, encs[0], task, max_new_tokens=12)
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_the_drafter_proposes_what_followed_the_longest_match():
    drafter = Drafter(max_ngram=4, min_ngram=2, draft_tokens=3)
    assert drafter.propose([1, 2]) == []
    drafter.remember([1, 2, 3, 4, 5, 6])
    drafter.remember([9, 2, 3, 7, 8])
    assert drafter.propose([2, 3]) == [7, 8]  # the most recent answer on ties
    assert drafter.propose([1, 2, 3]) == [4, 5, 6]  # a longer match wins
    assert drafter.propose([]) == [9, 2, 3]  # an answer not begun: the latest answer's start
    assert drafter.propose([5, 5], prompt=[4, 5, 5, 11, 12, 13, 14]) == [11, 12, 13]  # prompt lookup
    with pytest.raises(ValueError, match="min_ngram"):
        Drafter(max_ngram=1, min_ngram=2)


def test_drafts_files_round_trip_and_a_broken_one_is_named(tmp_path):
    save_drafts(tmp_path, ["a", "b", "a", "c"], limit=2)
    assert read_drafts(tmp_path) == ["a", "b"]
    assert read_drafts(tmp_path / "nowhere") == []
    (tmp_path / "drafts.json").write_text("{not json")
    with pytest.raises(ValueError, match="drafts.json"):
        read_drafts(tmp_path)
    (tmp_path / "drafts.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="list of answer texts"):
        read_drafts(tmp_path)


def test_a_shared_head_gives_the_gradient_of_running_the_head_per_group(model, tok):
    """Two groups scored with gradients: the head run once (SharedHead) or in each group's prompt pass give
    the same loss and the same gradient on every weight; a frozen model's PrefixCache gives the same log-probs."""
    from agents.vlm.logprobs import score_constrained
    from agents.vlm.speculative import SharedHead

    grammar = action_grammar(tok, "car")
    encs = [encode(model, tok, "car", instruction, number=k, seed=k) for k, instruction in enumerate(INSTRUCTIONS[:2])]
    prefix = PrefixCache(model.config.image_token_id, min_tokens=4)
    groups = [d.answers for d in generate_groups(model, tok, encs, "car", n=3, temperature=1.5, max_new_tokens=20,
                                                 generator=torch.Generator().manual_seed(3), prefix=prefix)]
    assert prefix.tokens

    def gradients(head):
        model.zero_grad()
        losses = []
        for enc, answers in zip(encs, groups):
            logps = score_constrained(model, enc, list(answers), grammar, 20, head=head)[0]
            loss = -torch.stack([lp.sum() * (k + 1) for k, lp in enumerate(logps)]).sum()
            loss.backward()
            losses.append(float(loss.detach()))
        if head is not None:
            assert len(head._leaves) == 2  # both groups read the shared head
            head.backward()
        return losses, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain_losses, plain = gradients(None)
    shared_losses, shared = gradients(SharedHead(model, prefix.tokens))
    assert shared_losses == pytest.approx(plain_losses, rel=1e-5)
    assert plain.keys() == shared.keys() and len(plain) > 10
    for name in plain:
        assert torch.allclose(plain[name], shared[name], atol=1e-5, rtol=1e-4), name
    with torch.no_grad():
        cached = score_constrained(model, encs[1], list(groups[1]), grammar, 20, head=prefix)[0]
        direct = score_constrained(model, encs[1], list(groups[1]), grammar, 20)[0]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(cached, direct))
    model.zero_grad()
