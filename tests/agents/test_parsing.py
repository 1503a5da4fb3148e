"""The answer parser: strict but total, with the action's span found by text offsets."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.control.mpc_params import DEFAULT, NAMES, MPCParams
from agents.vlm.parsing import FACTORY_FALLBACK, parse_car, parse_factory


def test_think_then_json():
    text = '<think>Slow reference: cap the speed.</think>\n{"v_max": 1.3, "v_min": 1.2, "qv": 50}'
    p = parse_car(text)
    assert p.status == "ok" and p.action["v_max"] == 1.3 and p.action["qn"] == DEFAULT.qn
    assert p.thought == "Slow reference: cap the speed."
    assert json.loads(text[slice(*p.action_span)]) == {"v_max": 1.3, "v_min": 1.2, "qv": 50}


def test_robotxr1_python_dict_and_rl4vlm_shapes():
    p = parse_car("I should reverse.\nnew_mpc_params = {'v_min': -1.1, 'v_max': -0.9}")
    assert p.status == "ok" and p.action["v_min"] == -1.1 and p.thought == "I should reverse."
    text = '{"thoughts": "defect on top", "action": {"decision": "Reject"}}'
    q = parse_factory(text)
    assert q.status == "ok" and q.action == {"decision": "reject"} and q.thought == "defect on top"
    assert json.loads(text[slice(*q.action_span)]) == {"decision": "Reject"}


@pytest.mark.parametrize("text, why", [
    ("", "empty"), ("   ", "empty"), ("I think we should go faster", "no JSON"),
    ('<think>go</think> {"v_max": 3', "no JSON"),  # truncated
    ('{"v_max": 3} {"qv": ', None),  # a complete object before the truncation is used
])
def test_bad_car_answers_fall_back_or_use_what_is_complete(text, why):
    p = parse_car(text)
    assert MPCParams(**p.action)  # always valid
    if why:
        assert p.failed and why in p.status and p.action == DEFAULT.as_dict() and p.action_span is None
    else:
        assert p.status == "ok" and p.action["v_max"] == 3


def test_out_of_range_and_unknown_keys_are_repaired_and_noted():
    p = parse_car('{"v_max": 99, "warp": 9, "qv": "fast", "v_min": -20}')
    assert p.status == "repaired"
    assert p.action["v_max"] == 12.0 and p.action["v_min"] == -5.0 and p.action["qv"] == DEFAULT.qv
    assert set(p.notes) == {"v_max", "warp", "qv", "v_min"}


def test_factory_bad_decisions_hold_the_part():
    for text in ("", "accept it!", '{"decision": "maybe"}', '{"decision": 3}', '["accept"]'):
        p = parse_factory(text)
        assert p.failed and p.action == {"decision": FACTORY_FALLBACK}


def test_adversarial_literal_is_not_executed():
    p = parse_car("{__import__('os').system('echo pwned'): 1}")
    assert p.failed  # literal_eval refuses calls; nothing runs


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_to_a_valid_action(text):
    for parse in (parse_car, parse_factory):
        p = parse(text)
        assert isinstance(p.status, str) and isinstance(p.thought, str)
        if p.action_span is not None:
            a, b = p.action_span
            assert 0 <= a < b <= len(text)
    MPCParams(**parse_car(text).action)
    assert parse_factory(text).action["decision"] in ("accept", "reject", "hold")


@settings(max_examples=200, deadline=None)
@given(thought=st.text(max_size=80), params=st.dictionaries(st.sampled_from(NAMES),
       st.floats(-100, 100, allow_nan=False), max_size=6))
def test_well_formed_answers_round_trip(thought, params):
    text = f"<think>{thought.replace('{', '(').replace('}', ')')}</think>\n{json.dumps(params)}"
    p = parse_car(text)
    assert not p.failed
    assert json.loads(text[slice(*p.action_span)]) == params
