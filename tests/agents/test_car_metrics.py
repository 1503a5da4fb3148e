"""The car score without the loopholes of issue 15, the faithfulness reward terms, and the eval table's new columns.

Real short drives on the nominal oval: a crawl at 0.15 m/s and a drive in reverse at -1 m/s
score well under the legacy score on centerline and smooth, and fail under the score.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.evaluation.evaluate import EvalConfig, evaluate_car, summary_table
from agents.policies.car_expert import FixedParamsPolicy, ScriptedCarExpert
from agents.tasks.car.instruction_env import CarInstructionEnv, CarTaskConfig
from agents.tasks.car.instructions import CATEGORIES
from agents.tasks.car.metrics import (
    FAILURE_IMPROVEMENT,
    FAILURES,
    IMPROVEMENT_CLIP,
    MIN_PROGRESS_RATIO,
    PROGRESS_CATEGORIES,
    PROGRESS_WEIGHT,
    TERMS,
    Score,
    drive_evidence,
    legacy_improvement,
    score,
    thought_agreement,
    thought_flags,
)
from agents.tasks.factory.faithfulness import thought_flags as part_thought_flags
from agents.vlm.parsing import parse_car, parse_factory
from twin.car.tracks import load_track
from twin.car.vehicle import VehicleParams
from twin.core.config import ConfigError
from twin.core.contracts import Decision

CRAWL = {"v_min": 0.0, "v_max": 0.15}
"""A crawl at 0.15 m/s: GRPO's answer to a centerline instruction (issue 15)."""
REVERSE = {"v_min": -1.02, "v_max": -0.98, "qv": 60.0}
"""Reverse at -1 m/s, held tightly."""


@pytest.fixture(scope="module")
def drives():
    """Per category: the attempts of the crawl, the reverse drive, the default parameters and the expert."""
    env = CarInstructionEnv(CarTaskConfig(tracks=("oval",), duration_s=3.0, randomization=(), camera=False))
    out = {}
    for cat in CATEGORIES:
        _, info = env.reset(seed=3, options={"category": cat})
        out[cat] = {"crawl": env.evaluate(CRAWL), "reverse": env.evaluate(REVERSE)}
        if cat == "centerline":
            out[cat]["default"] = env.evaluate({})
            out[cat]["expert"] = env.evaluate(ScriptedCarExpert().decide(info["observation"]).action)
            # the expert's tune with the widest margin: wider than the track leaves (see the faithfulness test)
            out[cat]["squeezed"] = env.evaluate(dict(out[cat]["expert"].params.as_dict(), track_safety_margin=1.0))
            out[cat]["evidence"] = {k: drive_evidence(out[cat][k].trace, env.track, out[cat]["default"].trace)
                                    for k in ("expert", "squeezed")}
    env.close()
    return out


@pytest.mark.parametrize("category", PROGRESS_CATEGORIES)
def test_a_crawl_and_a_reverse_drive_fail_where_the_legacy_score_rewarded_them(drives, category):
    crawl, reverse = drives[category]["crawl"], drives[category]["reverse"]
    assert crawl.score.legacy_improvement > 0.5  # the loophole: the legacy score likes the crawl
    assert 0 < crawl.score.progress_ratio < MIN_PROGRESS_RATIO
    assert (crawl.improvement, crawl.score.failure) == (FAILURE_IMPROVEMENT, "crawl")
    assert reverse.metrics["progress"] < 0
    assert (reverse.improvement, reverse.score.failure) == (FAILURE_IMPROVEMENT, "reverse")
    for attempt in (crawl, reverse):
        assert attempt.score.terms == {"error_improvement": 0.0, "progress_penalty": 0.0, "failure": FAILURE_IMPROVEMENT}


def test_smooth_in_reverse_scored_well_under_the_legacy_score(drives):
    assert drives["smooth"]["reverse"].score.legacy_improvement > 0.3


@pytest.mark.parametrize("category", ["velocity", "reverse"])
def test_velocity_and_reverse_scores_are_the_legacy_ones(drives, category):
    for attempt in drives[category].values():
        assert attempt.improvement == attempt.score.legacy_improvement
        assert not attempt.score.failure and attempt.score.terms["progress_penalty"] == 0.0
    assert drives["reverse"]["reverse"].improvement > 0.9  # reversing is what 'reverse' asks for


def test_a_normal_drive_scores_its_error_improvement_less_a_named_progress_penalty(drives):
    default, expert = drives["centerline"]["default"], drives["centerline"]["expert"]
    # the default parameters cover the default's progress exactly (same episode): the legacy score, 0
    assert default.score.progress_ratio == 1.0 and default.improvement == default.score.legacy_improvement == 0.0
    # the expert keeps 3 m/s: a bit short of the racing default's pace, a small named penalty
    ratio = expert.score.progress_ratio
    assert MIN_PROGRESS_RATIO < ratio < 1 and not expert.score.failure
    assert expert.score.terms["error_improvement"] == expert.score.legacy_improvement > 0.5
    assert expert.score.terms["progress_penalty"] == pytest.approx(-PROGRESS_WEIGHT * (1 - ratio))
    assert expert.improvement == pytest.approx(sum(expert.score.terms.values())) and expert.improvement > 0.5


def test_the_env_rewards_the_score_by_term():
    env = CarInstructionEnv(CarTaskConfig(tracks=("oval",), duration_s=1.0, randomization=(), camera=False))
    env.reset(seed=0, options={"category": "centerline"})
    from agents.control.mpc_params import PARAM_TABLE

    action = np.array([CRAWL.get(p.name, p.default) for p in PARAM_TABLE], np.float32)
    _, reward, *_, info = env.step(action)
    env.close()
    assert set(info["reward_terms"]) == set(TERMS) and reward == sum(info["reward_terms"].values())
    assert info["failure"] == "crawl" and reward == FAILURE_IMPROVEMENT and info["legacy_improvement"] > 0


finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(category=st.sampled_from(CATEGORIES), error=st.floats(0, 1e6), default_error=st.floats(0, 1e6),
       progress=finite, default_progress=finite, failure=st.sampled_from(["", "unparsable", "crash"]))
def test_the_score_stays_in_its_clip_range_and_its_terms_add_up(category, error, default_error, progress,
                                                                 default_progress, failure):
    s = score(category, error, default_error, progress, default_progress, failure)
    assert -IMPROVEMENT_CLIP <= s.improvement <= IMPROVEMENT_CLIP
    assert -IMPROVEMENT_CLIP <= s.legacy_improvement <= IMPROVEMENT_CLIP
    assert set(s.terms) == set(TERMS) and math.isclose(sum(s.terms.values()), s.improvement, abs_tol=1e-9)
    assert s.failure in ("", *FAILURES) and (s.improvement == FAILURE_IMPROVEMENT if s.failure else True)
    if failure:
        assert s.failure == failure
    if category not in PROGRESS_CATEGORIES:  # velocity and reverse: the legacy score, whatever the progress
        assert s.improvement == s.legacy_improvement == legacy_improvement(error, default_error, bool(failure))


@settings(max_examples=200, deadline=None)
@given(category=st.sampled_from(PROGRESS_CATEGORIES), share=st.floats(0, 1), default_error=st.floats(0, 100),
       a=finite, b=finite, default_progress=st.floats(0, 1e4))
def test_at_equal_error_more_progress_never_scores_lower(category, share, default_error, a, b, default_progress):
    # errors up to the default's (a drive far worse than the default scores under a failure, as it did before)
    error, (slow, fast) = share * default_error, sorted((a, b))
    assert (score(category, error, default_error, slow, default_progress).improvement
            <= score(category, error, default_error, fast, default_progress).improvement)


def test_a_score_whose_terms_do_not_add_up_is_refused():
    with pytest.raises(ValueError, match="sum to"):
        Score(0.5, {"error_improvement": 0.5, "progress_penalty": -0.1, "failure": 0.0}, "", 0.8, 0.5)
    with pytest.raises(ValueError, match="unknown"):
        score("centerline", 0.1, 0.2, 1.0, 1.0, "bored")


# -- faithfulness ------------------------------------------------------------------------------------------------

BAND = '{"v_min": 0.5, "v_max": 0.8}'


def test_the_car_faithfulness_term_is_one_for_an_agreeing_thought_and_lower_for_hold_6_above_v_max_0_8():
    from agents.training.grpo import faithfulness_term

    agreeing = parse_car(f"<think>Slow down and hold 0.8 m/s.</think>\n{BAND}")
    lying = parse_car(f"<think>Hold 6 m/s.</think>\n{BAND}")
    assert faithfulness_term(agreeing, 1.0) == 1.0 == thought_agreement(agreeing.thought, agreeing.action)
    assert faithfulness_term(lying, 1.0) < 1.0 and faithfulness_term(lying, 0.25) < 0.25
    assert faithfulness_term(parse_car("no parameters at all"), 1.0) == 0.0  # unparsable: it chose nothing


def test_the_car_faithfulness_term_judges_a_margin_against_the_wall_clearance_the_drive_kept(drives):
    from agents.training.grpo import faithfulness_term

    half_width = load_track("oval").half_width
    free = half_width - VehicleParams().width / 2  # no drive keeps more than this from both walls
    assert 1.0 > free + 3 * 0.05  # so "margin 1 m" is out of reach, past the checker's tolerance
    wide, expert = drives["centerline"]["squeezed"], drives["centerline"]["expert"]
    evidence = drives["centerline"]["evidence"]
    assert evidence["squeezed"].min_clearance <= free
    thought = f"Centerline on half width {half_width:.2f}: qn 0, margin 1 m, slower."
    answer = parse_car(f"<think>{thought}</think>\n" + json.dumps(wide.params.as_dict()))
    assert faithfulness_term(answer, 1.0) == 1.0  # the parameters say margin 1
    assert faithfulness_term(answer, 1.0, evidence["squeezed"]) == pytest.approx(0.5)  # the drive did not keep 1 m
    margin = expert.params.track_safety_margin
    honest = parse_car(f"<think>Centerline on half width {half_width:.2f}: qn 0, margin {margin:.2f} m, slower.</think>\n"
                       + json.dumps(expert.params.as_dict()))
    assert faithfulness_term(honest, 1.0, evidence["expert"]) == 1.0


def test_the_factory_faithfulness_term_catches_a_thought_that_rejects_over_an_accept():
    from agents.training.ppo import faithfulness_term

    assert faithfulness_term(parse_factory('I see a scratch. Reject.\n{"decision": "reject"}'), 1.0) == 1.0
    assert faithfulness_term(parse_factory('Clean top, hole in place. Accept.\n{"decision": "accept"}'), 1.0) == 1.0
    assert faithfulness_term(parse_factory('I see a dent. Reject.\n{"decision": "accept"}'), 1.0) == 0.0
    assert part_thought_flags("There is no scratch, so accept.", "accept") == []  # negated: no claim of a defect
    assert part_thought_flags("I see no hole.", "accept")  # 'no hole' is the missing-hole defect
    assert part_thought_flags("Looks fine, clean.", "reject")


def test_thought_flags_check_claims_against_the_parameters_and_the_drive(drives):
    crawl = drives["centerline"]["crawl"]
    track = load_track("oval")
    action = crawl.params.as_dict()
    assert thought_flags("Crawl along at 0.15 m/s.", action, crawl.trace, track) == []
    flags = thought_flags("Hold 6 m/s.", action, crawl.trace, track)
    assert any("the action has" in f for f in flags) and any("drive that followed" in f for f in flags), flags
    assert thought_flags("", action, crawl.trace, track) == []


def _row(policy, category, improvement, legacy, flags=(), thought="", failure=""):
    return {"policy": policy, "category": category, "improvement": improvement, "legacy_improvement": legacy,
            "failure": failure, "parse_failed": False, "crashed": False, "latency_s": 0.01, "thought": thought,
            "thought_flags": list(flags)}


def test_the_eval_table_puts_the_legacy_score_and_thought_disagreement_beside_the_score():
    rows = [_row("default", c, 0.0, 0.0) for c in CATEGORIES]
    rows += [_row("grpo", "centerline", -1.0, 0.8, failure="crawl", thought="Slow."),
             _row("grpo", "velocity", 0.4, 0.4, flags=["thought says 'Hold 6 m/s'"], thought="Hold 6 m/s."),
             _row("grpo", "reverse", 0.9, 0.9, thought="Reverse."), _row("grpo", "smooth", 0.5, 0.9, thought="Easy.")]
    header, table = summary_table("car", rows)
    col = {h: i for i, h in enumerate(header)}
    grpo = next(r for r in table if r[0] == "grpo")
    assert grpo[col["centerline"]] == "-100.0 % [-100.0, -100.0]" and grpo[col["adaptability"]] == "20.0 %"
    assert grpo[col["legacy adaptability"]] == "75.0 %" and grpo[col["crawls / reverse"]] == 1
    assert grpo[col["thought disagreement"]] == "0.250"
    assert next(r for r in table if r[0] == "default")[col["thought disagreement"]] == "-"  # no thoughts


class LyingPolicy:
    """Says it holds 6 m/s, answers a band that tops out at 0.8 m/s."""

    policy_id, label = "liar", "liar"

    def decide(self, observation):
        return Decision(action={"v_min": 0.5, "v_max": 0.8}, policy_id=self.policy_id, thought="Hold 6 m/s.")


@pytest.mark.slow  # the held-out track's clearance maps take ~15-30 s to build on 2 shared cores
def test_the_evaluation_rows_keep_what_a_rescore_needs_and_flag_a_lying_thought():
    cfg = EvalConfig(world="car", zero_shot=False, episodes=1, duration_s=1.0)
    rows = evaluate_car(cfg, [FixedParamsPolicy(), LyingPolicy()])
    header, table = summary_table("car", rows)
    col = {h: i for i, h in enumerate(header)}
    by_policy = {r[0]: r for r in table}
    assert by_policy["liar"][col["thought disagreement"]] == "1.000"
    assert by_policy["default parameters"][col["legacy adaptability"]] == "0.0 %"
    liar = [r for r in rows if r["policy"] == "liar"]
    assert all(r["thought_flags"] and "6 m/s" in r["thought_flags"][0] for r in liar)
    assert {"legacy_improvement", "failure", "progress", "default_progress", "error", "default_error",
            "action"} <= set(liar[0])
    for r in rows:  # the rows alone re-score the drive: no need to drive again
        again = score(r["category"], r["error"], r["default_error"], r["progress"], r["default_progress"],
                      "crash" if r["crashed"] else "")
        assert again.improvement == r["improvement"] and again.legacy_improvement == r["legacy_improvement"]


def test_the_eval_table_gives_each_adaptability_its_bootstrap_interval_and_gains_are_paired():
    from agents.evaluation.evaluate import gains_table
    from agents.evaluation.intervals import mean_ci, paired_gain

    rng = np.random.default_rng(0)
    rows = []
    for c in CATEGORIES:
        for seed in range(12):
            base = float(rng.normal(0.2, 0.3))  # episodes differ a lot; the adapters' gap is steady
            rows += [{**_row("sft", c, base, base), "seed": seed, "role": "adapter"},
                     {**_row("grpo", c, base + 0.1, base), "seed": seed, "role": "adapter"},
                     {**_row("expert", c, 0.5, 0.5), "seed": seed, "role": "expert"}]
    header, table = summary_table("car", rows)
    col = {h: i for i, h in enumerate(header)}
    sft = next(r for r in table if r[0] == "sft")
    low, high = (float(x) for x in sft[col["95 % CI"]].strip("[]").split(","))
    assert low < float(sft[col["adaptability"]].rstrip(" %")) < high and high - low > 5  # wide: 48 noisy episodes
    mean, interval = sft[col["centerline"]].split(" % ")  # each category's mean carries its own interval (12 episodes)
    low, high = (float(x) for x in interval.strip("[]").split(","))
    assert low < float(mean) < high and high - low > 10
    gain = paired_gain(rows, "grpo", "sft")
    assert gain.mean == pytest.approx(0.1) and gain.high - gain.low < 1e-9 and gain.excludes_zero  # paired: no spread
    header, table = gains_table("car", rows)
    col = {h: i for i, h in enumerate(header)}
    first = table[0]
    assert first[:2] == ["grpo", "sft"] and first[col["CI excludes 0"]] == "yes"
    assert [r[:2] for r in table] == [["grpo", "sft"], ["sft", "expert"], ["grpo", "expert"]]
    # same values, same interval; a constant sample is its own interval; an empty or unpaired one is refused
    assert mean_ci([0.1, 0.5, 0.2, 0.9]) == mean_ci([0.1, 0.5, 0.2, 0.9])
    assert mean_ci([0.3] * 5).low == mean_ci([0.3] * 5).high == 0.3
    with pytest.raises(ValueError, match="non-empty"):
        mean_ci([])
    with pytest.raises(ValueError, match="same episodes"):
        paired_gain([r for r in rows if not (r["policy"] == "sft" and r["seed"] == 0)], "grpo", "sft")
    with pytest.raises(ValueError, match="unequal episodes per category"):
        summary_table("car", [r for r in rows if not (r["category"] == CATEGORIES[0] and r["seed"] == 0)])


def test_an_evaluation_of_chosen_categories_keeps_their_episodes_and_tables_only_them():
    from agents.evaluation.evaluate import car_episodes, gains_table

    full = car_episodes(EvalConfig(world="car", episodes=3))
    one = car_episodes(EvalConfig(world="car", episodes=3, categories=("centerline",)))
    assert one == [e for e in full if e[1]["category"] == "centerline"]  # the same seeds: the same episodes
    assert len(car_episodes(EvalConfig(world="car", episodes=40, categories=("reverse", "smooth")))) == 80
    rows = [{**_row(p, "centerline", v + 0.01 * s, v), "seed": s, "role": role}
            for s in range(5) for p, v, role in (("grpo", 0.74, "adapter"), ("expert", 0.73, "expert"))]
    header, table = summary_table("car", rows)
    assert header[1:3] == ["centerline", "adaptability"]
    assert next(r for r in table if r[0] == "grpo")[2] == "76.0 %"  # the adaptability of one category is its mean
    header, table = gains_table("car", rows)
    assert header[2:4] == ["centerline", "adaptability (95 % CI)"] and table[0][2] == "+1.0 [+1.0, +1.0]"
    for bad in (("left",), ("centerline", "centerline")):
        with pytest.raises(ConfigError, match="name car instruction categories"):
            EvalConfig(world="car", categories=bad)
    with pytest.raises(ConfigError, match="the factory has none"):
        EvalConfig(world="factory", categories=("centerline",))


def test_the_blind_split_is_an_evaluation_choice_for_the_car_only():
    import json

    from agents.tasks.car.instructions import BLIND_PATH, frame

    blind = [frame(t.replace("{speed}", "2 m/s")) for ts in json.loads(BLIND_PATH.read_text())["wordings"].values()
             for t in ts]
    env = CarInstructionEnv(CarTaskConfig(split="blind", duration_s=1.0, camera=False))
    try:
        for seed, cat in enumerate(CATEGORIES):
            _, info = env.reset(seed=seed, options={"category": cat})
            said = frame(info["instruction"])
            assert info["category"] == cat and (cat == "velocity" or any(b in said for b in blind))
    finally:
        env.close()
    assert EvalConfig(world="car", split="blind").split == "blind"
    with pytest.raises(ConfigError, match="the factory has none"):
        EvalConfig(world="factory", split="blind")
    with pytest.raises(ConfigError, match="must be one of"):
        CarTaskConfig(split="test")
