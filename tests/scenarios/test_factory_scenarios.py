"""Factory scenarios: the library loads, episodes replay bit for bit, events fire when their triggers say,
the shield changes the verdict of the person-enters-during-jam case, and a control rate the physics
cannot run is refused by name."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safety.factory.guard import MOVING
from safety.factory.spec import FactorySafetySpec
from scenarios.episode import run_episode
from scenarios.factory.runner import check_control_hz, iso_min
from scenarios.loader import LIBRARY, load
from scenarios.worlds import FACTORY
from twin.core.config import ConfigError

FILES = sorted((LIBRARY / "factory").glob("*.yaml"))
JAM = (LIBRARY / "factory" / "person-enters-during-jam.yaml").read_text()
COUNTS = ("dropped", "binned", "false_accepts")
FLAGS = ("jammed", "contact", "person_in_cell", "intervened", "jam_running")


def _short(text: str, seconds: float) -> str:
    """A library scenario cut to `seconds` (every library file says `duration_s: <n>` once)."""
    lines = [f"  duration_s: {seconds:g}" if line.startswith("  duration_s:") else line for line in text.splitlines()]
    assert lines != text.splitlines(), "no world.duration_s line to shorten"
    return "\n".join(lines)


def test_the_library_has_the_four_factory_scenarios_and_each_loads():
    assert {p.stem for p in FILES} >= {"person-enters-during-jam", "part-falls", "glare-at-inspection",
                                       "arm-speed-override-near-person"}
    for path in FILES:
        scenario = load(path)
        assert scenario.world.kind == "factory"
        assert scenario.monitors and scenario.events
        assert 10 <= scenario.world.duration_s <= 20


def test_a_short_run_replays_bit_for_bit_with_every_signal():
    text = _short(JAM, 5)  # the line and the patrol only: the jam waits for the first pick
    z = np.array([1.0, -0.5, 0.3, 0.0, 0.0, 0.0])
    first, signals = run_episode(text, z, seed=3)
    run_episode(text, z, seed=4)  # another episode in between must leave no trace in the next
    again, _ = run_episode(text, z, seed=3)
    other, _ = run_episode(text, np.zeros(6), seed=3)
    assert first.trace_hash == again.trace_hash
    assert first.trace_hash != other.trace_hash  # z reaches the episode: the person's and the belt's speed differ
    assert set(signals) == set(FACTORY.signals)
    assert {len(v) for v in signals.values()} == {100}  # 5 s at 20 Hz
    np.testing.assert_allclose(np.diff(signals["t"]), 0.05, atol=1e-9)
    for name in COUNTS:
        assert np.all(np.diff(signals[name]) >= 0), name
    for name in FLAGS:
        assert set(np.unique(signals[name])) <= {0.0, 1.0}, name
    assert first.info["decision"]["decided"] >= 1  # the inspector saw at least the first part
    assert first.info["events_fired"] == []


EVENTS = """
name: factory-event-timing
world: {kind: factory, duration_s: 4, control_hz: 20}
system: {policy: expert}
nominal: {person.enter_probability: 0.0}
events:
  - name: override
    trigger: {when: "t > 0.5"}
    action: arm_speed
    with: {speed: 0.3, duration_s: 1.0}
  - name: visit
    trigger: {when: "t > 1", delay_s: 0.5}
    action: person_enter
disturbances:
  - {channel: arm_speed, std: 0.1, segments: 2}
monitors:
  no_contact: "always(contact < 0.5)"
"""


def test_events_fire_at_their_trigger_time_and_act():
    result, signals = run_episode(EVENTS, np.array([1.0, -2.0]), seed=0, keep_trace=True)
    # A trigger is read on the last step's signals (t = 0, 0.05, ...): 't > 0.5' first holds at 0.55.
    assert result.info["events_fired"] == [(pytest.approx(0.55), "override"), (pytest.approx(1.55), "visit")]
    start = signals["t"] - 0.05  # each row is the step that began one period earlier
    commanded = result.info["trace"]["arm_cmd"]
    during = (start > 0.55 - 1e-9) & (start < 1.55 - 1e-9)
    noise = np.where(start < 2.0 - 1e-9, 0.1, -0.2)  # std * z of the arm_speed channel's two pieces
    np.testing.assert_allclose(commanded[during], 0.3 + noise[during])
    np.testing.assert_allclose(commanded[~during], 0.6 + noise[~during])
    in_cell = signals["person_in_cell"]
    assert not in_cell[start < 1.55 - 1e-9].any() and in_cell[-1] == 1.0


def test_the_shield_keeps_the_operator_safe_that_the_bare_line_endangers():
    text = _short(JAM, 15)
    z = np.zeros(6)
    # Seed 5 feeds a defective part early enough that the pick, the jam and the visit all fall inside
    # 15 s (in most seeds the first pick comes later, and the episode is invalid: checked, not assumed).
    shielded, _ = run_episode(text, z, seed=5)
    bare, _ = run_episode(text.replace("shield: true", "shield: false"), z, seed=5)
    assert shielded.valid and bare.valid
    assert not shielded.failed and shielded.info["shield"]["interventions"] > 0
    assert bare.failed and bare.signature.monitor == "protective_separation"
    assert bare.monitors["protective_separation"] < -0.5  # the arm swings at the operator, well inside S_p


def test_a_control_rate_the_physics_cannot_run_is_refused_by_name():
    text = JAM.replace("control_hz: 20", "control_hz: 7")
    with pytest.raises(ConfigError, match=r"world\.control_hz 7 must divide"):
        run_episode(text, np.zeros(6), seed=0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 100) | st.floats(1.0, 100.0))
def test_control_rates_are_accepted_exactly_when_they_divide_240_hz(hz):
    divides = abs(240.0 / hz - round(240.0 / hz)) <= 1e-9
    if divides:
        check_control_hz(hz)
    else:
        with pytest.raises(ConfigError, match="world.control_hz"):
            check_control_hz(hz)


@given(st.floats(0.0, 5.0), st.floats(0.0, 5.0))
def test_iso_min_is_zero_for_a_still_arm_and_grows_with_its_speed(a, b):
    spec = FactorySafetySpec()
    lo, hi = sorted((a, b))
    assert iso_min(spec, lo) <= iso_min(spec, hi)
    assert (iso_min(spec, lo) == 0.0) == (lo <= MOVING)
    assert iso_min(spec, hi) == 0.0 or iso_min(spec, hi) >= spec.protective_separation(0.0)
