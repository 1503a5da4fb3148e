"""Tracks: named and procedural, Frenet coordinates round-trip, bad names fail clearly."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.car.tracks import HELD_OUT, NAMED_TRACKS, TRAIN_TRACKS, load_track, procedural
from twin.core.config import ConfigError


def test_at_least_three_named_tracks_and_a_held_out_one():
    assert len(NAMED_TRACKS) >= 3
    assert HELD_OUT and not set(HELD_OUT) & set(TRAIN_TRACKS)


@pytest.mark.parametrize("name", NAMED_TRACKS)
def test_named_tracks_are_closed_and_drivable(name):
    t = load_track(name)
    assert t.length > 20
    gap = np.linalg.norm(t.xy[0] - t.xy[-1])
    assert gap < 0.1  # the loop closes within one sample step
    assert 1 / np.max(np.abs(t.curvature)) > t.half_width


@settings(max_examples=80, deadline=None)
@given(frac=st.floats(0, 0.999), d=st.floats(-0.8, 0.8), name=st.sampled_from(NAMED_TRACKS))
def test_frenet_round_trip(frac, d, name):
    t = load_track(name)
    s = frac * t.length
    x, y = t.to_cartesian(s, d)
    s2, d2, _ = t.frenet(float(x), float(y))
    ds = (s2 - s + t.length / 2) % t.length - t.length / 2
    assert abs(ds) < 0.06 and abs(d2 - d) < 0.03


def test_procedural_is_seeded():
    a, b, c = procedural(3), procedural(3), procedural(4)
    assert np.array_equal(a.xy, b.xy)
    assert not np.array_equal(a.xy[:10], c.xy[:10])
    assert load_track("procedural-3").length == a.length


@pytest.mark.parametrize("bad", ["moon", "procedural-x", "", "procedural-"])
def test_unknown_track_names_the_choices(bad):
    with pytest.raises(ConfigError, match="unknown track"):
        load_track(bad)
