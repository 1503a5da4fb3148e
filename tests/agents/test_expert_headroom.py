"""The search for tunes that beat the scripted car expert (benchmarks/expert_headroom.py): its tunes mean what
they say, and an empty tune is the expert itself, so a searched tune is compared with the real teacher."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.control.mpc_params import SPECS
from agents.policies.car_expert import ScriptedCarExpert, expert_params
from agents.tasks.car.instructions import CATEGORIES
from benchmarks.expert_headroom import RELATIVE_SPEED, SearchEpisodes, TunedCarExpert, expert_tune, tuned_params
from twin.core.contracts import Observation


def _target(category: str, speed: float) -> float | None:
    return speed if category == "velocity" else -1.0 if category == "reverse" else None


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(CATEGORIES), st.floats(0.5, 6.0), st.floats(0.4, 1.5), st.floats(0.1, 0.4))
def test_an_empty_tune_is_the_expert_and_every_tune_is_a_valid_parameter_set(category, speed, half_width, car_width):
    target = _target(category, speed)
    assert tuned_params(category, {}, target, half_width, car_width) == expert_params(category, target, half_width,
                                                                                       car_width)
    wild = {k: 1e6 for k in ("qv", "qn", "qalpha", "qac", "qddelta", "alat_max", "a_min", "a_max")}
    wild |= ({"dv_below": 3.0, "dv_above": 0.0} if category in RELATIVE_SPEED else {"v_min": 9.0, "v_width": 0.0})
    params = tuned_params(category, wild, target, half_width, car_width)  # clipped into range, never refused
    assert all(SPECS[k].low <= v <= SPECS[k].high for k, v in params.as_dict().items())


def test_tune_keys_mean_what_they_say():
    p = tuned_params("velocity", {"dv_below": 0.5, "dv_above": 0.25, "a_max": 4.0}, 3.0, 1.0, 0.3)
    assert (p.v_min, p.v_max, p.a_max) == (2.5, 3.25, 4.0)
    p = tuned_params("centerline", {"margin_share": 0.5, "v_min": 1.0, "v_width": 2.0}, None, 1.0, 0.3)
    assert math.isclose(p.track_safety_margin, 0.425) and (p.v_min, p.v_max) == (1.0, 3.0)
    # An inset is measured from the free half width (1.0 - 0.15 = 0.85) and written to 0.01 m as an answer writes it;
    # the expert's own inset is its WALL_GAP, 0.03, and half-up rounding keeps the expert's 0.805 at 0.81.
    assert tuned_params("centerline", {"margin_inset": 0.015}, None, 1.0, 0.3).track_safety_margin == 0.84
    assert tuned_params("centerline", {"margin_inset": 0.03}, None, 0.99, 0.3).track_safety_margin == 0.81
    assert tuned_params("centerline", {"margin_inset": -0.5}, None, 1.0, 0.3).track_safety_margin == 1.0  # clipped
    # The warm start is the expert's tune on a track of the width it was written for.
    for cat in CATEGORIES:
        target = _target(cat, 1.0)
        mine, theirs = tuned_params(cat, expert_tune(cat), target, 1.0, 0.3), expert_params(cat, target, 1.0, 0.3)
        assert all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(mine.as_dict().values(), theirs.as_dict().values()))


def test_the_tuned_expert_decides_from_the_observation_and_the_search_scores_the_expert():
    obs = Observation(0.0, {"half_width": 0.9}, instruction="Reverse the car.",
                      privileged={"category": "reverse", "target_speed": -1.0, "car_width": 0.3})
    assert TunedCarExpert({}).decide(obs).action == ScriptedCarExpert().decide(obs).action
    assert TunedCarExpert({"reverse": {"a_min": -10.0}}).decide(obs).action["a_min"] == -10.0
    found = SearchEpisodes("reverse", episodes=1, duration_s=2.0)
    try:
        assert found.score({}) == pytest.approx(found.score({}))  # the same episode, the same drive
        assert found.score({}) > 0.5  # the expert holds -1 m/s far better than the default's racing tune
    finally:
        found.close()


def test_the_inset_landscape_runs_end_to_end_and_pairs_every_move_with_the_expert(tmp_path):
    """benchmarks.centerline_insets on a tiny budget: every inset x heading is scored on training and held-out
    episodes, and each held-out score is paired with the expert's on the same episodes."""
    import json

    from benchmarks.centerline_insets import main

    out = tmp_path / "insets.json"
    main(["--insets", "0.03", "-0.05", "--headings", "10", "--train-episodes", "1", "--episodes", "2",
          "--train-duration-s", "1", "--duration-s", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["moves"]) == {"inset 0.030, qalpha 10", "inset -0.050, qalpha 10"}
    for name in result["moves"]:
        row = result["summary"][name]
        assert row["heldout"]["n"] == 2 and row["gain"]["low"] <= row["gain"]["mean"] <= row["gain"]["high"]
    held = [r for r in result["rows"] if r["policy"] == "inset -0.050, qalpha 10"]
    assert {r["action"]["track_safety_margin"] for r in held} == {0.85}  # sprint: 0.795 free + 0.05, to 0.01 m
