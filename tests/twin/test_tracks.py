"""Tracks: named and procedural, Frenet coordinates round-trip, bad names fail clearly."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.car.tracks import HELD_OUT, NAMED_TRACKS, TRAIN_TRACKS, at_width, at_widths, load_track, procedural, training_tracks
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


@pytest.mark.parametrize("name", ["oval", "sprint", "procedural-3"])
def test_a_track_at_another_width_keeps_its_centre_line_and_moves_its_walls(name):
    own, wide = load_track(name), load_track(at_width(name, 2.3))
    assert wide.name == f"{name}@2.3" and wide.half_width == pytest.approx(1.15)
    assert np.array_equal(own.xy, wide.xy) and own.length == wide.length
    left, _ = wide.boundaries()
    own_left, _ = own.boundaries()
    assert np.allclose(np.linalg.norm(left - own_left, axis=1), 1.15 - own.half_width)


def test_widths_a_track_cannot_take_are_left_out_and_each_half_width_is_exact_to_two_decimals():
    names = at_widths(("oval", "chicane"), 1.6, 2.4)
    ovals = [n for n in names if n.startswith("oval@")]
    chicanes = [n for n in names if n.startswith("chicane@")]
    assert len(ovals) == 41  # 1.60, 1.62, ..., 2.40
    assert 0 < len(chicanes) < len(ovals)  # its tight curves take no more than ~2.05 m
    with pytest.raises(ConfigError, match="tightest radius"):
        load_track(at_width("chicane", 2.4))
    for n in names:
        hw = load_track(n).half_width
        assert abs(hw * 100 - round(hw * 100)) < 1e-9
    assert training_tracks() == TRAIN_TRACKS
    assert set(training_tracks((1.6, 2.4))) == set(at_widths(TRAIN_TRACKS, 1.6, 2.4))


@pytest.mark.parametrize("bad, says", [("oval@wide", "must be a number"), ("moon@1.8", "unknown track"),
                                       ("oval@0.5", "outside"), ("oval@", "must be a number")])
def test_a_bad_width_names_what_to_write(bad, says):
    with pytest.raises(ConfigError, match=says):
        load_track(bad)


@pytest.mark.parametrize("widths, says", [((1.6,), "two numbers"), ((2.4, 1.6), "low <= high"),
                                          ((0.5, 1.0), "low <= high"), ((1.6, 2.0, 2.4), "two numbers")])
def test_a_bad_width_range_is_refused(widths, says):
    with pytest.raises(ConfigError, match=says):
        training_tracks(widths)
