"""The generated lakes' ground truth (churn_spark/generator_truth.py) against the orders the generators really wrote.

The truth is the ceiling bench_quality reports next to every model's ROC-AUC, so it must be right: its
probabilities are checked against the empirical no-purchase share of the same generated users (overall and per
quarter of the predicted probability), and the count law's zero probability against a Monte Carlo draw of that law.
"""

import calendar
import datetime as dt

import numpy as np
import pandas as pd
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from churn_spark.generator import LakeSpec, generate
from churn_spark.generator_sparse import SparseSpec, simulate
from churn_spark.generator_truth import no_kept_order, sparse_true_no_purchase, true_no_purchase

SPEC = LakeSpec(users=3000, weeks=40, seed=11)


def test_zero_probability_of_the_count_law_equals_a_monte_carlo_draw_of_it():
    rng = np.random.default_rng(3)
    means = np.array([0.3, 1.2, 1.99, 2.0, 3.5, 9.0])
    keeps = np.array([0.96, 0.5, 0.9, 0.3, 0.84, 0.2])
    n_draws = 400_000
    for mean, keep in zip(means, keeps):
        if mean < 2:
            n = (rng.random(n_draws) < mean / 2).astype(int) + (rng.random(n_draws) < mean / 2)
        else:
            n = np.maximum(0, np.floor(mean + np.sqrt(mean) * rng.standard_normal(n_draws) + 0.5)).astype(int)
        empirical = (rng.binomial(n, keep) == 0).mean()
        assert abs(no_kept_order(np.array([mean]), np.array([keep]))[0] - empirical) < 0.004, (mean, keep)
    assert np.allclose(no_kept_order(means, np.zeros_like(means)), 1.0)  # nothing kept: never a purchase


def test_true_probabilities_match_the_orders_the_generator_wrote(spark):
    start = SPEC.start_date + dt.timedelta(weeks=30, days=3)  # mid-week, so partial weeks are on both ends
    days = 30
    truth = true_no_purchase(spark, SPEC, start, days)
    orders = generate(spark, SPEC)["orders"]
    bought = {
        r["user_id"]
        for r in orders.where(
            (F.col("status") == "completed")
            & (F.col("order_ts") >= F.lit(start).cast("timestamp"))
            & (F.col("order_ts") < F.lit(start + dt.timedelta(days=days)).cast("timestamp"))
        )
        .select("user_id")
        .distinct()
        .collect()
    }
    t = truth.assign(no_purchase=~truth["user_id"].isin(bought))
    assert len(t) == SPEC.users and t["p_no_purchase"].between(0, 1).all()
    assert abs(t["p_no_purchase"].mean() - t["no_purchase"].mean()) < 0.02
    quarters = pd.qcut(t["p_no_purchase"].rank(method="first"), 4, labels=False)
    by_quarter = t.groupby(quarters).agg(p=("p_no_purchase", "mean"), share=("no_purchase", "mean"))
    assert (by_quarter["p"] - by_quarter["share"]).abs().max() < 0.06, by_quarter
    assert roc_auc_score(t["no_purchase"], t["p_no_purchase"]) > 0.85
    # cancelled orders are not purchases: counting them too can only lower the no-purchase probability
    with_cancelled = true_no_purchase(spark, SPEC, start, days, ("completed", "cancelled"))
    assert (with_cancelled["p_no_purchase"] <= t["p_no_purchase"] + 1e-12).all()
    assert with_cancelled["p_no_purchase"].mean() < t["p_no_purchase"].mean()


def test_sparse_true_probabilities_match_the_simulated_future():
    spec = SparseSpec(users=20_000, seed=5)
    start = spec.end_date - dt.timedelta(days=90)  # the window's orders are in the written lake
    truth = sparse_true_no_purchase(spec, start, 90)
    orders = simulate(spec)
    lo = calendar.timegm(start.timetuple())
    inside = (orders["ts_s"] >= lo) & (orders["ts_s"] < lo + 90 * 86_400) & (orders["status"] == "completed")
    bought_before = orders.loc[orders["ts_s"] < lo, "user_id"].unique()
    assert sorted(truth["user_id"]) == sorted(bought_before)  # every customer with a history, and only them
    t = truth.assign(no_purchase=~truth["user_id"].isin(orders.loc[inside, "user_id"]))
    assert abs(t["p_no_purchase"].mean() - t["no_purchase"].mean()) < 0.01
    quarters = pd.qcut(t["p_no_purchase"].rank(method="first"), 4, labels=False)
    by_quarter = t.groupby(quarters).agg(p=("p_no_purchase", "mean"), share=("no_purchase", "mean"))
    assert (by_quarter["p"] - by_quarter["share"]).abs().max() < 0.02, by_quarter
    assert roc_auc_score(t["no_purchase"], t["p_no_purchase"]) > 0.9
    # a customer who left after their last order never buys again
    gone = orders[orders["ts_s"] < lo].sort_values("order_id").groupby("user_id").tail(1)
    gone = gone.loc[~gone["stays"], "user_id"]
    assert (t.set_index("user_id").loc[gone, "p_no_purchase"] == 1.0).all() and len(gone) > 1000
