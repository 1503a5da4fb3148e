"""The instruction-following task: env contract, metrics that move the right way, failures counted."""

import numpy as np
import pytest

from agents.control.mpc_params import DEFAULT, MPCParams
from agents.policies.car_expert import ScriptedCarExpert, expert_params
from agents.tasks.car.instruction_env import CarInstructionEnv, CarTaskConfig
from agents.tasks.car.instructions import (
    CATEGORIES,
    HELD_OUT_PARAPHRASES,
    TRAIN_PARAPHRASES,
    parse_instruction,
    sample_instruction,
)
from agents.tasks.car.metrics import FAILURE_IMPROVEMENT, improvement
from twin.car.tracks import training_tracks
from twin.core.config import ConfigError


@pytest.fixture(scope="module")
def nominal_env():
    env = CarInstructionEnv(CarTaskConfig(tracks=("oval",), duration_s=6.0, randomization=(), camera=False))
    yield env
    env.close()


@pytest.mark.parametrize("category", CATEGORIES)
def test_expert_parameters_beat_defaults_in_every_category(nominal_env, category):
    # A fixed velocity wording: the expert beats the defaults by far at low speeds only (by 11 % at 4.1 m/s
    # on the oval in 6 s: its speed choices are a teacher's, not optimal), and the draw decides the speed.
    options = {"instruction": "Drive at 1.75 m/s."} if category == "velocity" else {"category": category}
    _, info = nominal_env.reset(seed=3, options=options)
    decision = ScriptedCarExpert().decide(info["observation"])
    attempt = nominal_env.evaluate(decision.action)
    default = nominal_env.default_attempt()
    assert not attempt.trace.crashed
    assert attempt.metrics["error"] < 0.7 * default.metrics["error"]
    assert attempt.improvement > 0.3


def test_lower_v_max_lowers_speed_error_for_a_slow_reference(nominal_env):
    nominal_env.reset(seed=1, options={"instruction": "Drive at 1.2 m/s."})
    errors = [nominal_env.evaluate({"v_max": v}).metrics["error"] for v in (12.0, 3.0, 1.2)]
    assert errors[0] > errors[1] > errors[2]


def test_smaller_alat_max_and_speed_make_the_ride_smoother(nominal_env):
    nominal_env.reset(seed=1, options={"category": "smooth"})
    rough = nominal_env.evaluate({}).metrics["error"]
    smooth = nominal_env.evaluate({"v_max": 2.0, "alat_max": 1.5, "a_max": 1.0, "a_min": -1.0}).metrics["error"]
    assert smooth < 0.6 * rough


def test_same_seed_same_scores():
    env = CarInstructionEnv(CarTaskConfig(tracks=("oval", "kidney"), duration_s=3.0))
    results = []
    for _ in range(2):
        _, info = env.reset(seed=42)
        metrics = env.evaluate({"qv": 30}).metrics
        results.append((info["instruction"], info["randomization"], metrics))
    env.close()
    assert results[0] == results[1]


def test_failed_parse_counts_as_failure_and_drives_safe_defaults(nominal_env):
    nominal_env.reset(seed=2, options={"category": "centerline"})
    attempt = nominal_env.evaluate(None)
    assert attempt.improvement == FAILURE_IMPROVEMENT
    assert attempt.params == DEFAULT and not attempt.trace.crashed


RECKLESS = {"v_min": 9.0, "v_max": 12.0, "track_safety_margin": 0.0, "alat_max": 20.0}
"""No margin, no lateral limit, top speed forced: the MPC cannot make the corners."""


def test_crash_scores_failure_not_excluded():
    env = CarInstructionEnv(CarTaskConfig(tracks=("chicane",), duration_s=8.0, randomization=(), camera=False,
                                          safety=None))
    env.reset(seed=0, options={"category": "velocity"})
    attempt = env.evaluate(RECKLESS)
    env.close()
    assert attempt.trace.crashed
    assert attempt.improvement == FAILURE_IMPROVEMENT


def test_shield_keeps_reckless_parameters_from_crashing():
    env = CarInstructionEnv(CarTaskConfig(tracks=("chicane",), duration_s=8.0, randomization=(), camera=False))
    env.reset(seed=0, options={"category": "velocity"})
    attempt = env.evaluate(RECKLESS)
    env.close()
    assert not attempt.trace.crashed
    assert attempt.metrics["shield_interventions"] > 10
    assert attempt.trace.costs["collision"] == 0


def test_step_reports_clamps_and_named_terms(nominal_env):
    nominal_env.reset(seed=0)
    action = np.array(DEFAULT.as_array(), np.float32)
    action[0] = 1e6  # qv far out of range
    _, reward, terminated, truncated, info = nominal_env.step(action)
    assert "qv" in info["action_fixes"] and info["params"]["qv"] == 100.0
    assert terminated and not truncated
    assert reward == pytest.approx(sum(info["reward_terms"].values()))
    with pytest.raises(ValueError, match="11 MPC parameters"):
        nominal_env.step(np.zeros(3))


def test_instruction_parsing_and_splits():
    rng = np.random.default_rng(0)
    for split in ("train", "heldout"):
        for _ in range(30):
            ins = sample_instruction(rng, split)
            assert parse_instruction(ins.text) == ins
    train = {t for ts in TRAIN_PARAPHRASES.values() for t in ts}
    held = {t for ts in HELD_OUT_PARAPHRASES.values() for t in ts}
    assert not train & held
    with pytest.raises(ConfigError, match="unknown instruction"):
        parse_instruction("do a backflip")
    with pytest.raises(ConfigError, match="unknown track"):
        CarTaskConfig(tracks=("moon",))


def test_improvement_formula():
    assert improvement(0.5, 1.0, False) == pytest.approx(0.5)
    assert improvement(10.0, 1.0, False) == -4.0
    assert improvement(0.1, 1.0, True) == FAILURE_IMPROVEMENT
    assert improvement(float("nan"), 1.0, False) == FAILURE_IMPROVEMENT


def test_expert_rules_are_valid_params():
    for cat in CATEGORIES:
        assert isinstance(expert_params(cat, 2.0, 1.0, 0.31), MPCParams)


def test_an_env_over_many_track_widths_keeps_a_few_worlds_and_drives_the_one_drawn():
    """Worlds are kept for the latest tracks only (one per width would pile up), and evicting one never
    touches the episode's own: the same seed gives the same drive after its world was rebuilt."""
    env = CarInstructionEnv(CarTaskConfig(tracks=training_tracks((1.6, 2.4)), duration_s=1.0, camera=False))
    try:
        _, first = env.reset(seed=5)
        before = env.evaluate(DEFAULT).metrics
        seen = {first["track"]}
        for seed in range(6, 40):
            _, info = env.reset(seed=seed)
            seen.add(info["track"])
            assert len(env._twins) <= env.TWINS_KEPT and info["track"] in env._twins
        assert len(seen) > env.TWINS_KEPT
        _, again = env.reset(seed=5)
        assert again["track"] == first["track"] and env.evaluate(DEFAULT).metrics == before
    finally:
        env.close()
