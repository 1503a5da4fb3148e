"""Training the VLM agent: SFT end to end in a tiny configuration, resume, adapters, log-probs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.evaluation.evaluate import EvalConfig, evaluate_factory, vlm_policies
from agents.training.run import resume_optimizer
from agents.training.sft import SFTArgs, train_sft
from agents.training.sft_data import car_examples, factory_examples
from agents.vlm.logprobs import action_mask, answer_logprobs, decision_logprob, token_char_spans
from agents.vlm.lora import latest_complete, load_adapter, read_manifest
from agents.vlm.model import GenerationConfig, VisionConfig, VLMAgent, build_vlm
from agents.vlm.parsing import parse_car
from twin.core.config import ConfigError
from twin.core.progress import LogProgress, Progress


def test_expert_examples_parse_back_to_the_expert_action():
    for ex in car_examples(12, seed=0):
        p = parse_car(ex.target)
        assert p.status == "ok" and p.thought
    for ex in factory_examples(6, seed=0):
        decision = json.loads(ex.target.split("\n")[-1])["decision"]
        assert decision == ("reject" if ex.observation.privileged["defective"] else "accept")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    args = SFTArgs(task="car", examples=6, steps=2, batch_size=1, checkpoint_every=1, out=out, lr=1e-3)
    progress = RecordingProgress()
    adapter = train_sft(args, progress)
    return args, adapter, progress


class RecordingProgress:
    """A Progress callback that keeps what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, description: str, total: int, completed: int = 0) -> None:
        self.events.append(("start", description, total, completed))

    def advance(self, steps: int = 1, note: str = "") -> None:
        self.events.append(("advance", steps, note))

    def set_completed(self, completed: int, note: str = "") -> None:
        self.events.append(("set", completed, note))

    def finish(self) -> None:
        self.events.append(("finish",))


def test_the_trainer_reports_progress_to_the_callback_it_is_given(trained):
    *_, progress = trained
    assert isinstance(progress, Progress)
    kinds = [e[0] for e in progress.events]
    assert progress.events[0] == ("start", "SFT car", 2, 0) and kinds[-1] == "finish"
    advances = [e for e in progress.events if e[0] == "advance"]
    assert len(advances) == 2 and all(e[2].startswith("loss ") for e in advances)


def test_log_progress_prints_rate_and_eta():
    import io

    stream = io.StringIO()
    shown = LogProgress(every_s=0.0, stream=stream)
    shown.start("GRPO car", total=4, completed=1)
    shown.advance(note="reward +0.10")
    line = stream.getvalue().strip()
    assert line.startswith("GRPO car 2/4 (") and "/s, ETA " in line and line.endswith("reward +0.10")


def test_sft_runs_and_saves_a_manifested_adapter(trained):
    args, adapter, _ = trained
    manifest = read_manifest(adapter)
    assert manifest["prompt_version"] == "car-v2" and manifest["recipe"]["stage"] == "sft"
    assert manifest["step"] == 2 and len(manifest["adapter_hash"]) == 16
    curve = json.loads((args.out / "curve.json").read_text())
    assert [c["step"] for c in curve] == [1, 2] and all(c["loss"] > 0 for c in curve)


def test_resume_keeps_adams_moments_and_takes_the_new_learning_rate():
    """A run resumed with another --lr uses it (torch's load_state_dict alone would bring back the old one)."""
    weight = torch.nn.Parameter(torch.ones(3))
    before = torch.optim.AdamW([weight], lr=2e-5)
    weight.sum().backward()
    before.step()
    state = {"optimizer": before.state_dict()}
    after = torch.optim.AdamW([weight], lr=5e-5)
    resume_optimizer(after, state, 5e-5)
    assert after.param_groups[0]["lr"] == 5e-5
    assert torch.equal(after.state[weight]["exp_avg"], before.state[weight]["exp_avg"])


def test_resume_continues_from_the_checkpoint(trained):
    args, _, _ = trained
    before = json.loads((args.out / "curve.json").read_text())
    train_sft(SFTArgs(**{**args.__dict__, "steps": 3, "resume": True}))
    after = json.loads((args.out / "curve.json").read_text())
    assert [c["step"] for c in after] == [1, 2, 3]
    assert after[:2] == before  # the first two steps were not redone


def test_adapter_reload_reproduces_outputs_exactly_and_refuses_another_base(trained):
    _, adapter, _ = trained
    base, tok, base_hash = build_vlm(seed=0)
    model = load_adapter(base, base_hash, adapter)
    ex = car_examples(1, seed=5)[0]
    agent = VLMAgent(model, tok, "car", base_hash, generation=GenerationConfig(max_new_tokens=12))
    enc = agent.encode(ex.observation)
    with torch.no_grad():
        logits_a = model(**enc).logits
    base2, _, _ = build_vlm(seed=0)
    model2 = load_adapter(base2, base_hash, adapter)
    with torch.no_grad():
        logits_b = model2(**enc).logits
    assert torch.equal(logits_a, logits_b)
    assert agent.decide(ex.observation).raw_output == VLMAgent(model2, tok, "car", base_hash,
                                                               generation=GenerationConfig(max_new_tokens=12)
                                                               ).decide(ex.observation).raw_output
    base3, _, _ = build_vlm(seed=0)
    with pytest.raises(ConfigError, match="trained on base model"):
        load_adapter(base3, "0" * 16, adapter)


def test_group_logprobs_share_the_prompt_and_match_separate_passes():
    """The prompt's cache is shared by the group: same numbers as one full pass per answer."""
    from agents.vlm.logprobs import group_logprobs

    model, tok, base_hash = build_vlm(seed=0)
    agent = VLMAgent(model, tok, "car", base_hash)
    enc = agent.encode(car_examples(1, seed=4)[0].observation)
    answers = [torch.tensor(tok(t, add_special_tokens=False)["input_ids"])
               for t in ("<think>x</think> {}", '<think>slow down</think>\n{"v_max": 1.5}', "a")]
    with torch.no_grad():
        grouped = group_logprobs(model, enc, answers)
        for a, g in zip(answers, grouped):
            full = torch.cat([enc["input_ids"][0], a]).unsqueeze(0)
            logits = model(input_ids=full, attention_mask=torch.ones_like(full),
                           pixel_values=enc["pixel_values"]).logits[0].float()
            p = enc["input_ids"].shape[1]
            direct = torch.log_softmax(logits[p - 1 : p - 1 + len(a)], -1).gather(1, a.view(-1, 1)).squeeze(1)
            assert g.shape == (len(a),) and torch.allclose(g, direct, atol=1e-4)


def test_group_sampling_with_a_shared_prompt_cache_matches_plain_decoding():
    from agents.training.run import sample_answers

    model, tok, base_hash = build_vlm(seed=0)
    agent = VLMAgent(model, tok, "factory", base_hash, generation=GenerationConfig(max_new_tokens=10))
    observations = [example.observation for example in factory_examples(2, seed=1)]
    greedy = [agent.generate(obs) for obs in observations]
    torch.manual_seed(0)
    # a near-zero temperature samples the greedy answer, so both paths must agree token for token
    groups = sample_answers(agent, [agent.encode(obs) for obs in observations], 3, temperature=1e-4, max_new_tokens=10)
    assert [[tok.decode(a, skip_special_tokens=True) for a in group] for group in groups] == [[g] * 3 for g in greedy]


def test_cot_and_action_logprob_split_matches_a_direct_computation():
    model, tok, base_hash = build_vlm(seed=0)
    agent = VLMAgent(model, tok, "car", base_hash, vision=VisionConfig())
    ex = car_examples(1, seed=2)[0]
    enc = agent.encode(ex.observation)
    ids = tok(ex.target, add_special_tokens=False)["input_ids"]
    answer = torch.tensor(ids)
    with torch.no_grad():
        per_token = answer_logprobs(model, enc, answer)
        full = torch.cat([enc["input_ids"][0], answer]).unsqueeze(0)
        logits = model(input_ids=full, attention_mask=torch.ones_like(full), pixel_values=enc["pixel_values"]).logits
        direct = torch.log_softmax(logits[0].float(), -1)
        p = enc["input_ids"].shape[1]
        expected = torch.stack([direct[p - 1 + i, t] for i, t in enumerate(ids)])
    assert torch.allclose(per_token, expected, atol=1e-5)
    parsed = parse_car(ex.target)
    spans = token_char_spans(tok, ids)
    mask = action_mask(spans, parsed.action_span)
    text = tok.decode(ids)
    first_action = int(mask.argmax())
    assert text[spans[first_action][0]:].lstrip().startswith("{")  # the split is at the JSON, by offsets
    assert "</think>" in text[:spans[first_action][0] + 1]
    lam = 0.3
    value = decision_logprob(per_token, mask, lam)
    assert value == pytest.approx(lam * float(per_token[mask == 0].sum()) + float(per_token[mask == 1].sum()),
                                  rel=1e-5)


@settings(max_examples=50, deadline=None)
@given(rewards=st.lists(st.floats(-2, 3), min_size=2, max_size=16), gap=st.floats(0.01, 2))
def test_centred_advantages_keep_the_reward_gaps_and_scaled_ones_erase_them(rewards, gap):
    from agents.training.grpo import group_advantages

    r = torch.tensor(rewards, dtype=torch.float64)
    centred = group_advantages(r, scale_by_std=False)
    assert abs(float(centred.sum())) < 1e-9 and torch.allclose(centred[:, None] - centred, r[:, None] - r)
    # two answers `gap` apart: centred they are +-gap/2 whatever the gap; divided by the spread, always ~+-0.7
    pair = torch.tensor([0.0, gap], dtype=torch.float64)
    assert torch.allclose(group_advantages(pair, False), torch.tensor([-gap / 2, gap / 2], dtype=torch.float64))
    assert float(group_advantages(pair, True)[1]) == pytest.approx(0.7071, rel=0.1)


def test_grpo_step_end_to_end_and_resume(trained, tmp_path):
    from agents.training.grpo import GRPOArgs, reward_terms, train_grpo

    _, sft_adapter, _ = trained
    args = GRPOArgs(adapter=str(sft_adapter), steps=1, prompts_per_step=1, group=2, max_new_tokens=8,
                    duration_s=0.5, out=tmp_path, checkpoint_every=1, audit=True)
    adapter = train_grpo(args)
    log = json.loads((tmp_path / "curve.json").read_text())
    assert len(log) == 1 and {"reward_driving", "reward_format", "kl", "lambda", "cost"} <= set(log[0])
    assert read_manifest(adapter)["recipe"]["parent"]["stage"] == "sft"
    train_grpo(GRPOArgs(**{**args.__dict__, "steps": 2, "resume": True}))
    log2 = json.loads((tmp_path / "curve.json").read_text())
    assert [e["step"] for e in log2] == [1, 2] and log2[0] == log[0]
    assert {"seconds_sample", "seconds_drive", "seconds_update"} <= set(log2[-1])
    # every sampled answer is on the record, and the record verifies across the resume
    from safety.audit.keys import load_public
    from safety.audit.search import Query, search
    from safety.audit.verify import verify
    assert verify(tmp_path / "audit.log", load_public(tmp_path / "audit-key.pub")).ok
    assert len(list(search(tmp_path / "audit.log", Query()))) == 4  # 2 steps x 1 prompt x 2 answers
    # RobotxR1's reward terms on hand-written answers
    good = reward_terms('<think>slow</think>\\n{"v_max": 1.0, "qv": 50}', 0.5)
    assert good == {"driving": 0.5, "format": 0.25, "extraction": 0.25, "names": 0.25}
    bad = reward_terms('no idea {"warp": 1, "v_max": 2}', -1.0)
    assert bad["format"] == 0 and bad["names"] == 0.125 and bad["extraction"] == 0.25


def test_grpo_with_exploration_answers_and_chosen_categories(trained, tmp_path):
    """--explore replaces answers of each group by moved copies (on the record as explored), scored under the
    grammar like sampled ones; --categories draws only those instructions; bad settings are refused."""
    from agents.training.grpo import GRPOArgs, train_grpo
    from safety.audit.search import Query, search

    with pytest.raises(ConfigError, match="must be below group"):
        GRPOArgs(group=2, explore=2)
    with pytest.raises(ConfigError, match="unknown"):
        GRPOArgs(categories=("drift",))
    args = GRPOArgs(adapter=str(trained[1]), steps=1, prompts_per_step=2, group=3, explore=1, max_new_tokens=40,
                    categories=("centerline",), duration_s=0.5, out=tmp_path, audit=True)
    train_grpo(args)
    log = json.loads((tmp_path / "curve.json").read_text())
    entries = [e["body"] for e in search(tmp_path / "audit.log", Query())]
    assert len(entries) == 6 and all("centerline" == e["context"]["category"] for e in entries)
    # one per group, unless the sampled answer used the whole budget: its moved copy may not fit, and it stays
    explored = [e for e in entries if e["context"]["explored"]]
    assert log[0]["explored"] == len(explored) >= 1 and all(e["parse_status"] == "ok" for e in explored)


def test_grpo_over_many_track_widths_drives_each_answer_on_a_drawn_width(trained, tmp_path):
    """--track-widths: every answer is driven on a training track rebuilt at a width from the range, and the audit
    log names it; a bad range, or widths for the factory, are refused before anything runs."""
    from agents.training.grpo import GRPOArgs, train_grpo
    from safety.audit.search import Query, search

    with pytest.raises(ConfigError, match="two numbers"):
        GRPOArgs(track_widths=(1.6,))
    with pytest.raises(ConfigError, match="widens the car's tracks"):
        SFTArgs(task="factory", track_widths=(1.6, 2.4))
    train_grpo(GRPOArgs(adapter=str(trained[1]), steps=1, prompts_per_step=3, group=2, max_new_tokens=24,
                        track_widths=(1.6, 2.4), duration_s=0.5, out=tmp_path, audit=True))
    tracks = [e["body"]["context"]["track"] for e in search(tmp_path / "audit.log", Query())]
    assert len(tracks) == 6
    for name in tracks:
        base, width = name.split("@")
        assert base in ("oval", "kidney", "chicane") and 1.6 <= float(width) <= 2.4


def test_elites_are_the_explored_answers_that_beat_every_sampled_one_by_the_margin():
    from agents.training.grpo import elites

    # sampled answers 0 and 3 (best 0.2); explored 1 (0.5) is an elite, explored 2 (0.22) is not 0.05 above
    assert elites([0.1, 0.5, 0.22, 0.2], explored=[1, 2], margin=0.05) == [1]
    assert elites([0.1, 0.5, 0.22, 0.2], explored=[1, 2], margin=0.0) == [1, 2]
    assert elites([0.9, 0.5], explored=[1], margin=0.0) == []  # worse than the sampled answer
    assert elites([0.5, 0.6], explored=[0, 1], margin=0.0) == []  # nothing sampled to beat


def test_expert_iteration_replays_an_elite_and_makes_it_more_likely(trained, tmp_path):
    """--imitate: the replayed elites' -log p, scored under the grammar as group answers are, falls when the
    policy follows its gradient; a run logs what it found and kept; imitation without exploration is refused."""
    from agents.training.grpo import GRPOArgs, imitation_loss, train_grpo
    from agents.training.run import sample_answers
    from agents.vlm.constrained import action_grammar
    from agents.vlm.loading import agent_from_adapter
    from agents.vlm.speculative import SharedHead

    with pytest.raises(ConfigError, match="needs explore"):
        GRPOArgs(imitate=1.0)
    args = GRPOArgs(explore=1, group=2, imitate=1.0, imitate_batch=2, max_new_tokens=40, bf16=False)
    agent = agent_from_adapter(trained[1], "car", trainable=True)
    enc = agent.encode(car_examples(1, seed=3)[0].observation)
    answer = sample_answers(agent, [enc], 1, 1.0, args.max_new_tokens)[0][0]
    grammar = action_grammar(agent.tokenizer, "car")
    buffer = [(enc, answer)]
    params = [q for q in agent.model.parameters() if q.requires_grad]
    before = imitation_loss(agent.model, buffer, args, grammar, SharedHead(agent.model, None), np.random.default_rng(0))
    before.backward()
    with torch.no_grad():
        for q in params:
            if q.grad is not None:
                q -= 1e-3 * q.grad.sign()
    after = imitation_loss(agent.model, buffer, args, grammar, SharedHead(agent.model, None), np.random.default_rng(0))
    assert float(before.detach()) > 0 and float(after.detach()) < float(before.detach())
    # a run with imitation on: two steps, the buffer holds what was found (up to its size)
    run = GRPOArgs(adapter=str(trained[1]), steps=2, prompts_per_step=2, group=3, explore=1, imitate=1.0,
                   imitate_margin=0.0, imitate_buffer=3, max_new_tokens=40, categories=("centerline",),
                   duration_s=0.5, out=tmp_path)
    train_grpo(run)
    log = json.loads((tmp_path / "curve.json").read_text())
    found = np.cumsum([e["elites_found"] for e in log])
    assert [e["elites_kept"] for e in log] == [min(int(f), 3) for f in found]
    assert all((e["imitation_nll"] > 0) == (e["elites_kept"] > 0) for e in log)


def test_a_grpo_group_whose_answers_all_score_the_same_is_not_scored_and_moves_nothing(trained, tmp_path):
    """Near-greedy sampling gives one answer twice: equal rewards, zero advantages, so the group is skipped
    (logged) and the step leaves the weights as they were."""
    from safetensors.torch import load_file

    from agents.training.grpo import GRPOArgs, train_grpo

    args = GRPOArgs(adapter=str(trained[1]), steps=1, prompts_per_step=1, group=2, max_new_tokens=8, temperature=0.05,
                    duration_s=0.5, out=tmp_path)
    adapter = train_grpo(args)
    log = json.loads((tmp_path / "curve.json").read_text())
    assert log[0]["groups_without_signal"] == 1 and log[0]["loss"] == 0.0
    before, after = (load_file(Path(d) / "adapter_model.safetensors") for d in (trained[1], adapter))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_wall_time_budget_stops_a_run_with_its_adapter_saved(trained, tmp_path):
    from agents.training.grpo import GRPOArgs, train_grpo

    args = GRPOArgs(adapter=str(trained[1]), steps=50, prompts_per_step=1, group=2, max_new_tokens=4,
                    duration_s=0.5, out=tmp_path, max_minutes=1e-6)
    adapter = train_grpo(args)
    assert read_manifest(adapter)["step"] <= 1  # the budget, not the 50 steps, ended it


def test_loaded_agent_keeps_its_prompt_vision_and_label_and_merging_keeps_outputs(trained):
    from agents.vlm.loading import agent_from_adapter

    _, adapter, _ = trained
    ex = car_examples(1, seed=7)[0]
    plain = agent_from_adapter(adapter, "car", GenerationConfig(max_new_tokens=6))
    merged = agent_from_adapter(adapter, "car", GenerationConfig(max_new_tokens=6, precision="float32"), merge=True)
    manifest = read_manifest(adapter)
    assert plain.prompt_version == manifest["prompt_version"] and plain.vision == VisionConfig(**manifest["vision"])
    assert plain.label.startswith("SFT (")
    enc = plain.encode(ex.observation)
    with torch.no_grad():
        a, b = plain.model(**enc).logits, merged.model(**enc).logits
    assert torch.allclose(a, b, atol=1e-3)  # folding LoRA into the weights changes rounding only
    half = agent_from_adapter(adapter, "car", GenerationConfig(max_new_tokens=6, precision="bfloat16"), merge=True)
    assert half.model.dtype == torch.bfloat16 and plain.model.dtype == torch.float32  # training keeps float32
    assert half.policy_id == merged.policy_id + ":bfloat16" and merged.policy_id == plain.policy_id
    with torch.no_grad():
        c = half.model(**half.encode(ex.observation)).logits.float()
    assert (c - a).abs().max() < 0.1 * a.abs().max()  # bfloat16 rounds (~3 significant digits), no more
    assert half.decide(ex.observation).parse_status == "ok"  # the grammar holds in any precision
    with pytest.raises(ConfigError, match="trained for the 'car' task"):
        agent_from_adapter(adapter, "factory")


@pytest.fixture(scope="module")
def factory_sft(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft-factory")
    return train_sft(SFTArgs(task="factory", examples=4, steps=1, batch_size=2, out=out))


def test_ppo_iteration_end_to_end_and_resume(factory_sft, trained, tmp_path):
    from agents.training.ppo import PPOArgs, train_ppo

    with pytest.raises(ConfigError, match="trained for the 'car' task"):
        train_ppo(PPOArgs(adapter=str(trained[1]), iterations=1, out=tmp_path / "wrong"))
    with pytest.raises(ConfigError, match="multiple of num_envs"):
        PPOArgs(rollout_steps=6, num_envs=4)
    with pytest.raises(ConfigError, match="reaches the evaluation's seeds"):
        PPOArgs(validate_every=1, validate_seed=995, validate_episodes=8)  # choosing by the check would peek
    args = PPOArgs(adapter=str(factory_sft), iterations=1, rollout_steps=4, num_envs=2, epochs=1, minibatch=2,
                   max_new_tokens=8, parts_per_episode=2, out=tmp_path, checkpoint_every=1, audit=True,
                   validate_every=1, validate_episodes=1)
    train_ppo(args)
    log = json.loads((tmp_path / "curve.json").read_text())
    assert len(log) == 1 and {"reward", "accuracy", "parsed", "clipfrac", "lambda"} <= set(log[0])
    assert {"seconds_sample", "seconds_line", "seconds_update"} <= set(log[0])  # where an iteration's time goes
    train_ppo(PPOArgs(**{**args.__dict__, "iterations": 2, "resume": True}))
    log2 = json.loads((tmp_path / "curve.json").read_text())
    assert [e["iteration"] for e in log2] == [1, 2] and log2[0] == log[0]
    # best/ holds the policy with the most accurate held-out check (iteration 0: the starting adapter), and
    # deciding the check's parts again as the evaluation does reproduces the accuracy it was kept for
    best = read_manifest(tmp_path / "best")
    assert best["iteration"] in (0, 1, 2) and all(best["validation"]["val_correct"] >= e["val_correct"] for e in log2)
    cfg = EvalConfig("factory", adapters=(str(tmp_path / "best"),), zero_shot=False, episodes=1, parts=2,
                     seed=args.validate_seed)
    rows = evaluate_factory(cfg, vlm_policies(cfg))
    assert np.mean([r["correct"] for r in rows]) == best["validation"]["val_correct"]
    from safety.audit.search import Query, search
    lines = [entry["body"]["context"]["line"] for entry in search(tmp_path / "audit.log", Query())]
    assert sorted(lines) == [0, 0, 0, 0, 1, 1, 1, 1]  # 2 iterations x 2 lines x 2 decisions each


def test_a_batch_of_decisions_scores_as_each_alone():
    """score_decisions pads each prompt + answer on the right: every decision's log-probs (plain and under the
    grammar) and its last prompt hidden state equal those of the decision scored alone."""
    from agents.vlm.constrained import action_grammar, constrained_generate
    from agents.vlm.logprobs import score_constrained, score_decisions

    model, tok, base_hash = build_vlm(seed=0)
    agent = VLMAgent(model, tok, "factory", base_hash)
    encs = [agent.encode(ex.observation) for ex in factory_examples(3, seed=4)]
    answers = [constrained_generate(model, tok, enc, "factory", temperature=2.0, max_new_tokens=6 + 3 * k,
                                    generator=torch.Generator().manual_seed(k)).answers[0] for k, enc in enumerate(encs)]
    assert len({len(a) for a in answers}) > 1  # padding is exercised
    grammar = action_grammar(tok, "factory")
    with torch.no_grad():
        plain, hidden = score_decisions(model, encs, answers)
        constrained, _ = score_decisions(model, encs, answers, grammar, 12)
        for k, (enc, a) in enumerate(zip(encs, answers)):
            alone = answer_logprobs(model, enc, a)
            assert torch.allclose(plain[k], alone, atol=1e-4)
            h = model(**enc, output_hidden_states=True).hidden_states[-1][0, -1]
            assert torch.allclose(hidden[k], h, atol=1e-4)
            # budgets differ per answer here, so compare under the budget each was sampled with
            mine = score_decisions(model, [enc], [a], grammar, 6 + 3 * k)[0][0]
            assert torch.allclose(mine, score_constrained(model, enc, [a], grammar, 6 + 3 * k)[0][0], atol=1e-4)
    assert all(len(c) == len(a) for c, a in zip(constrained, answers))


def test_value_head_reads_the_last_prompt_token_and_gae_matches_by_hand():
    from agents.training.ppo import Step, ValueHead, gae, score

    model, tok, base_hash = build_vlm(seed=0)
    agent = VLMAgent(model, tok, "factory", base_hash)
    ex = factory_examples(1, seed=3)[0]
    enc = agent.encode(ex.observation)
    answer = torch.tensor(tok(ex.target, add_special_tokens=False)["input_ids"])
    head = ValueHead(model.config.text_config.hidden_size)
    with torch.no_grad():
        _, value = score(model, head, [enc], [answer], [torch.zeros(len(answer))], 0.5)
        h_prompt = model(**enc, output_hidden_states=True).hidden_states[-1][0, -1]
    assert float(value[0]) == pytest.approx(float(head(h_prompt)), abs=1e-4)  # causal: the answer cannot leak in
    steps = [Step({}, answer, answer, 0.0, v, r, c, d) for v, r, c, d in
             ((0.5, 1.0, 0.0, False), (0.2, 0.0, 1.0, False), (0.1, 2.0, 0.0, True))]
    adv, ret = gae(steps, last_value=9.0, gamma=0.9, lam=0.95, penalty=0.5)
    d2 = 2.0 - 0.1  # terminal: no bootstrap
    d1 = 0.0 - 0.5 + 0.9 * 0.1 - 0.2
    d0 = 1.0 + 0.9 * 0.2 - 0.5
    a1 = d1 + 0.9 * 0.95 * d2
    assert adv.tolist() == pytest.approx([d0 + 0.9 * 0.95 * a1, a1, d2])
    assert ret.tolist() == pytest.approx([adv[0] + 0.5, adv[1] + 0.2, adv[2] + 0.1])


def test_kill_9_mid_training_loses_at_most_the_update_in_flight(tmp_path):
    """A real SIGKILL of a real training process, then --resume."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "agents.training.sft", "--task", "factory", "--examples", "4", "--steps", "500",
           "--batch-size", "1", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def saved_state():
        folder = latest_complete(out / "checkpoint", "trainer.pt")
        try:
            return torch.load(folder / "trainer.pt", weights_only=False) if folder else None
        except (OSError, RuntimeError, EOFError):  # swapped away while we read it
            return None

    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            state = saved_state()
            if state is not None and state["step"] >= 2:
                break
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    saved = saved_state()
    killed_at = saved["step"]
    assert 2 <= killed_at < 500
    train_sft(SFTArgs(task="factory", examples=4, steps=killed_at + 1, batch_size=1, out=out, resume=True))
    curve = json.loads((out / "curve.json").read_text())
    assert [c["step"] for c in curve] == list(range(1, killed_at + 2))
    assert curve[:killed_at] == saved["curve"]  # nothing acknowledged was lost or redone
