"""Scenario files, episodes, replay, shrinking and the regression export, on the real car twin.

Bad scenario files fail before any episode runs, with file, line and field in the message."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenarios.episode import run_episode
from scenarios.export import export, load_case, make_case, replay, with_system
from scenarios.loader import ScenarioError, library, load, load_text
from scenarios.shrink import shrink
from scenarios.space import SampleSpace
from twin.core.randomization import Choice, Normal, Uniform

FRICTION = Path("scenarios/library/car/friction-drop-before-corner.yaml").read_text()
BOX = Path("scenarios/library/car/box-after-bend.yaml").read_text()


def test_library_has_six_car_and_four_factory_scenarios_that_load():
    paths = library()
    kinds = [load(p).world.kind for p in paths]
    assert kinds.count("car") >= 6 and kinds.count("factory") >= 4
    assert load("car/box-after-bend").name == "car-box-after-bend"  # by library name too


BAD = [
    # (change to the friction scenario, what the error must name)
    (("  shield: false", "  shield: false\n  sheild: true"), ":17: system.sheild: unknown field"),
    (("vehicle.mu: {uniform", "vehicle.muu: {uniform"), ":18: nominal.vehicle.muu: unknown config field"),
    (("{uniform: [0.9, 1.1]}", "{uniform: [0.9, 9.0]}"), ":18: nominal.vehicle.mu: randomization range"),
    (('when: "s > 8"', 'when: "ss > 8"'), ":22: events[0].trigger.when: formula 'ss > 8' uses unknown signal"),
    (('"always(crashed < 0.5)"', '"always(crashed == 1)"'), "monitors.no_crash"),
    (("policy: pure-pursuit", "policy: adapter:/no/such/adapter"), ":14: system.policy: adapter directory"),
    (("action: friction", "action: frcition"), "events[0].action: unknown car action 'frcition'"),
    (("duration_s: 2.5", "duration_s: 2.5\n      mu: 0.3"), "events[0].with.mu: action 'friction' has no parameter"),
    (("channel: steer", "channel: stear"), "disturbances[0].channel: unknown car channel"),
    (("track: oval", "track: ovall"), "world.track"),
    (("{channel: steer, std: 0.01", "{channel: steer, std: -0.01"), "disturbances[0]"),
    (("edge: rising", "edge: up"), "events[0].trigger"),
]


@pytest.mark.parametrize("change,expected", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_scenario_files_fail_before_any_episode_naming_file_line_and_field(change, expected):
    old, new = change
    assert old in FRICTION
    with pytest.raises(ScenarioError) as err:
        load_text(FRICTION.replace(old, new, 1), "bad.yaml")
    assert str(err.value).startswith("bad.yaml:")
    assert expected in str(err.value)


def test_broken_yaml_and_missing_monitors_are_clear_errors():
    with pytest.raises(ScenarioError, match=r"bad.yaml:\d+: not valid YAML"):
        load_text("name: x\nworld: {kind: car\n", "bad.yaml")
    with pytest.raises(ScenarioError, match="missing required field"):
        load_text("name: x\nworld: {kind: car}\n", "bad.yaml")


@settings(max_examples=60, deadline=None)
@given(st.floats(-6, 6), st.floats(0.01, 3), st.floats(-5, 5), st.floats(0, 4))
def test_quantile_maps_are_monotone_and_stay_in_support(z, std, mean, width):
    from scipy.stats import norm

    u = norm.cdf(np.array([z - 0.5, z]))
    for dist in (Uniform(mean, mean + width), Normal(mean, std, mean - width, mean + width), Choice((1.0, 2.0, 5.0))):
        lo, hi = dist.ppf(u)
        low, high = dist.support()
        assert low <= lo <= hi <= high


def test_sample_space_names_every_coordinate_and_z0_is_the_nominal_median():
    space = SampleSpace(load_text(FRICTION))
    assert space.names() == ["param:vehicle.mu", "param:actuation.delay_s", "event:spill.scale",
                             "disturbance:steer[0]", "disturbance:steer[1]", "disturbance:steer[2]", "disturbance:steer[3]"]
    values = space.values(np.zeros(space.d))
    assert values.draws["vehicle.mu"] == pytest.approx(1.0) and values.events["spill"]["scale"] == pytest.approx(0.8)
    assert np.all(values.disturbances["steer"] == 0)
    with pytest.raises(ValueError, match="7 sample dimensions"):
        space.values(np.zeros(3))


def test_same_sample_and_seed_replay_bit_for_bit_and_a_new_seed_differs():
    z = np.random.default_rng(1).standard_normal(7)
    a, _ = run_episode(FRICTION, z, seed=3)
    b, _ = run_episode(FRICTION, z, seed=3)
    assert a.trace_hash == b.trace_hash and a.robustness == b.robustness
    c, _ = run_episode(FRICTION.replace("std: 0.01, segments: 4}", "std: 0.01, segments: 4, white_std: 0.01}"), z, 4)
    d, _ = run_episode(FRICTION.replace("std: 0.01, segments: 4}", "std: 0.01, segments: 4, white_std: 0.01}"), z, 5)
    assert c.trace_hash != d.trace_hash  # the seed drives the white noise


def test_event_fires_when_its_trigger_rises_and_a_slick_patch_crashes_the_car():
    z = np.zeros(7)
    nominal, signals = run_episode(FRICTION, z, seed=0)
    (t_fired, name), = nominal.info["events_fired"]
    k = int(np.argmax(signals["s"] > 8))
    assert name == "spill" and t_fired == pytest.approx(signals["t"][k - 1] if k else 0, abs=0.051)
    assert not nominal.failed and nominal.valid
    z[2] = -5.0  # grip 0.3 on the patch
    slick, _ = run_episode(FRICTION, z, seed=0)
    assert slick.failed and slick.signature.monitor in ("no_crash", "keeps_lane") and 8 < slick.signature.where < 20


def test_validity_rejects_a_run_without_calling_it_a_failure():
    stalled = FRICTION.replace('instruction: "Drive at 5 m/s."', 'instruction: "Drive at 1 m/s."')
    result, _ = run_episode(stalled, np.zeros(7), seed=0)
    assert not result.valid and not result.failed and result.robustness == float("inf")
    assert result.validity["reached_speed"] < 0


def test_shrinking_drops_unneeded_deviations_and_keeps_the_signature():
    z = np.array([0.8, -1.2, -5.0, 1.0, -0.7, 0.4, 0.9])
    first, _ = run_episode(FRICTION, z, seed=0)
    assert first.failed
    result = shrink(FRICTION, z, seed=0, bisect_steps=4)
    assert "event:spill.scale" in result.needed and len(result.needed) <= 3
    assert result.signature.monitor == first.signature.monitor
    assert abs(result.signature.where - first.signature.where) <= 2.0
    again, _ = run_episode(FRICTION, result.shrunk, seed=0)
    assert again.failed and again.signature.monitor == first.signature.monitor
    assert result.loglik_after > result.loglik_before  # simpler = closer to the nominal scenario
    with pytest.raises(ValueError, match="does not fail"):
        shrink(FRICTION, np.zeros(7), seed=0)


def test_exported_corpus_passes_with_the_fix_and_fails_when_the_bug_returns(tmp_path):
    """The box lands 5 m ahead: without the shield the car hits it, with it the car stops. The case is
    exported against the fixed (shielded) system; turning the shield off again makes the corpus fail."""
    z = [0.0, 0.0, -2.0, 0.0]
    unshielded, _ = run_episode(with_system(BOX, shield=False), z, seed=0)
    assert unshielded.failed
    case, result = make_case(with_system(BOX, shield=True), z, 0, expect="pass")
    assert not result.failed
    export([case], tmp_path / "corpus")
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "corpus")]
    passed = subprocess.run(run, capture_output=True, text=True, cwd=Path.cwd())
    assert passed.returncode == 0, passed.stdout + passed.stderr
    path, = (tmp_path / "corpus" / "cases").glob("*.json")
    data = json.loads(path.read_text())
    data["scenario"] = with_system(data["scenario"], shield=False)  # the bug is back
    path.write_text(json.dumps(data))
    failed = subprocess.run(run, capture_output=True, text=True, cwd=Path.cwd())
    assert failed.returncode == 1 and "fails again" in failed.stdout
    reloaded = load_case(path)
    _, identical = replay(reloaded)
    assert not identical  # a different system gives a different trace


def test_a_calibrated_twin_config_sets_the_nominal_and_the_scenario_still_wins(tmp_path):
    (tmp_path / "calibrated.yaml").write_text("params: {actuation.motor_gain: 0.8, vehicle.mu: 0.7}\nade_after: 0.1\n")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(FRICTION.replace("  control_hz: 20\n", "  control_hz: 20\n  params_file: calibrated.yaml\n"))
    nominal = dict(load(scenario).nominal)
    assert nominal["actuation.motor_gain"] == 0.8  # from the calibration
    assert isinstance(nominal["vehicle.mu"], Uniform)  # the scenario's own distribution wins
    (tmp_path / "calibrated.yaml").write_text("params: {actuation.motor_gain: 9.0}\n")
    with pytest.raises(ScenarioError, match=r"world.params_file .*motor_gain.*outside its valid range|leaves the field"):
        load(scenario)
