"""One flagger for every caller: keyword rules and claims, checked against the action and
against the drive that followed; a malformed outcome is not judged, never a crash."""

from hypothesis import given, settings
from hypothesis import strategies as st

from safety.audit.flags import decision_flags, executed_from

DEFAULTS = {"v_min": 1.0, "v_max": 12.0, "track_safety_margin": 0.3, "alat_max": 10.0, "a_min": -10.0, "a_max": 10.0}


def record(thought: str, action: dict, outcome=None) -> dict:
    body = {"thought": thought, "action": action}
    if outcome is not None:
        body["outcome"] = outcome
    return body


def test_a_claim_the_action_bears_out_but_the_drive_does_not_is_flagged_against_the_drive():
    body = record("Target 1.6 m/s.", {**DEFAULTS, "v_min": 1.5, "v_max": 1.7}, {"speeds": [0.4] * 50})
    flags = decision_flags(body, DEFAULTS)
    assert len(flags) == 1 and "drive that followed" in flags[0] and "1.6" in flags[0], flags
    assert decision_flags(record("Target 1.6 m/s.", body["action"], {"speeds": [1.62] * 50}), DEFAULTS) == []


def test_slow_down_above_a_raised_speed_cap_is_flagged_once_not_by_two_readers():
    flags = decision_flags(record("Slow down for the hairpin.", {**DEFAULTS, "v_max": 14.0}), DEFAULTS)
    assert len(flags) == 1 and "v_max" in flags[0], flags


def test_factory_keyword_rules_still_apply():
    flags = decision_flags(record("A deep scratch: defective.", {"accept": 1.0}), {"accept": 0.5})
    assert len(flags) == 1 and "accept" in flags[0]


def test_left_claims_are_judged_by_the_drive_only():
    body = record("Keep to the left of the lane.", DEFAULTS)
    assert decision_flags(body, DEFAULTS) == []  # nothing in the action says left or right
    body["outcome"] = {"lateral_offsets": [-0.3] * 40}
    flags = decision_flags(body, DEFAULTS)
    assert len(flags) == 1 and "left" in flags[0].lower(), flags


@settings(max_examples=60, deadline=None)
@given(outcome=st.one_of(st.none(), st.integers(), st.text(), st.lists(st.floats()),
                         st.dictionaries(st.sampled_from(["speeds", "lateral_offsets", "curvatures", "min_clearance",
                                                          "reference_speed", "other"]),
                                         st.one_of(st.floats(allow_nan=True), st.text(), st.lists(st.floats()),
                                                   st.none()))))
def test_any_outcome_is_read_or_ignored_never_a_crash(outcome):
    body = record("Hold 2 m/s and keep 0.5 m from the walls, hug the inside.", {**DEFAULTS, "v_max": 2.0}, outcome)
    flags = decision_flags(body, DEFAULTS)
    assert all(isinstance(f, str) for f in flags)
    trace = executed_from(outcome)
    assert trace is None or all(isinstance(v, float) for v in trace.speeds)
