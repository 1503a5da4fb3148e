"""Failure-probability estimators against a problem whose p is known exactly: agreement within their
intervals, the episodes they save over plain MC, unbiasedness and coverage of importance sampling over
proposals, errored episodes, determinism."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from scenarios.estimate import (
    Estimate,
    EstimationError,
    cross_entropy_is,
    importance_estimate,
    known_probability_case,
    log_nominal,
    monte_carlo,
    naive_mc_episodes,
    subset_simulation,
)

BETA_1E4 = float(stats.norm.isf(1e-4))  # 3.719
BETA_1E5 = float(stats.norm.isf(1e-5))  # 4.265


class Recorder:
    """An Evaluate that remembers every batch it was asked and every robustness it answered."""

    def __init__(self, g, errored=None):
        self.g, self.errored = g, errored
        self.batches: list[int] = []
        self.answers: list[np.ndarray] = []

    def __call__(self, z):
        r = self.g(z)
        if self.errored is not None:
            r = np.where(self.errored(z), np.nan, r)
        self.batches.append(len(z))
        self.answers.append(r)
        return r

    @property
    def all(self) -> np.ndarray:
        return np.concatenate(self.answers)


def estimators(case):
    """Each estimator at a size fit for tests, as f(evaluate, rng, **extra) -> Estimate."""
    return {
        "MC": lambda ev, rng, **kw: monte_carlo(ev, case.d, 20_000, rng, **{"batch": 5000, **kw}),
        "CE-IS": lambda ev, rng, **kw: cross_entropy_is(ev, case.d, rng, n_per_stage=500, n_final=1000, **kw),
        "SuS": lambda ev, rng, **kw: subset_simulation(ev, case.d, rng, n_per_level=1000, **kw),
    }


def test_known_case_is_exact():
    case = known_probability_case(3, 2.5)
    assert case.p == pytest.approx(stats.norm.cdf(-2.5), rel=1e-12)
    assert case(case.design_point[None])[0] == pytest.approx(0.0, abs=1e-12)  # on the boundary
    assert case.design_loglik == pytest.approx(log_nominal(case.design_point), rel=1e-12)
    # p does not depend on d: sum(z)/sqrt(d) is N(0, 1) in any dimension.
    z = np.random.default_rng(0).standard_normal((200_000, 7))
    assert np.mean(known_probability_case(7, 1.0)(z) < 0) == pytest.approx(stats.norm.sf(1.0), abs=0.003)


def test_naive_mc_episodes_is_the_binomial_formula():
    assert naive_mc_episodes(1e-4, 0.3) == math.ceil(1.959963984540054 ** 2 * (1 - 1e-4) / (0.09 * 1e-4))
    assert naive_mc_episodes(1e-5, 0.3) > 10 * naive_mc_episodes(1e-4, 0.3) - 10
    # The count it gives is what MC then achieves: a relative half-width near 0.2 at p = 0.05.
    case = known_probability_case(2, float(stats.norm.isf(0.05)))
    n = naive_mc_episodes(0.05, 0.2)
    est = monte_carlo(case, 2, n, np.random.default_rng(3))
    assert 0.15 < est.rel_error < 0.25
    with pytest.raises(ValueError, match="0 < p < 1"):
        naive_mc_episodes(0.0, 0.3)


@pytest.mark.parametrize("name", ["MC", "CE-IS", "SuS"])
def test_estimators_agree_with_exact_p_at_1e_2(name):
    case = known_probability_case(2, 2.33)
    est = estimators(case)[name](case, np.random.default_rng(11))
    print(f"\np_exact = {case.p:.3e}: {est.summary()}")
    assert est.method == name
    assert est.ci_low <= case.p <= est.ci_high
    assert est.rel_error < 0.5  # an interval that says something, not [0, 1]


@pytest.mark.parametrize("d", [2, 8])
@pytest.mark.parametrize("beta", [BETA_1E4, BETA_1E5], ids=["p1e-4", "p1e-5"])
def test_cross_entropy_is_beats_naive_mc_by_100x_on_rare_events(d, beta):
    case = known_probability_case(d, beta)
    est = cross_entropy_is(case, d, np.random.default_rng(5), n_per_stage=500, n_final=1000)
    naive = naive_mc_episodes(case.p, 0.3)
    print(f"\nd = {d}, p_exact = {case.p:.3e}: {est.summary()}; error {est.p / case.p - 1:+.1%}; plain MC needs "
          f"{naive:,} episodes for +-30%, {naive / est.episodes:.0f}x more; stages {est.details['stages']}, "
          f"MC-equivalent {est.details['mc_equivalent']:,.0f}")
    assert abs(est.p / case.p - 1) <= 0.3
    assert 100 * est.episodes <= naive
    assert est.details["converged"]
    assert est.failures > 100  # the fitted proposal puts many samples in the failure region


@pytest.mark.parametrize("d", [2, 8])
@pytest.mark.parametrize("beta", [BETA_1E4, BETA_1E5], ids=["p1e-4", "p1e-5"])
def test_subset_simulation_covers_rare_p(d, beta):
    case = known_probability_case(d, beta)
    est = subset_simulation(case, d, np.random.default_rng(5), n_per_level=1000)
    print(f"\nd = {d}, p_exact = {case.p:.3e}: {est.summary()}; error {est.p / case.p - 1:+.1%}; levels "
          f"{est.details['levels']}, CoV {est.details['cov']:.2f} (levels independent: "
          f"{est.details['cov_independent']:.2f}), acceptance {est.details['acceptance']:.2f}")
    assert est.ci_low <= case.p <= est.ci_high
    assert est.details["converged"]
    assert est.details["levels"] in (round(-math.log10(case.p)), round(-math.log10(case.p)) + 1)  # p0 = 0.1: a level a decade
    assert 100 * est.episodes <= naive_mc_episodes(case.p, 0.3)


CASE_IS = known_probability_case(2, 3.0)
ALONG = np.array([1.0, 1.0]) / math.sqrt(2)  # the failure direction
ACROSS = np.array([1.0, -1.0]) / math.sqrt(2)


@settings(max_examples=8, deadline=None)
@given(shift=st.floats(2.5, 3.5), offset=st.floats(-0.5, 0.5), sigma=st.tuples(st.floats(1.0, 1.5), st.floats(1.0, 1.5)),
       seed=st.integers(0, 2**32 - 1))
def test_importance_estimate_is_unbiased_and_covers_for_any_sane_proposal(shift, offset, sigma, seed):
    """A proposal centred near the boundary with sigma_i >= 1 (the weights' higher moments finite): over 200
    repetitions the mean is within 4 standard errors of p and the 95% interval covers p >= 88% of the time.
    (With sigma_i = 0.8 coverage measured 0.84: the normal interval is asymptotic, as the docstring says.)"""
    mu = shift * ALONG + offset * ACROSS
    rng = np.random.default_rng(seed)
    runs = [importance_estimate(CASE_IS, rng, mu, np.array(sigma), 1000, 0.95) for _ in range(200)]
    ps = np.array([e.p for e in runs])
    standard_error = ps.std(ddof=1) / math.sqrt(len(ps))
    assert abs(ps.mean() - CASE_IS.p) <= 4 * standard_error
    assert np.mean([e.ci_low <= CASE_IS.p <= e.ci_high for e in runs]) >= 0.88
    assert all(e.failures > 0 and 0 < e.ess <= 1000 for e in runs)


def test_cross_entropy_final_stage_is_importance_estimate_on_fresh_samples():
    """CE-IS's p is exactly importance_estimate's on the fitted proposal with the generator's state after fitting."""
    case = known_probability_case(2, 3.0)
    est = cross_entropy_is(case, 2, np.random.default_rng(9), n_per_stage=400, n_final=800)
    fitting = est.details["fitting_episodes"]
    assert est.episodes == fitting + 800 and fitting == 400 * est.details["stages"]
    rng = np.random.default_rng(9)
    for _ in range(est.details["stages"]):  # replay the fitting stages' draws
        rng.standard_normal((400, 2))
    again = importance_estimate(case, rng, np.array(est.details["mu"]), np.array(est.details["sigma"]), 800,
                                batch=400)
    assert (again.p, again.ci_low, again.ci_high, again.ess) == (est.p, est.ci_low, est.ci_high, est.ess)


def test_errored_episodes_are_counted_never_failures():
    """nan where z_0 > 0.5: a third of the space, failures included; every estimator drops and counts them."""
    case = known_probability_case(2, 2.33)
    for name, run in estimators(case).items():
        ev = Recorder(case, errored=lambda z: z[:, 0] > 0.5)
        est = run(ev, np.random.default_rng(2))
        answers = ev.all
        assert est.episodes == len(answers), name
        assert est.errored == int(np.isnan(answers).sum()) > 0, name
        if name == "MC":
            assert est.failures == int((answers < 0).sum())
            assert est.p == est.failures / (len(answers) - est.errored)
            # Conditioning on z_0 <= 0.5 lowers p: errored failures were not counted as failures.
            assert est.p < case.p


def test_all_errored_raises():
    with pytest.raises(EstimationError, match="errored"):
        monte_carlo(lambda z: np.full(len(z), np.nan), 2, 100, np.random.default_rng(0))
    with pytest.raises(EstimationError, match="errors"):
        cross_entropy_is(lambda z: np.full(len(z), np.nan), 2, np.random.default_rng(0), n_per_stage=50)


def test_a_wrong_evaluate_is_named():
    with pytest.raises(ValueError, match="one robustness per row"):
        monte_carlo(lambda z: np.zeros((len(z), 2)), 2, 10, np.random.default_rng(0))


@pytest.mark.parametrize("name", ["MC", "CE-IS", "SuS"])
def test_same_seed_same_estimate(name):
    case = known_probability_case(3, 2.33)
    run = estimators(case)[name]
    a, b = run(case, np.random.default_rng(4)), run(case, np.random.default_rng(4))
    assert a == b
    assert run(case, np.random.default_rng(5)).p != a.p


@pytest.mark.parametrize("name", ["MC", "CE-IS", "SuS"])
def test_progress_and_history_track_the_episodes(name):
    case = known_probability_case(2, 2.33)
    calls: list[tuple[int, int]] = []
    ev = Recorder(case)
    est = estimators(case)[name](ev, np.random.default_rng(1), batch=250, progress=lambda done, planned: calls.append(
        (done, planned)))
    done = [c[0] for c in calls]
    assert done == sorted(done) and done[-1] == est.episodes == sum(ev.batches)
    assert all(c[0] <= c[1] for c in calls)
    assert max(ev.batches) <= 250
    episodes = [h[0] for h in est.history]
    assert episodes == sorted(episodes) and episodes[-1] == est.episodes
    assert all(low <= p <= high for _, p, low, high in est.history)
    assert est.history[-1][1:] == (est.p, est.ci_low, est.ci_high)


def test_summary_and_validation():
    est = Estimate("CE-IS", 2.3e-4, 1.9e-4, 2.7e-4, 0.95, 1200, 31, 340.2, 0.17, 0)
    assert est.summary() == "p = 2.3e-4 [1.9e-4, 2.7e-4] 95% (CE-IS, 1,200 episodes, ESS 340)"
    assert "3 errored" in dataclasses.replace(est, errored=3).summary()
    with pytest.raises(ValueError, match="ci_low <= p"):
        dataclasses.replace(est, ci_low=3e-4)
    with pytest.raises(ValueError, match="confidence"):
        dataclasses.replace(est, confidence=95)
    with pytest.raises(ValueError, match="episodes"):
        dataclasses.replace(est, episodes=-1)


def test_no_failure_seen_claims_nothing_tight():
    """Zero failures: MC's exact interval still bounds p; IS says [0, 1] rather than a fake [0, 0]."""
    case = known_probability_case(2, 6.0)
    mc = monte_carlo(case, 2, 1000, np.random.default_rng(0))
    assert (mc.p, mc.ci_low) == (0.0, 0.0) and 0.003 < mc.ci_high < 0.004  # about 3.7 / n
    assert mc.rel_error == math.inf
    is_ = importance_estimate(case, np.random.default_rng(0), np.zeros(2), np.ones(2), 500)
    assert (is_.p, is_.ci_low, is_.ci_high, is_.failures) == (0.0, 0.0, 1.0, 0)
