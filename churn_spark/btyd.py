"""Buy-till-you-die quantities from the BG/NBD model (Fader, Hardie & Lee 2005, "Counting your customers the easy way").

Why: on a sparse retailer history most customers bought once or twice, so their weekly bucket sequences are almost all
empty and a sequence model sees little. BG/NBD is a probabilistic model of purchase rate and dropout that still carries
signal there: from three numbers per customer it gives the chance the customer is still active and how many purchases
to expect next. Its outputs are meant as static (per-customer, per-snapshot) features of the network.

Per customer, from purchases strictly before the snapshot (all times in ``unit_days``, default 1 = days):

* ``x``   repeat purchases = distinct purchase days - 1 (several orders on one day count once);
* ``t_x`` day of the last purchase - day of the first (0 when ``x == 0``);
* ``T``   snapshot day - day of the first purchase (> 0: the first purchase is strictly before the snapshot).

Assumptions: while active a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha) (alpha is a time,
in the same unit as T); after each *repeat* purchase they drop out for good with probability p ~ Beta(a, b), so a
customer is always alive right after the first purchase and ``prob_alive`` is 1 for ``x == 0`` (the MBG/NBD variant,
not implemented here, also allows leaving after the first purchase). Rates and dropouts are independent across
customers and of each other; there is no seasonality and no spend. Fit the parameters on history before the training
snapshot only, then apply them at every snapshot.

Customers without a purchase before the snapshot have no BG/NBD state and are *not* in the model: do not feed them
as ``x = t_x = T = 0`` (that claims a purchase today). Give them missing values plus a "has purchased" flag, or fixed
fill values documented next to the feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

from .errors import BadInput

LOG_BOUND = 15.0  # log-parameters live in [-15, 15]; an estimate on the bound means the data do not identify it


class BTYDFitError(BadInput, RuntimeError):
    """The BG/NBD maximum likelihood did not converge (exit 2: more or different data is needed, not a retry)."""


@dataclass(frozen=True)
class BGNBDParams:
    """Population parameters: lambda ~ Gamma(shape r, rate alpha [time unit]), p ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


class BGNBDSample(NamedTuple):
    """Simulated customers: calibration statistics, purchases in (T, T + holdout] and whether alive at T."""

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    x_holdout: np.ndarray
    alive: np.ndarray


def rfm_summary(user_ids: ArrayLike, order_days: ArrayLike, snapshot_day: int, unit_days: float = 1.0) -> pd.DataFrame:
    """Per-user ``x, t_x, T`` (index = user id) from long-format ``(user, purchase day)`` pairs; days are integers.

    Orders on or after ``snapshot_day`` are ignored, same-day orders count once; users with no order before the
    snapshot are absent from the result (see the module doc for what to do with them).
    """
    df = pd.DataFrame({"user": np.asarray(user_ids), "day": np.asarray(order_days, dtype=np.int64)})
    df = df[df["day"] < snapshot_day].drop_duplicates()
    g = df.groupby("user", sort=True)["day"].agg(["min", "max", "size"])
    return pd.DataFrame(
        {
            "x": (g["size"] - 1).astype(np.int64),
            "t_x": (g["max"] - g["min"]) / unit_days,
            "T": (snapshot_day - g["min"]) / unit_days,
        },
        index=g.index,
    )


def unique_rfm(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct ``(x, t_x, T)`` rows and their counts, to pass to :func:`fit_bgnbd` as ``weights`` (much faster)."""
    rows, counts = np.unique(np.column_stack([x, t_x, T]).astype(float), axis=0, return_counts=True)
    return rows[:, 0], rows[:, 1], rows[:, 2], counts.astype(float)


def _neg_log_likelihood(
    log_params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, w: np.ndarray, penalizer: float
) -> tuple[float, np.ndarray]:
    """Weighted mean negative log-likelihood (eq. 6 of the paper) and its exact gradient in the log-parameters."""
    r, alpha, a, b = np.exp(log_params)
    rep = x > 0
    bx1 = np.where(rep, b + x - 1, 1.0)  # b + x - 1 only matters for repeat buyers (it can be < 0 when x = 0)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + T)  # alive at T
    a4 = np.where(rep, np.log(a) - np.log(bx1) - (r + x) * np.log(alpha + t_x), -np.inf)  # left after last purchase
    ll = a1 + a2 + np.logaddexp(a3, a4)
    w3 = expit(a3 - a4)  # posterior share of the "alive" term (exactly 1 when x == 0)
    w4 = 1.0 - w3
    g_r = digamma(r + x) - digamma(r) + np.log(alpha) - w3 * np.log(alpha + T) - w4 * np.log(alpha + t_x)
    g_alpha = r / alpha - (r + x) * (w3 / (alpha + T) + w4 / (alpha + t_x))
    g_a = digamma(a + b) - digamma(a + b + x) + w4 / a
    g_b = digamma(b + x) - digamma(a + b + x) - digamma(b) + digamma(a + b) - w4 / bx1
    grad = np.array([g_r, g_alpha, g_a, g_b]) @ w / w.sum() * np.array([r, alpha, a, b])
    value = -(ll @ w) / w.sum() + penalizer * float(log_params @ log_params)
    return float(value), -grad + 2.0 * penalizer * log_params


def fit_bgnbd(
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None, penalizer: float = 0.0
) -> BGNBDParams:
    """Maximum-likelihood BG/NBD parameters (L-BFGS-B over log-parameters, exact gradient).

    ``weights`` are row counts (fit on :func:`unique_rfm` rows for speed) or any non-negative weights.
    ``penalizer`` adds ``penalizer * sum(log(param)**2)`` to the mean negative log-likelihood: it shrinks every
    parameter towards 1 (for ``alpha`` that depends on the time unit) and keeps degenerate data from running off;
    being relative to the *mean* log-likelihood, its pull does not fade with more customers (1e-3 already moves b).
    Raises :class:`BTYDFitError` when the optimiser fails or an estimate ends on the search bound.
    """
    x, t_x, T = (np.asarray(v, dtype=float).ravel() for v in (x, t_x, T))
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float).ravel()
    if not (x.shape == t_x.shape == T.shape == w.shape) or x.size == 0:
        raise ValueError("x, t_x, T (and weights) must be non-empty arrays of the same length")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > T) or np.any(T <= 0) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("need x >= 0, 0 <= t_x <= T, T > 0 and non-negative weights with a positive sum")
    if not np.any((x > 0) & (w > 0)):  # the likelihood is then flat in a, b and maximal as r -> 0: nothing to fit
        raise BTYDFitError("BG/NBD fit did not converge: no repeat purchases, the model is not identified")
    # Start: r = a = b = 1 and alpha from the observed purchase rate (so the start does not depend on the time unit).
    rate = max((x @ w) / (T @ w), 1e-6)
    starts = [np.log([1.0, 1.0 / rate, 1.0, 1.0]), np.zeros(4)]
    bounds = [(-LOG_BOUND, LOG_BOUND)] * 4
    message = ""
    for start in starts:
        res = minimize(
            _neg_log_likelihood, start, args=(x, t_x, T, w, penalizer), jac=True, method="L-BFGS-B", bounds=bounds,
            options={"maxiter": 2000, "gtol": 1e-9, "ftol": 1e-13},
        )  # fmt: skip
        on_bound = np.any(np.abs(res.x) > LOG_BOUND - 1e-3)
        if res.success and np.isfinite(res.fun) and not on_bound:
            return BGNBDParams(*(float(v) for v in np.exp(res.x)))
        message = f"{res.message} (log-params {np.round(res.x, 3).tolist()}, on bound: {bool(on_bound)})"
    raise BTYDFitError(f"BG/NBD fit did not converge: {message}; too few repeat buyers? try penalizer=1e-3 or more")


def prob_alive(params: BGNBDParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> np.ndarray:
    """P(still active at T | x, t_x, T) (eq. 11 of the paper); exactly 1 for ``x == 0`` (no dropout before a repeat)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, T = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x, t_x, T)))
    rep = x > 0
    # 1 / (1 + a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x)), as a logistic of the log-odds so large x cannot overflow
    log_odds = np.log(a) - np.log(np.where(rep, b + x - 1, 1.0)) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return np.where(rep, expit(-log_odds), 1.0)


def expected_purchases(params: BGNBDParams, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> np.ndarray:
    """E[purchases in (T, T + t] | x, t_x, T] (eq. 10 of the paper), in the same time unit as T.

    Eq. 10 multiplies ((alpha+T)/(alpha+T+t))^(r+x), which underflows for large x, by 2F1(r+x, b+x; a+b+x-1; z),
    which overflows (z = t/(alpha+T+t) < 1). Euler's transformation folds them into
    (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z), whose parameters do not grow with x. a == 1 is a removable singularity
    of (a+b+x-1)/(a-1) * (1 - ...): a within 1e-7 of 1 is moved to 1 +- 1e-7 (an error far below the model's).
    """
    r, alpha, b = params.r, params.alpha, params.b
    a = params.a if abs(params.a - 1.0) >= 1e-7 else 1.0 + np.copysign(1e-7, params.a - 1.0)
    t, x, t_x, T = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (t, x, t_x, T)))
    c = a + b + x - 1
    z = t / (alpha + T + t)
    h = np.exp((a - 1) * np.log1p(-z)) * hyp2f1(a + b - 1 - r, a - 1, c, z)
    return c / (a - 1) * (1.0 - h) * prob_alive(params, x, t_x, T)


def simulate_bgnbd(
    params: BGNBDParams, n: int, T: float | ArrayLike, seed: int = 0, holdout: float = 0.0
) -> BGNBDSample:
    """Draw ``n`` customers from the BG/NBD process, each with first purchase at time 0 and observed up to ``T``.

    lambda ~ Gamma(r, 1/alpha), p ~ Beta(a, b); purchases arrive as a Poisson(lambda) process and after each repeat
    purchase the customer leaves with probability p. Purchases in (T, T + holdout] are counted separately, so tests
    can compare :func:`expected_purchases` with what the customers then did.
    """
    rng = np.random.default_rng(seed)
    T = np.broadcast_to(np.asarray(T, dtype=float), (n,)).copy()
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    x, x_hold = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    t_x, now = np.zeros(n), np.zeros(n)
    alive_at_T = np.ones(n, dtype=bool)
    active = np.arange(n)  # customers still alive and not yet past T + holdout
    while active.size:
        now[active] += rng.exponential(1.0 / np.maximum(lam[active], 1e-300))
        in_cal = now[active] < T[active]
        in_hold = ~in_cal & (now[active] < T[active] + holdout)
        x[active[in_cal]] += 1
        t_x[active[in_cal]] = now[active[in_cal]]
        x_hold[active[in_hold]] += 1
        leaves = (in_cal | in_hold) & (rng.random(active.size) < p[active])
        alive_at_T[active[leaves & in_cal]] = False
        active = active[(in_cal | in_hold) & ~leaves]
    return BGNBDSample(x, t_x, T, x_hold, alive_at_T)
