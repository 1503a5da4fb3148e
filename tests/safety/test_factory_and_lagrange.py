"""Factory speed-and-separation shield and the Lagrange multiplier."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safety.factory.shield import FactoryShield, FactoryShieldState
from safety.factory.spec import FactorySafetySpec
from safety.lagrangian import Lagrange, LagrangeConfig
from twin.core.config import ConfigError
from twin.factory.command import FactoryCommand

SPEC = FactorySafetySpec()
anything = st.one_of(st.floats(-20, 20), st.sampled_from([math.nan, math.inf, -math.inf]))


@settings(max_examples=300, deadline=None)
@given(sep=st.one_of(st.floats(-1, 10), st.sampled_from([math.inf, math.nan])),
       v_h=st.one_of(st.none(), st.floats(0, 3)), jammed=st.booleans(), holding=st.booleans(),
       over_bin=st.booleans(), arm=anything, belt=anything, release=st.booleans())
def test_factory_shield_output_always_satisfies_the_constraints(sep, v_h, jammed, holding, over_bin, arm, belt,
                                                                release):
    verdict = FactoryShield(SPEC).filter(FactoryShieldState(sep, v_h, jammed, holding, over_bin),
                                         FactoryCommand(arm, belt, release))
    out = verdict.executed
    assert math.isfinite(out["arm_speed"]) and math.isfinite(out["belt_speed"])
    if out["arm_speed"] != 0:
        # ISO/TS 15066: the separation covers the protective distance at the executed speed.
        assert math.isnan(sep) is False
        assert sep >= SPEC.protective_separation(abs(out["arm_speed"]), v_h) - 1e-9
    assert abs(out["belt_speed"]) <= SPEC.belt_speed_max
    if jammed:
        assert out["belt_speed"] == 0
    if holding and not over_bin:
        assert out["release"] == 0.0
    assert verdict.intervened == bool(verdict.reasons)


def test_person_stepping_in_slows_then_stops_the_arm():
    shield = FactoryShield(SPEC)
    speeds = [shield.filter(FactoryShieldState(sep), FactoryCommand(1.0, 0.2)).executed["arm_speed"]
              for sep in (5.0, 1.5, 1.0, 0.8, 0.5)]
    assert speeds[0] == 1.0
    assert all(a >= b for a, b in zip(speeds, speeds[1:]))
    assert speeds[-1] == 0.0
    assert shield.filter(FactoryShieldState(0.5), FactoryCommand(1.0, 0.2)).kind == "backup"


def test_factory_spec_from_dict_is_strict():
    with pytest.raises(ConfigError, match="human_sped"):
        FactorySafetySpec.from_dict({"human_sped": 1.0})
    with pytest.raises(ConfigError, match="stopping_time"):
        FactorySafetySpec.from_dict({"stopping_time": -0.1})
    assert FactorySafetySpec.from_dict({"human_speed": 2.0}).human_speed == 2.0


def test_lagrange_multiplier_follows_the_cost():
    lag = Lagrange(LagrangeConfig(cost_limit=1.0, lr=0.5))
    assert lag.update(3.0) == pytest.approx(1.0)
    assert lag.update(3.0) == pytest.approx(2.0)
    assert lag.update(0.0) == pytest.approx(1.5)
    for _ in range(10):
        lag.update(0.0)
    assert lag.value == 0.0  # never negative
    lag.value = 1.0
    assert lag.advantage(np.array([2.0]), np.array([1.0]))[0] == pytest.approx(0.5)
    assert lag.penalized(1.0, 2.0) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="finite"):
        lag.update(math.nan)
    state = lag.state_dict()
    other = Lagrange()
    other.load_state_dict(state)
    assert other.value == lag.value
