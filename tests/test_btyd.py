"""BG/NBD (churn_spark.btyd): parameter recovery, weighted fit, RFM statistics, published and numeric values."""

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import approx_fprime
from scipy.special import betaln

from churn_spark.btyd import (
    BGNBDParams,
    BTYDFitError,
    _neg_log_likelihood,
    expected_purchases,
    fit_bgnbd,
    prob_alive,
    rfm_summary,
    simulate_bgnbd,
    unique_rfm,
)

TRUE = BGNBDParams(r=0.25, alpha=4.0, a=0.8, b=2.5)  # weeks
CDNOW = BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426)  # the paper's estimates, weeks
N = 50_000


@pytest.fixture(scope="module")
def sample():
    """50k customers acquired over a year: observed 26..78 weeks after their first purchase, then 52 weeks more."""
    T = np.random.default_rng(7).uniform(26, 78, N)
    return simulate_bgnbd(TRUE, N, T, seed=11, holdout=52.0)


@pytest.fixture(scope="module")
def fitted(sample):
    return fit_bgnbd(sample.x, sample.t_x, sample.T)


def test_fit_recovers_parameters(fitted):
    # Relative tolerances ~4 sampling SDs at n = 50k (SDs over seeds: r 1%, alpha 1.5%, a 4%, b 5.5%).
    for name, tol in [("r", 0.05), ("alpha", 0.07), ("a", 0.16), ("b", 0.22)]:
        got, want = getattr(fitted, name), getattr(TRUE, name)
        assert abs(got / want - 1) < tol, (name, got, want)


def test_fitted_model_predicts_holdout_purchases(sample, fitted):
    expected = expected_purchases(fitted, 52.0, sample.x, sample.t_x, sample.T)
    assert abs(expected.sum() / sample.x_holdout.sum() - 1) < 0.05
    for group in [sample.x == 0, (sample.x >= 1) & (sample.x <= 3), sample.x >= 4]:
        assert abs(expected[group].sum() / sample.x_holdout[group].sum() - 1) < 0.1


def test_prob_alive_is_calibrated_against_simulation(sample):
    pa = prob_alive(TRUE, sample.x, sample.t_x, sample.T)
    assert np.all(pa[sample.x == 0] == 1.0) and np.all(sample.alive[sample.x == 0])
    rep = sample.x > 0
    edges = np.quantile(pa[rep], [0, 0.25, 0.5, 0.75, 1])
    for lo, hi in zip(edges[:-1], edges[1:]):
        group = rep & (pa >= lo) & (pa <= hi)
        assert abs(pa[group].mean() - sample.alive[group].mean()) < 0.03


def test_gradient_matches_finite_differences(sample):
    x, t_x, T, w = unique_rfm(sample.x[:2000], np.round(sample.t_x[:2000]), np.round(sample.T[:2000]))
    log_params = np.log([0.4, 3.0, 1.3, 1.7])
    _, grad = _neg_log_likelihood(log_params, x, t_x, T, w, 0.01)
    numeric = approx_fprime(log_params, lambda v: _neg_log_likelihood(v, x, t_x, T, w, 0.01)[0], 1e-7)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-7)


def test_weighted_fit_equals_fit_on_expanded_rows(sample):
    # Whole-week statistics repeat a lot: the unique rows with counts must give the same maximum.
    x, t_x, T = sample.x[:10_000], np.floor(sample.t_x[:10_000]), np.ceil(sample.T[:10_000])
    ux, ut, uT, w = unique_rfm(x, t_x, T)
    assert len(ux) < len(x) / 2
    full, weighted = fit_bgnbd(x, t_x, T), fit_bgnbd(ux, ut, uT, weights=w)
    for name in ["r", "alpha", "a", "b"]:
        assert getattr(weighted, name) == pytest.approx(getattr(full, name), rel=1e-4)


def test_fit_fails_clearly_without_repeat_buyers():
    with pytest.raises(BTYDFitError, match="did not converge"):
        fit_bgnbd(np.zeros(100), np.zeros(100), np.full(100, 30.0))


def test_rfm_summary_hand_made():
    users = ["a", "a", "a", "a", "a", "a", "b", "c", "c"]
    days = [100, 100, 103, 110, 120, 125, 115, 120, 130]  # "a": same-day duplicate, orders on/after the snapshot
    out = rfm_summary(users, days, snapshot_day=120)
    assert list(out.index) == ["a", "b"]  # "c" has no order before the snapshot
    assert out.loc["a"].tolist() == [2, 10, 20] and out.loc["b"].tolist() == [0, 0, 5]
    weeks = rfm_summary(users, days, snapshot_day=120, unit_days=7)
    assert weeks.loc["a", "x"] == 2 and weeks.loc["a", "t_x"] == pytest.approx(10 / 7)
    assert weeks.loc["a", "T"] == pytest.approx(20 / 7)


def test_prob_alive_and_expectation_shapes():
    assert prob_alive(CDNOW, 0, 0, 52) == 1.0
    recent, lapsed = prob_alive(CDNOW, [3, 3], [30, 5], [40, 40])
    assert lapsed < recent < 1.0
    t = np.array([0.0, 1.0, 5.0, 20.0, 52.0, 200.0])
    for x, t_x, T in [(0, 0, 30), (2, 30.43, 38.86), (40, 50, 52)]:
        e = expected_purchases(CDNOW, t, x, t_x, T)
        assert e[0] == 0.0 and np.all(np.diff(e) > 0)


def test_cdnow_published_conditional_expectation():
    # Fader-Hardie-Lee CDNOW example (also lifetimes' test): x=2, t_x=30.43, T=38.86 weeks -> 1.226 in the next 39 weeks
    assert expected_purchases(CDNOW, 39, 2, 30.43, 38.86) == pytest.approx(1.226, abs=1e-2)


@pytest.mark.parametrize("x,t_x,T,t", [(0, 0, 10, 39), (2, 30.43, 38.86, 39), (7, 20, 60, 100), (300, 299, 300, 1000)])
def test_eq10_matches_numeric_integration(x, t_x, T, t):
    # Independent route: if alive, p ~ Beta(a, b+x) and lambda ~ Gamma(r+x, alpha+T) a posteriori, and
    # E[X(t) | lambda, p] = (1 - exp(-lambda p t)) / p; integrate lambda in closed form and p numerically.
    r, alpha, a, b = CDNOW.r, CDNOW.alpha, CDNOW.a, CDNOW.b

    def integrand(p):
        density = np.exp((a - 1) * np.log(p) + (b + x - 1) * np.log1p(-p) - betaln(a, b + x))
        return density / p * -np.expm1((r + x) * (np.log(alpha + T) - np.log(alpha + T + p * t)))

    given_alive = quad(integrand, 0, 1, limit=200, epsabs=0, epsrel=1e-10)[0]
    want = prob_alive(CDNOW, x, t_x, T) * given_alive
    assert expected_purchases(CDNOW, t, x, t_x, T) == pytest.approx(want, rel=1e-7)
