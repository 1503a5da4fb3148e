"""Failure search on the analytic problem: budgets kept, seeds replayed, failures found, the most likely
failure found near the exact one, errored episodes returned and never learned from."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenarios.estimate import known_probability_case, log_nominal
from scenarios.search import SAMPLERS, Sample, errored, failures, most_likely, search

GUIDED = ("cross_entropy", "tpe", "cmaes", "most_likely_failure")
UNGUIDED = ("random", "sobol", "halton")


class Recorder:
    """An Evaluate that remembers the size of every batch and, optionally, errors where `errored(z)`."""

    def __init__(self, g, errored=None):
        self.g, self.errored = g, errored
        self.batches: list[int] = []
        self.nans = 0

    def __call__(self, z):
        self.batches.append(len(z))
        r = self.g(z)
        if self.errored is not None:
            r = np.where(self.errored(z), np.nan, r)
        self.nans += int(np.isnan(r).sum())
        return r


def test_samplers_are_the_documented_ones():
    assert set(SAMPLERS) == set(GUIDED) | set(UNGUIDED)


def test_unknown_method_or_option_is_named():
    case = known_probability_case(2, 3.0)
    with pytest.raises(ValueError, match="unknown search method 'annealing'.*random.*most_likely_failure"):
        search(case, 2, np.random.default_rng(0), "annealing", 10, 5)
    with pytest.raises(ValueError, match="no option elite_fracton.*elite_fraction"):
        search(case, 2, np.random.default_rng(0), "cross_entropy", 10, 5, elite_fracton=0.2)
    with pytest.raises(ValueError, match="elite_fraction"):
        search(case, 2, np.random.default_rng(0), "cross_entropy", 10, 5, elite_fraction=1.5)


@pytest.mark.parametrize("method", SAMPLERS)
def test_budget_batches_and_records(method):
    case = known_probability_case(3, 2.0)
    ev = Recorder(case)
    progress: list[tuple[int, int]] = []
    samples = search(ev, 3, np.random.default_rng(0), method, 47, 10, progress=lambda *a: progress.append(a))
    assert len(samples) == sum(ev.batches) == 47
    assert ev.batches == [10, 10, 10, 10, 7]
    assert progress == [(10, 47), (20, 47), (30, 47), (40, 47), (47, 47)]
    assert [s.index for s in samples] == list(range(47))
    assert [s.stage for s in samples] == [i // 10 for i in range(47)]
    assert {s.sampler for s in samples} == {method}
    z = np.array([s.z for s in samples])
    assert np.allclose([s.loglik for s in samples], log_nominal(z))
    assert np.allclose([s.robustness for s in samples], case(z))


@settings(max_examples=25, deadline=None)
@given(method=st.sampled_from(["random", "sobol", "halton", "cross_entropy", "most_likely_failure"]),
       budget=st.integers(0, 60), batch=st.integers(1, 25), seed=st.integers(0, 2**32 - 1))
def test_never_more_than_the_budget(method, budget, batch, seed):
    ev = Recorder(known_probability_case(2, 1.0))
    samples = search(ev, 2, np.random.default_rng(seed), method, budget, batch)
    assert len(samples) == sum(ev.batches) == budget
    assert all(0 < b <= batch for b in ev.batches)


@pytest.mark.parametrize("method", SAMPLERS)
def test_same_seed_same_samples(method):
    case = known_probability_case(2, 2.0)
    a = search(case, 2, np.random.default_rng(7), method, 40, 10)
    b = search(case, 2, np.random.default_rng(7), method, 40, 10)
    assert a == b
    assert search(case, 2, np.random.default_rng(8), method, 40, 10) != a


@pytest.mark.parametrize("method", GUIDED)
def test_guided_methods_find_failures_at_beta_3(method):
    """p = 1.3e-3: a few hundred nominal samples would most likely see none."""
    case = known_probability_case(2, 3.0)
    samples = search(case, 2, np.random.default_rng(0), method, 300, 30)
    found = failures(samples)
    print(f"\n{method}: {len(found)} failures in 300, lowest robustness {min(s.robustness for s in samples):.2f}")
    assert len(found) >= 10
    assert all(s.robustness < 0 for s in found)


@pytest.mark.parametrize("method", UNGUIDED)
def test_unguided_methods_find_failures_at_beta_2(method):
    """Nominal and low-discrepancy samples do not adapt: at beta = 3 (p = 1.3e-3) 300 of them expect 0.4 failures,
    so they are held to beta = 2 (p = 0.023, 6.8 expected)."""
    case = known_probability_case(2, 2.0)
    found = failures(search(case, 2, np.random.default_rng(0), method, 300, 30))
    print(f"\n{method}: {len(found)} failures in 300")
    assert len(found) >= 2


def test_cross_entropy_goes_lower_than_random():
    case = known_probability_case(2, 3.0)
    lowest = {m: min(s.robustness for s in search(case, 2, np.random.default_rng(0), m, 300, 30))
              for m in ("random", "cross_entropy")}
    print(f"\nlowest robustness in 300: {lowest}")
    assert lowest["cross_entropy"] < lowest["random"] - 1.0


def test_most_likely_failure_finds_the_design_point():
    """Exact answer: z* = beta/sqrt(d) * 1 with loglik -d/2 log(2 pi) - beta^2/2."""
    case = known_probability_case(2, 3.0)
    best = most_likely(search(case, 2, np.random.default_rng(0), "most_likely_failure", 600, 50))
    print(f"\nbest failure loglik {best.loglik:.3f} vs exact {case.design_loglik:.3f}, z {np.round(best.z, 3)} vs "
          f"{np.round(case.design_point, 3)}")
    assert best.robustness < 0
    assert case.design_loglik - 0.1 < best.loglik <= case.design_loglik + 1e-12  # a likelihood ratio > 0.9
    assert np.linalg.norm(np.array(best.z) - case.design_point) < 0.5


def test_most_likely_failure_beats_random_search():
    case = known_probability_case(4, 2.5)
    best = {m: most_likely(search(case, 4, np.random.default_rng(1), m, 600, 50))
            for m in ("random", "most_likely_failure")}
    gaps = {m: case.design_loglik - s.loglik for m, s in best.items()}
    print(f"\nloglik below the exact most likely failure: {gaps}")
    assert 0 <= gaps["most_likely_failure"] < 0.2
    assert gaps["most_likely_failure"] < gaps["random"] / 3


@pytest.mark.parametrize("method", SAMPLERS)
def test_errored_episodes_are_returned_not_failures(method):
    """nan where z_0 > 1 (beyond the failure boundary too): returned with nan robustness, counted by
    `errored`, never a failure, and the adaptive samplers keep working around them."""
    case = known_probability_case(2, 2.0)
    ev = Recorder(case, errored=lambda z: z[:, 0] > 1.0)
    samples = search(ev, 2, np.random.default_rng(0), method, 200, 25)
    assert len(samples) == 200
    assert errored(samples) == ev.nans > 0
    assert all(not math.isnan(s.robustness) for s in failures(samples))
    assert all(s.z[0] <= 1.0 for s in failures(samples))
    if method in GUIDED:
        assert failures(samples)  # still found failures, with z_0 <= 1 (z_1 >= 1.83)


def test_most_likely_picks_the_likeliest_failure():
    def sample(i, robustness, loglik):
        return Sample(i, (0.0,), robustness, loglik, "random", 0)

    assert most_likely([]) is None
    assert most_likely([sample(0, 0.5, -1.0), sample(1, float("nan"), -0.5)]) is None
    pool = [sample(0, -0.1, -3.0), sample(1, 0.2, -1.0), sample(2, -2.0, -2.5), sample(3, float("nan"), -0.1),
            sample(4, -0.3, -2.5)]
    assert most_likely(pool).index == 2
    assert [s.index for s in failures(pool)] == [0, 2, 4]


def test_sample_rejects_non_finite_points():
    with pytest.raises(ValueError, match="non-finite"):
        Sample(0, (float("inf"),), 0.0, 0.0, "random", 0)
    with pytest.raises(ValueError, match=">= 0"):
        Sample(-1, (0.0,), 0.0, 0.0, "random", 0)
