"""The generated lakes' ground truth: each user's true probability of no purchase in a label window.

Why: a model's ROC-AUC on the demo lake only means something next to what is reachable there. The generator draws
every order from hidden per-user parameters (purchase rate, when a decline starts and how long it lasts, the
season), so the probability that a user makes no purchase in ``[start, start + days)`` *given those parameters* is
known exactly. Ranking users by it is the best any model can do, because the lake's observable history and the
future orders are independent draws given the parameters (:func:`churn_spark.generator._u` hashes separate streams);
it even knows a decline that starts inside the window, which no history can show. Its ROC-AUC on a run's test rows
is therefore an upper bound (the "ceiling") for every model of that run, reported by ``benchmarks/bench_quality.py``.

The sparse profile's truth (:func:`sparse_true_no_purchase`) follows the same idea for its buy-till-you-die
process, from :func:`churn_spark.generator_sparse.simulate`'s hidden columns, in numpy like that generator.

The demo's hidden rows come from Spark with the generator's own expressions (:func:`churn_spark.generator.user_weeks`,
:func:`churn_spark.generator.order_mean`); only the count distribution's zero probability, which needs the normal
CDF that Spark SQL lacks, is evaluated in numpy on the few (user, week) rows that overlap the window.
"""

from __future__ import annotations

import calendar
import datetime as dt
from typing import Sequence

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from scipy.stats import norm

from .generator import CANCEL_P, REFUND_P, LakeSpec, order_mean, user_weeks, users_frame
from .generator_sparse import SparseSpec, purchase_lift, simulate

MAX_ORDERS_PER_WEEK = 80  # the rounded normal's support is summed up to here (means stay far below)


def no_kept_order(mean: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """P(none of a week's orders is kept) when each is kept independently with probability ``keep`` and the count
    follows :func:`churn_spark.generator._count`: two Bernoulli(mean/2) below mean 2, else
    max(0, round(mean + sqrt(mean) * Z)). That is E[(1 - keep)^n] over the count n."""
    mean, keep = np.asarray(mean, float), np.asarray(keep, float)
    small = (1.0 - keep * mean / 2.0) ** 2
    k = np.arange(MAX_ORDERS_PER_WEEK + 1)[None, :]
    m, sd = np.maximum(mean, 2.0)[:, None], np.sqrt(np.maximum(mean, 2.0))[:, None]
    upper = norm.cdf((k + 0.5 - m) / sd)
    p_k = np.diff(np.concatenate([np.zeros_like(m), upper], axis=1), axis=1)  # P(n = k); P(0) includes n < 0
    big = (p_k * (1.0 - keep[:, None]) ** k).sum(axis=1)
    return np.where(mean < 2.0, small, big)


def true_no_purchase(
    spark: SparkSession,
    spec: LakeSpec,
    start: dt.date,
    days: int,
    purchase_statuses: Sequence[str] = ("completed",),
) -> pd.DataFrame:
    """``user_id`` and ``p_no_purchase``: each user's true probability of no order with a purchase status in
    ``[start, start + days)``, given the generator's hidden parameters (a user who does not exist yet can still
    sign up inside the window; one with no week in it gets 1)."""
    end = start + dt.timedelta(days=days)
    ws = F.col("week_start")
    overlap = F.datediff(F.least(F.date_add(ws, 7), F.lit(end)), F.greatest(ws, F.lit(start)))
    rows = (
        user_weeks(spark, spec, users_frame(spark, spec))
        .where((ws < F.lit(end)) & (F.date_add(ws, 7) > F.lit(start)))
        .select(F.col("uid").alias("user_id"), order_mean().alias("mean"), (overlap / 7.0).alias("inside"), "declining")
        .toPandas()
    )
    statuses = set(purchase_statuses)
    declining = rows["declining"].to_numpy(bool)
    refund = np.where(declining, REFUND_P[True], REFUND_P[False])
    status_share = (
        ("cancelled" in statuses) * CANCEL_P
        + ("refunded" in statuses) * refund
        + ("completed" in statuses) * (1.0 - CANCEL_P - refund)
    )
    # an order's timestamp is uniform in its week, independent of its status: kept = inside the window x purchase
    rows["p"] = no_kept_order(rows["mean"].to_numpy(float), rows["inside"].to_numpy(float) * status_share)
    per_user = rows.groupby("user_id")["p"].prod()
    users = pd.Index(np.arange(spec.users), name="user_id")
    return per_user.reindex(users, fill_value=1.0).rename("p_no_purchase").reset_index()


def sparse_true_no_purchase(spec: SparseSpec, start: dt.date, days: int) -> pd.DataFrame:
    """``user_id`` and ``p_no_purchase`` for every customer with an order before ``start``: the true probability of
    no completed order in ``[start, start + days)`` given their hidden rate, dropout probability and whether they
    were still alive after their last order before ``start``.

    An alive customer's orders arrive as a Poisson process of rate ``rate x lift(day)`` (memoryless, so the time
    before ``start`` does not matter). Each order is completed with probability q (the label is then 0); otherwise
    the customer stays with probability s = (1 - dropout) x bad_order_stay and the process goes on, or leaves. The
    arrivals that end the story (completed, or bad and gone) are a Poisson process with mass ``m = L (1 - (1-q) s)``
    over the window (``L`` = rate x the lift summed over its days), so
    P(no purchase) = exp(-m) + (1 - exp(-m)) (1 - q)(1 - s) / (1 - (1 - q) s).
    """
    orders = simulate(spec)
    start_s = calendar.timegm(start.timetuple())
    last = orders[orders["ts_s"] < start_s].sort_values("order_id").groupby("user_id").tail(1)
    first_day = (start - spec.start_date).days
    lift = purchase_lift(spec, first_day + days)[first_day:]
    q = 1 - spec.refund_share - spec.cancel_share  # the chance an order is completed: a purchase
    stay_bad = (1 - last["dropout"].to_numpy()) * spec.bad_order_stay
    ending = 1 - (1 - q) * stay_bad
    m = last["rate"].to_numpy() * lift.sum() * ending
    none_if_alive = np.exp(-m) + (1 - np.exp(-m)) * (1 - q) * (1 - stay_bad) / ending
    p = np.where(last["stays"].to_numpy(bool), none_if_alive, 1.0)
    return pd.DataFrame({"user_id": last["user_id"].to_numpy(), "p_no_purchase": p}).sort_values(
        "user_id", ignore_index=True
    )
