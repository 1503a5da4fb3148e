"""Decoding under the answer grammar: every answer parses 'ok', whatever the weights, prompt and budget;
the constrained log-probabilities are those of the policy that sampled; jump-forward feeds the model right.

The model is a tiny randomly initialised LLaVA (2 text layers, hidden 64) with the real SmolLM2
tokenizer, so the grammar meets the real 49k vocabulary and the real VLMAgent prompt path."""

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.control.mpc_params import DEFAULT, SPECS, MPCParams
from agents.vlm.constrained import action_grammar, constrained_generate, replay
from agents.vlm.grammar import THOUGHT_CHARS, answer_lark, written_bounds
from agents.vlm.logprobs import score_constrained
from agents.vlm.model import GenerationConfig, VisionConfig, VLMAgent
from agents.vlm.parsing import FACTORY_DECISIONS, FACTORY_FALLBACK, PARSERS
from twin.core.config import ConfigError
from twin.core.contracts import Observation

pytestmark = pytest.mark.usefixtures("one_thread")
VISION = VisionConfig(image_size=32, patch_size=16, hidden_size=32, layers=1, heads=2, intermediate_size=64)
TASKS = ("car", "factory")
QUICK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def encode(model, tok, task: str, instruction: str = "Drive at 2 m/s.", number: float = 1.0, seed: int = 0):
    image = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    state = {"speed": number, "lateral_offset": -number / 7, "heading_error": number / 11, "half_width": 0.9,
             "kind_plate": 1.0}
    agent = VLMAgent(model, tok, task, "test", vision=VISION)
    return agent.encode(Observation(0.0, state, image=image, instruction=instruction))


def check_answer(tok, task: str, answer: torch.Tensor, forced: torch.Tensor, budget: int) -> dict:
    """Every property an answer decoded under the grammar must have; returns its action object."""
    grammar = action_grammar(tok, task)
    ids = answer.tolist()
    assert ids[-1] == tok.eos_token_id and tok.eos_token_id not in ids[:-1]
    assert len(forced) == len(ids) and len(ids) <= max(budget + grammar.overrun, grammar.shortest)
    raw = tok.decode(answer, skip_special_tokens=True)
    parsed = PARSERS[task](raw)
    assert parsed.status == "ok", (raw, parsed.status)
    pairs = json.loads(raw[slice(*parsed.action_span)], object_pairs_hook=list)
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)) >= 1  # distinct
    assert len(parsed.thought) <= THOUGHT_CHARS
    obj = dict(pairs)
    if task == "car":
        for k, v in obj.items():
            assert SPECS[k].low <= v <= SPECS[k].high  # a known name, in range
        MPCParams.from_dict(obj)  # strict: v_min <= v_max too
    else:
        assert keys == ["decision"] and obj["decision"] in FACTORY_DECISIONS
    return obj


@settings(max_examples=10, deadline=None, suppress_health_check=QUICK)
@given(task=st.sampled_from(TASKS), temperature=st.sampled_from([0.0, 1.5]), instruction=st.text(max_size=60),
       number=st.floats(-50, 50, allow_nan=False), seed=st.integers(0, 2**16), n=st.integers(1, 3),
       budget=st.integers(1, 48))
def test_every_answer_of_random_weights_parses_ok(model, tok, task, temperature, instruction, number, seed, n, budget):
    enc = encode(model, tok, task, instruction, number, seed)
    decoded = constrained_generate(model, tok, enc, task, n=n, temperature=temperature, max_new_tokens=budget,
                                   generator=torch.Generator().manual_seed(seed))
    assert len(decoded.answers) == n
    assert decoded.sampled_tokens + decoded.forced_tokens == sum(len(a) for a in decoded.answers)
    for answer, forced in zip(decoded.answers, decoded.forced):
        check_answer(tok, task, answer, forced, budget)
        assert replay(action_grammar(tok, task), answer.tolist(), budget)[2] == forced.tolist()


@settings(max_examples=150, deadline=None, suppress_health_check=QUICK)
@given(task=st.sampled_from(TASKS), seed=st.integers(0, 2**32 - 1), budget=st.integers(1, 160),
       end_thought=st.floats(0.0, 0.5), more_keys=st.floats(0.0, 1.0))
def test_any_choice_among_the_allowed_tokens_parses_ok(tok, task, seed, budget, end_thought, more_keys):
    """The grammar alone, driven by random choices (a long budget reaches several keys, every kind of
    number, and the finish from every part of the JSON)."""
    grammar = action_grammar(tok, task)
    close, comma = grammar.lltok.tokenize_str("</")[0], grammar.lltok.tokenize_str(",")[0]
    rng = np.random.default_rng(seed)
    state = grammar.start(budget)
    while (allowed := state.advance()) is not None:
        if allowed[close] and rng.random() < end_thought:
            state.sample(close)
        elif allowed[comma] and rng.random() < more_keys:
            state.sample(comma)
        else:
            state.sample(int(rng.choice(np.flatnonzero(allowed))))
    answer = torch.tensor(state.tokens)
    check_answer(tok, task, answer, torch.tensor(state.forced), budget)
    positions, masks, forced = replay(grammar, state.tokens, budget)
    assert forced == state.forced and positions == [i for i, f in enumerate(forced) if not f]
    assert all(m[state.tokens[p]] for p, m in zip(positions, masks))


@settings(max_examples=60, deadline=None, suppress_health_check=QUICK)
@given(v_min=st.one_of(st.none(), st.integers(-5000, 10000)), v_max=st.integers(-5000, 12000),
       quoted=st.integers(-5000, 10000))
def test_v_max_is_bounded_below_by_the_v_min_written(tok, v_min, v_max, quoted):
    """In thousandths; without v_min, v_max may not go below v_min's default. A v_min quoted in the
    thought bounds nothing. Numbers are written without trailing zeros: llguidance 1.9.1 refuses
    "-0.250" (not "-0.25") in a range that spans 0, a spelling it never lets the model start either.
    It also refuses a v_max whose decimals are a shorter prefix of a negative floor's ("-0.6" or "-1.2"
    above -0.601 or -1.201; "-1" is taken): found by this test on 2026-11-27, and the only gap in 2,587
    edge cases checked. A value the MPC would take is refused, never one it would not."""
    grammar = action_grammar(tok, "car")

    def num(thousandths: int) -> str:
        return f"{thousandths / 1000:.3f}".rstrip("0").rstrip(".")

    head = f'<think>"v_min": {num(quoted)}, so</think>\n{{'
    if v_min is not None:
        head += f'"v_min": {num(v_min)}, '
    state = grammar.start(None)
    for t in grammar.lltok.tokenize_str(head + '"v_max": '):
        state.sample(t)
    floor = DEFAULT.v_min * 1000 if v_min is None else v_min
    try:
        for t in grammar.lltok.tokenize_str(num(v_max) + "}"):
            state.sample(t)
        state.advance()
        accepted = state.done
    except ValueError:
        accepted = False
    written = num(v_max)
    llguidance_gap = floor < 0 and "." in written and num(floor).startswith(written) and written != num(floor)
    assert accepted == (v_max >= floor and not llguidance_gap)


@pytest.mark.parametrize("task", TASKS)
def test_a_budget_of_one_token_gives_the_neutral_answer_without_the_model(model, tok, task):
    grammar = action_grammar(tok, task)
    decoded = constrained_generate(model, tok, encode(model, tok, task), task, n=2, temperature=1.5, max_new_tokens=1)
    for answer, forced in zip(decoded.answers, decoded.forced):
        check_answer(tok, task, answer, forced, 1)
        assert len(answer) == grammar.shortest and bool(forced.all())  # nothing was sampled
        parsed = PARSERS[task](tok.decode(answer, skip_special_tokens=True))
        assert parsed.action == (DEFAULT.as_dict() if task == "car" else {"decision": FACTORY_FALLBACK})
    assert decoded.passes == 0  # the model is not asked for anything after the prompt


def direct_logprobs(model, tok, enc, task: str, answer: torch.Tensor, forced: torch.Tensor,
                    temperature: float = 1.0) -> torch.Tensor:
    """One full forward pass over prompt + answer, each sampled token's log-softmax (of logits / temperature)
    over the tokens a plain llguidance matcher of the answer's grammar allows there; 0 where the sampler says
    it forced."""
    import llguidance

    text = tok.decode(answer, skip_special_tokens=True)
    grammar = action_grammar(tok, task)
    matcher = llguidance.LLMatcher(grammar.lltok, llguidance.LLMatcher.grammar_from_lark(
        answer_lark(task, written_bounds(task, text))))
    full = torch.cat([enc["input_ids"][0], answer]).unsqueeze(0)
    logits = model(input_ids=full, attention_mask=torch.ones_like(full), pixel_values=enc["pixel_values"]).logits[0]
    p = enc["input_ids"].shape[1]
    out = []
    for i, t in enumerate(answer.tolist()):
        bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), np.uint8), bitorder="little")[: len(tok)]
        allowed = torch.from_numpy(bits.astype(bool))
        assert allowed[t]
        if forced[i]:
            out.append(torch.tensor(0.0))
        else:
            out.append(torch.log_softmax((logits[p - 1 + i].float() / temperature).masked_fill(~allowed, float("-inf")),
                                         -1)[t])
        assert matcher.consume_token(t)
    return torch.stack(out)


@pytest.mark.parametrize("task,temperature", [(task, 1.0) for task in TASKS] + [("car", 1.5)])
def test_constrained_logprobs_equal_a_direct_computation(model, tok, task, temperature):
    """Scored at the temperature they were sampled at: the sampler's own distribution."""
    enc = encode(model, tok, task, seed=3)
    budget = 40
    decoded = constrained_generate(model, tok, enc, task, n=3, temperature=temperature, max_new_tokens=budget,
                                   generator=torch.Generator().manual_seed(5))
    answers = list(decoded.answers)
    scores, _ = score_constrained(model, enc, answers, action_grammar(tok, task), budget, temperature=temperature)
    with torch.no_grad():
        for answer, forced, lp in zip(answers, decoded.forced, scores):
            assert torch.all(lp[forced] == 0) and torch.all(lp[~forced] < 0)  # forced: probability 1
            assert torch.allclose(lp.detach(), direct_logprobs(model, tok, enc, task, answer, forced, temperature),
                                  atol=1e-4)
    sum(s.sum() for s in scores).backward()  # sampled tokens carry the gradient
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="not decoded under"):  # an unconstrained answer is refused
        score_constrained(model, enc, [torch.tensor(tok("<think>x</think> {}")["input_ids"] + [tok.eos_token_id])],
                          action_grammar(tok, task), budget)


def test_greedy_jump_forward_matches_step_by_step_decoding(model, tok):
    """Forced tokens fed in one pass with the sampled token before them give the same logits as a full
    pass: each greedy token is the argmax over the allowed tokens of a plain forward over the prefix."""
    task, budget = "car", 64
    enc = encode(model, tok, task, seed=1)
    one = constrained_generate(model, tok, enc, task, max_new_tokens=budget)
    three = constrained_generate(model, tok, enc, task, n=3, max_new_tokens=budget)
    assert all(torch.equal(a, one.answers[0]) for a in three.answers)
    answer = one.answers[0]
    assert 0 < one.passes <= one.sampled_tokens + 1 and one.forced_tokens > 0
    positions, masks, _ = replay(action_grammar(tok, task), answer.tolist(), budget)
    full = torch.cat([enc["input_ids"][0], answer]).unsqueeze(0)
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=torch.ones_like(full), pixel_values=enc["pixel_values"]).logits[0]
    p = enc["input_ids"].shape[1]
    for i, allowed in zip(positions, masks):
        assert int(logits[p - 1 + i].masked_fill(~torch.from_numpy(allowed), float("-inf")).argmax()) == int(answer[i])


def test_a_ragged_group_sees_the_logits_of_its_own_prefix(model, tok):
    """Sampled answers of one group carry different numbers of forced tokens, left-padded in each pass;
    every logit row the sampler read equals a plain forward pass over that answer's prefix."""
    task = "car"
    enc = encode(model, tok, task, seed=2)
    seen = []

    def record(module, args, kwargs, output):
        if kwargs.get("position_ids") is not None:
            seen.append((kwargs["input_ids"], kwargs["attention_mask"][:, -kwargs["input_ids"].shape[1]:],
                         kwargs["position_ids"], output.logits[:, -1].detach()))

    hook = model.register_forward_hook(record, with_kwargs=True)
    try:
        # 80 tokens: every thought reaches its 200 characters, each at its own step, and the
        # group's forced `</think>` runs make the passes ragged
        decoded = constrained_generate(model, tok, enc, task, n=3, temperature=1.5, max_new_tokens=80,
                                       generator=torch.Generator().manual_seed(11))
    finally:
        hook.remove()
    p = enc["input_ids"].shape[1]
    with torch.no_grad():
        reference = []
        for a in decoded.answers:
            full = torch.cat([enc["input_ids"][0], a]).unsqueeze(0)
            reference.append(model(input_ids=full, attention_mask=torch.ones_like(full),
                                   pixel_values=enc["pixel_values"]).logits[0])
    padded = 0
    for ids, real, positions, last in seen:
        for r in range(ids.shape[0]):
            chunk = ids[r][real[r].bool()].tolist()
            if not chunk:
                continue
            padded += len(chunk) < ids.shape[1]
            t = int(positions[r, -1]) - p  # answer index of the last token fed
            matches = [ref for a, ref in zip(decoded.answers, reference) if a[t - len(chunk) + 1: t + 1].tolist() == chunk]
            assert any(torch.allclose(last[r], ref[p + t], atol=1e-4) for ref in matches)
    assert padded > 0  # the group really was ragged


def test_precision_is_checked_and_auto_means_native_bfloat16():
    from agents.vlm.model import native_bf16

    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match="precision='float16'"):
        GenerationConfig(precision="float16")
    assert GenerationConfig(precision="bfloat16").dtype(cpu) == torch.bfloat16
    assert GenerationConfig(precision="float32").dtype(cpu) == torch.float32
    assert GenerationConfig().dtype(cpu) == (torch.bfloat16 if native_bf16(cpu) else torch.float32)


def test_generation_config_chooses_the_decoder(model, tok):
    assert GenerationConfig().constrained
    obs = Observation(0.0, {"speed": 1.0}, image=np.zeros((32, 32, 3), np.uint8), instruction="Go slower.")
    free = VLMAgent(model, tok, "car", "test", vision=VISION,
                    generation=GenerationConfig(max_new_tokens=12, constrained=False))
    decision = free.decide(obs)
    assert MPCParams(**decision.action)  # the parser still makes any text a valid action
    assert "<think>" not in decision.raw_output  # random weights, no grammar: nothing like an answer
    held = VLMAgent(model, tok, "car", "test", vision=VISION, generation=GenerationConfig(max_new_tokens=40))
    assert held.decide(obs).parse_status == "ok"


@settings(max_examples=40, deadline=None, suppress_health_check=QUICK)
@given(values=st.lists(st.floats(0.0, 1.0), min_size=len(SPECS), max_size=len(SPECS)),
       keep=st.lists(st.booleans(), min_size=len(SPECS), max_size=len(SPECS)),
       thought=st.sampled_from(["Centerline: qn 0, margin 0.71 m, slower.", "Target 2.5 m/s.", "Reverse near -1 m/s."]),
       decimals=st.sampled_from([0, 2, 3]))
def test_encode_answer_writes_any_answer_the_grammar_allows_as_the_sampler_would(tok, values, keep, thought, decimals):
    """An answer the model did not sample (an exploration answer) is tokenized so that replay accepts it and its
    text comes back unchanged; a number outside its range is refused with a ValueError, not a broken answer."""
    from agents.training.sft_data import answer, compact
    from agents.vlm.constrained import encode_answer

    grammar = action_grammar(tok, "car")
    action = {}
    for (name, spec), u, k in zip(SPECS.items(), values, keep):
        if k:  # rounded, then back inside the range if rounding left it
            action[name] = min(max(compact(spec.low + u * (spec.high - spec.low), decimals), spec.low), spec.high)
    if action.get("v_max", 12) < action.get("v_min", DEFAULT.v_min):  # the MPC needs v_min <= v_max
        action["v_max"] = action.get("v_min", DEFAULT.v_min)
    action = action or {"qv": 10}
    text = answer(thought, action)
    ids = encode_answer(grammar, text, 160)
    positions, _, forced = replay(grammar, ids, 160)
    assert ids[-1] == grammar.eos and tok.decode(ids, skip_special_tokens=True) == text
    assert len(positions) + sum(forced) == len(ids)  # each token either sampled or forced, as in decoding
    with pytest.raises(ValueError, match="cannot write"):
        encode_answer(grammar, answer(thought, {"qn": 160}), 160)


def _thought_state(tok, text: str, calculator: bool = True, budget: int | None = None):
    grammar = action_grammar(tok, "car", calculator)
    state = grammar.start(budget)
    state.push(grammar.lltok.tokenize_str(text), forced=False)
    return grammar, state


def test_the_calculator_writes_the_speed_the_thought_converts_as_forced_tokens(tok):
    grammar, state = _thought_state(tok, "<think>ten point zero seven mph is")
    before = len(state.tokens)
    assert state.advance() is not None  # the model samples again after the converted speed
    assert state.text.decode() == "<think>ten point zero seven mph is 4.5 m/s" and all(state.forced[before:])
    _, plain = _thought_state(tok, "<think>ten point zero seven mph is", calculator=False)
    plain.advance()
    assert plain.text.decode() == "<think>ten point zero seven mph is"  # without it the model writes the number
    for text in ("<think>This is", "<think>Target 2 m/s, that is"):  # no speed right before "is": nothing added
        _, other = _thought_state(tok, text)
        other.advance()
        assert other.text.decode() == text
    # Where the converted speed does not fit (the thought's length limit, the budget), the model goes on alone.
    long = "<think>" + "x" * (THOUGHT_CHARS - 12) + " 3 m/s is"  # 197 characters: " 3 m/s" would pass 200
    _, full = _thought_state(tok, long)
    full.advance()
    assert full.text.decode() == long
    grammar = action_grammar(tok, "car")
    _, tight = _thought_state(tok, "<think>12.6 km/h is", budget=len(grammar.lltok.tokenize_str("<think>12.6 km/h is")) + 2)
    assert tight.advance() is not None
    assert tight.text.decode() == "<think>12.6 km/h is"


def test_an_answer_with_a_converted_speed_replays_and_one_with_a_wrong_conversion_is_refused(tok):
    from agents.vlm.constrained import encode_answer

    grammar = action_grammar(tok, "car")
    text = '<think>12.6 kilometers per hour is 3.5 m/s. Target 3.5 m/s.</think>\n{"v_min": 3.0, "v_max": 3.52}'
    ids = encode_answer(grammar, text, 128)
    positions, _, forced = replay(grammar, ids, 128)
    assert tok.decode(ids, skip_special_tokens=True) == text
    converted = tok.decode([t for t, f in zip(ids, forced) if f], skip_special_tokens=True)
    assert " 3.5 m/s" in converted  # the conversion is the decoder's, not a sampled token
    with pytest.raises(ValueError, match="departs"):  # the model cannot write 1.6 after "12.6 km/h is"
        encode_answer(grammar, text.replace("is 3.5 m/s", "is 1.6 m/s"), 128)
    assert encode_answer(action_grammar(tok, "car", calculator=False), text.replace("is 3.5", "is 1.6"), 128)


@settings(max_examples=60, deadline=None)
@given(whole=st.integers(0, 40), frac=st.sampled_from(["", "5", "07", "25", "6"]), words=st.booleans(),
       unit=st.sampled_from(["m/s", "km/h", "mph", "kilometers per hour", "miles per hour", "meters per second"]))
def test_the_calculator_gives_the_target_the_instruction_reader_gives(whole, frac, words, unit):
    """The speed after "<written> is" is the target parse_instruction reads from "Drive at <written>." (the SFT
    thought's number), in the SFT thought's format."""
    from agents.tasks.car.instructions import number_words, parse_instruction
    from agents.vlm.grammar import converted_speed

    number = f"{whole}.{frac}" if frac else str(whole)
    written = f"{number_words(number) if words else number} {unit}"
    try:
        target = parse_instruction(f"Drive at {written}.").target_speed
    except ConfigError:  # a speed the car cannot hold: still converted, as the thought wrote it
        target = None
    got = converted_speed("car", f"<think>{written} is")
    assert got is not None and got.endswith(" m/s")
    if target is not None:
        assert got == f" {target:g} m/s"
    assert converted_speed("factory", f"<think>{written} is") is None


@settings(max_examples=200, deadline=None)
@given(half_width=st.integers(0, 300), inset=st.integers(0, 150), prefix=st.sampled_from(["", "Centerline on "]))
def test_the_calculator_subtracts_the_inset_exactly_and_keeps_the_margin_in_its_range(half_width, inset, prefix):
    """'half width H less I is' completes with H - I, exact to the centimetre (no binary rounding), clipped into
    the margin's range; nothing else in a thought, and nothing in the factory's, is a subtraction."""
    from agents.vlm.grammar import calculated, subtracted_margin

    hw, off = f"{half_width / 100:.2f}", f"{inset / 100:g}"
    got = subtracted_margin("car", f"<think>{prefix}half width {hw} less {off} is")
    spec = SPECS["track_safety_margin"]
    assert got == f" {min(max(half_width - inset, 100 * spec.low), 100 * spec.high) / 100:g}"
    assert calculated("car", f"<think>{prefix}half width {hw} less {off} is") == got
    assert subtracted_margin("factory", f"<think>half width {hw} less {off} is") is None
    assert subtracted_margin("car", f"<think>half width {hw} less {off} is 0.5") is None  # already written
    assert subtracted_margin("car", f"<think>margin {hw} less {off} is") is None


def test_an_answer_with_a_subtracted_margin_replays_and_one_with_a_wrong_difference_is_refused(tok):
    from agents.vlm.constrained import encode_answer

    grammar = action_grammar(tok, "car")
    text = ('<think>Centerline on half width 0.95 less 0.17 is 0.78: qn 0, margin 0.78 m, slower.</think>\n'
            '{"qn": 0, "qalpha": 10, "v_max": 3, "track_safety_margin": 0.78}')
    ids = encode_answer(grammar, text, 128)
    _, _, forced = replay(grammar, ids, 128)
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert " 0.78" in tok.decode([t for t, f in zip(ids, forced) if f], skip_special_tokens=True)
    with pytest.raises(ValueError, match="departs"):  # 0.95 less 0.17 is 0.78, never 0.72
        encode_answer(grammar, text.replace("is 0.78", "is 0.72"), 128)


def test_constrained_logprobs_of_an_answer_with_a_converted_speed_equal_a_direct_computation(model, tok):
    from agents.vlm.constrained import encode_answer

    enc = encode(model, tok, "car", instruction="Drive at 12.6 km/h.", seed=4)
    grammar = action_grammar(tok, "car")
    text = '<think>12.6 km/h is 3.5 m/s. Target 3.5 m/s.</think>\n{"v_min": 3.0, "v_max": 3.52}'
    answer = torch.tensor(encode_answer(grammar, text, 64))
    _, _, forced = replay(grammar, answer.tolist(), 64)
    forced = torch.tensor(forced)
    (lp,), _ = score_constrained(model, enc, [answer], grammar, 64, temperature=1.0)
    with torch.no_grad():
        assert torch.all(lp[forced] == 0)
        assert torch.allclose(lp.detach(), direct_logprobs(model, tok, enc, "car", answer, forced, 1.0), atol=1e-4)
