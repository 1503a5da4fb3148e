"""Declared randomization: draws stay in range, bad specs fail with the field's name."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.car.actuation import Command
from twin.car.randomization import CAR_RANDOMIZATION
from twin.car.twin import CarParams, CarTwin, CarTwinConfig
from twin.core.config import ConfigError, get_path
from twin.core.randomization import Choice, Normal, Randomizer, Term, Uniform, streams


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_default_car_draws_stay_inside_declared_ranges(seed):
    rnd = Randomizer(CarParams(), CAR_RANDOMIZATION)
    draws = rnd.draw_reset(np.random.default_rng(seed))
    assert set(draws) == {t.field for t in CAR_RANDOMIZATION}
    params = rnd.apply(CarParams(), draws)
    for term in CAR_RANDOMIZATION:
        low, high = term.dist.support()
        value = get_path(params, term.field)
        for v in (value if isinstance(value, tuple) else (value,)):
            assert low <= v <= high, (term.field, v)


@settings(max_examples=60, deadline=None)
@given(
    low=st.floats(0.1, 1.9),
    width=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
)
def test_any_valid_uniform_range_draws_inside_it(low, width, seed):
    high = min(2.0, low + width)
    rnd = Randomizer(CarParams(), [Term("vehicle.mu", Uniform(low, high))])
    mu = rnd.apply(CarParams(), rnd.draw_reset(np.random.default_rng(seed))).vehicle.mu
    assert low <= mu <= high


def test_nominal_is_untouched_by_apply():
    rnd = Randomizer(CarParams(), CAR_RANDOMIZATION)
    rnd.apply(CarParams(), rnd.draw_reset(np.random.default_rng(0)))
    assert rnd.nominal == CarParams()


def test_same_generator_state_gives_same_draws():
    rnd = Randomizer(CarParams(), CAR_RANDOMIZATION)
    assert rnd.draw_reset(np.random.default_rng(7)) == rnd.draw_reset(np.random.default_rng(7))
    assert rnd.draw_reset(np.random.default_rng(7)) != rnd.draw_reset(np.random.default_rng(8))


def test_range_outside_field_bounds_is_rejected_naming_the_field():
    with pytest.raises(ConfigError, match="vehicle.mu"):
        Randomizer(CarParams(), [Term("vehicle.mu", Uniform(0.5, 5.0))])


def test_unknown_field_is_rejected_naming_it():
    with pytest.raises(ConfigError, match="vehicle.grip"):
        Randomizer(CarParams(), [Term("vehicle.grip", Uniform(0.5, 1.0))])


def test_inverted_or_nan_range_is_rejected():
    with pytest.raises(ConfigError):
        Uniform(1.0, 0.5)
    with pytest.raises(ConfigError):
        Uniform(float("nan"), 1.0)
    with pytest.raises(ConfigError):
        Normal(0.0, -1.0, -1.0, 1.0)


def test_duplicate_term_and_bad_interval_rejected():
    with pytest.raises(ConfigError, match="twice"):
        Randomizer(CarParams(), [Term("vehicle.mu", Uniform(0.9, 1.0)), Term("vehicle.mu", Uniform(0.9, 1.0))])
    with pytest.raises(ConfigError, match="interval_s"):
        Term("vehicle.mu", Uniform(0.9, 1.0), when="interval")


def test_interval_terms_are_due_once_per_period():
    rnd = Randomizer(CarParams(), [Term("lidar.bias", Uniform(-0.1, 0.1), when="interval", interval_s=0.5),
                                   Term("vehicle.mu", Choice((0.9, 1.0)))])
    due = [bool(rnd.due(k * 0.1, (k + 1) * 0.1)) for k in range(10)]
    assert sum(due) == 2  # crossings at 0.5 s and 1.0 s
    assert [t.field for t in rnd.due(0.45, 0.55)] == ["lidar.bias"]


def test_replaying_invalid_draws_is_an_error_not_a_silent_clamp():
    rnd = Randomizer(CarParams(), CAR_RANDOMIZATION)
    with pytest.raises(ConfigError, match="mu"):
        rnd.apply(CarParams(), {"vehicle.mu": 7.0})


def test_config_rejects_out_of_range_value_naming_field():
    from twin.car.vehicle import VehicleParams
    with pytest.raises(ConfigError, match="VehicleParams.mass"):
        VehicleParams(mass=-1.0)
    with pytest.raises(ConfigError, match="mass"):
        dataclasses.replace(VehicleParams(), mass=float("nan"))


def test_streams_are_reproducible_independent_and_named():
    a = streams(np.random.default_rng(7), "world", "camera")
    b = streams(np.random.default_rng(7), "world", "camera")
    assert a["world"].random() == b["world"].random()
    assert a["camera"].random() != a["world"].random()
    with pytest.raises(ValueError, match="distinct"):
        streams(np.random.default_rng(7), "world", "world")


def test_reading_a_sensor_does_not_change_the_car_episode():
    """Two policies on one seed meet the same world: the sensors one of them reads at every step
    draw their noise from their own streams, not from the world's interval redraws."""
    config = CarTwinConfig(track="oval", lidar=True,
                           randomization=(Term("vehicle.mu", Uniform(0.6, 1.0), when="interval", interval_s=0.2),))
    redraws = []
    for reads_sensors in (False, True):
        twin = CarTwin(config)
        twin.reset(np.random.default_rng(5))
        seen = []
        for _ in range(30):
            if reads_sensors:
                twin.camera(), twin.lidar(), twin.odometry()
            seen.append(twin.step(Command(1.0, 0.0)).redraws)
        redraws.append(seen)
    assert redraws[0] == redraws[1] and any(redraws[0])
