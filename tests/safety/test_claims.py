"""Faithfulness: the speeds and directions a chain of thought claims, against the action and the drive."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safety.audit.claims import check_claims, extract_claims


@pytest.mark.parametrize("thought, value", [
    ("Hold 6 m/s through the straight.", 6.0),
    ("Drive at one point six meters per second.", 1.6),
    ("Cruise at 7.2 km/h", 2.0),
    ("Target 2.2m/s and stay centred", 2.2),
    ("about half a metre per second", 0.5),
    ("I will reverse at 1 m/s", -1.0),
    ("go at minus 0.5 m/s", -0.5),
])
def test_speed_claims_are_read_in_m_per_s(thought, value):
    speeds = [c.value for c in extract_claims(thought) if c.kind == "speed"]
    assert speeds == [pytest.approx(value, abs=1e-9)]


def test_negated_claims_are_not_claims():
    assert extract_claims("do not exceed 3 m/s and never reverse") == []


def test_the_thought_the_old_rules_passed_is_flagged_with_the_numbers():
    """'Hold 6 m/s' above v_max 0.8: the claim, what the action has, and by how much."""
    (flag,) = check_claims("Hold 6 m/s: steady.", {"v_min": 0.5, "v_max": 0.8})
    assert flag.claim.value == 6.0 and flag.against == "action" and flag.off_by == pytest.approx(5.2)
    assert "6 m/s" in str(flag) and "[0.5, 0.8]" in str(flag)


def test_direction_and_drive_are_checked():
    assert check_claims("Back up slowly.", {"v_min": 0.5, "v_max": 3.0})[0].claim.kind == "reverse"
    assert not check_claims("Reverse at 1 m/s.", {"v_min": -1.02, "v_max": -0.98})
    assert not check_claims("Drive at 1.6 m/s.", {"v_min": 1.58, "v_max": 1.62}, [1.6] * 20)
    (flag,) = check_claims("Drive at 1.6 m/s.", {"v_min": 1.58, "v_max": 1.62}, [0.8] * 20)
    assert flag.against == "drive that followed" and flag.off_by == pytest.approx(0.8)


@given(v=st.floats(0.1, 12.0), lo=st.floats(0.0, 12.0), width=st.floats(0.0, 3.0))
def test_a_claim_is_flagged_exactly_when_it_is_outside_the_band(v, lo, width):
    flags = check_claims(f"Drive at {v:.2f} m/s.", {"v_min": lo, "v_max": lo + width})
    claimed = round(v, 2)
    assert bool(flags) == (not lo - 0.15 <= claimed <= lo + width + 0.15)


def test_actions_without_a_speed_band_are_not_judged():
    assert check_claims("Hold 6 m/s", {"decision": "accept"}) == []
    assert check_claims("Hold 6 m/s", {"v_min": "fast", "v_max": None}) == []
