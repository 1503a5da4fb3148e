"""Exploration answers for GRPO (agents.training.explore): the sampled answer's numbers moved at random, within
their ranges, its keys and words kept, its stated numbers kept true."""

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.control.mpc_params import SPECS
from agents.tasks.car.metrics import thought_agreement
from agents.training.explore import perturb_answer
from agents.vlm.parsing import parse_car

CENTERLINE = ('<think>Centerline: qn 0, margin 0.71 m, slower.</think>\n'
              '{"qn": 0, "qalpha": 10, "v_max": 3, "track_safety_margin": 0.71}')
ANSWERS = (CENTERLINE, '<think>Target 2.5 m/s.</think>\n{"qv": 60, "v_min": 2.48, "v_max": 2.52}',
           '<think>Reverse near -1 m/s.</think>\n{"qv": 60, "qn": 5, "a_min": -3, "a_max": 3, "v_min": -1.02, '
           '"v_max": -0.98}',
           '<think>Smooth: gentle, capped speed.</think>\n{"qac": 5, "qddelta": 5, "alat_max": 1, "a_min": -0.6, '
           '"a_max": 0.6, "v_min": 0.3, "v_max": 1.8}')
INSET = ('<think>Centerline on half width 0.95 less 0.18 is 0.77: qn 0, margin 0.77 m, slower.</think>\n'
         '{"qn": 0, "qalpha": 10, "v_max": 3, "track_safety_margin": 0.77}')


@settings(max_examples=200, deadline=None)
@given(raw=st.sampled_from(ANSWERS), seed=st.integers(0, 2**32 - 1), scale=st.floats(0.01, 1.0))
def test_an_exploration_answer_moves_numbers_only_within_their_ranges(raw, seed, scale):
    before = parse_car(raw)
    text = perturb_answer(raw, np.random.default_rng(seed), scale)
    after = parse_car(text)
    assert after.status == "ok"
    old, new = json.loads(raw.split("\n")[1]), json.loads(text.split("\n")[1])
    assert list(new) == list(old)  # the same keys in the grammar's order
    assert all(SPECS[k].low <= v <= SPECS[k].high for k, v in new.items())
    assert new.get("v_min", -5) <= new.get("v_max", 12)
    # the thought keeps its words; only the numbers it states may change, and they state the new values
    assert [w for w in before.thought.split() if not any(c.isdigit() for c in w)] == \
           [w for w in after.thought.split() if not any(c.isdigit() for c in w)]
    if raw == CENTERLINE:
        assert f"qn {new['qn']:g}," in after.thought and f"margin {new['track_safety_margin']:g} m" in after.thought


def test_a_moved_centerline_answer_still_agrees_with_its_thought_and_bad_answers_are_left_alone():
    rng = np.random.default_rng(3)
    moved = [perturb_answer(CENTERLINE, rng, 0.15) for _ in range(50)]
    assert len(set(moved)) > 40  # the moves differ
    agreeing = [thought_agreement(p.thought, p.action) for p in map(parse_car, moved)]
    assert np.mean([a == 1.0 for a in agreeing]) > 0.9  # "slower" can fail when v_max lands at the default 12
    assert perturb_answer("no answer at all", rng, 0.15) is None
    assert perturb_answer('<think>x</think>\n{"decision": "accept"}', rng, 0.15) is None


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.01, 1.0))
def test_a_moved_margin_is_restated_as_an_inset_the_calculator_subtracts(seed, scale):
    """An answer whose thought has the calculator subtract the margin keeps decoding under the calculator when its
    margin moves: the inset is rewritten so the calculator's result is the new margin, which the action writes."""
    from agents.vlm.grammar import SUBTRACTION, subtracted_margin

    after = parse_car(perturb_answer(INSET, np.random.default_rng(seed), scale))
    assert after.status == "ok"
    found = SUBTRACTION.search(after.thought)
    assert found is not None and found.group(1) == "0.95" and float(found.group(2)) >= 0
    margin = after.action["track_safety_margin"]
    assert subtracted_margin("car", after.thought[:found.end()]) == f" {margin:g}"
    assert margin <= 0.95  # the calculator subtracts: a margin above the half width has no inset
    assert after.thought[found.end():].startswith(f" {margin:g}: ") and f"margin {margin:g} m" in after.thought
    assert f"qn {after.action['qn']:g}," in after.thought


@settings(max_examples=200, deadline=None)
@given(raw=st.sampled_from(ANSWERS), seed=st.integers(0, 2**32 - 1))
def test_with_share_zero_one_number_moves(raw, seed):
    """GRPO's --explore-share 0: one number moves, so a group's rewards say which one helped (a move past its
    ordered partner, v_min over v_max, swaps the pair back into order, so the pair changes together)."""
    from agents.training.explore import ORDERED

    text = perturb_answer(raw, np.random.default_rng(seed), 0.3, share=0.0)
    old, new = json.loads(raw.split("\n")[1]), json.loads(text.split("\n")[1])
    changed = {k for k in old if old[k] != new[k]}
    assert len(changed) <= 1 or (len(changed) == 2 and tuple(sorted(changed)) in {tuple(sorted(p)) for p in ORDERED})
