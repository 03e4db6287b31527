"""Lifecycle (new / active / at_risk / lapsed), expected value at risk and the action-list rules, on hand-made rows.

The formulas are shared by numpy and Spark (``lifecycle.NUMPY`` / ``lifecycle.SPARK``): the tests without Spark pin
the exact values, ``test_spark_*`` check that the Spark columns give the same answers on the same rows.
"""

import datetime as dt

import numpy as np
import pytest

from churn_spark import actions as A
from churn_spark import lifecycle as L

RULE = L.LifecycleRule(
    horizon_days=30,
    n_buckets=4,
    bucket_days=7,
    gap_multiple=3.0,
    floor_days=20.0,
    cap_days=60.0,
    value_window_days=14,
    prior_orders=2.0,
)
C = len(RULE.channels)
ORD, SPEND, RET = RULE.channels.index("orders"), RULE.channels.index("spend"), RULE.channels.index("returns")


def seq(**buckets):
    """Flattened (T x C) sequence; ``b3=(orders, spend, returns)`` sets bucket 3 (the newest)."""
    s = np.zeros((RULE.n_buckets, C))
    for name, (orders, spend, returns) in buckets.items():
        t = int(name[1:])
        s[t, ORD], s[t, SPEND], s[t, RET] = orders, spend, returns
    return s.reshape(-1)


# user: (tenure_days, lifetime_orders, days_since_last_order, sequence, new?, lapsed?)
USERS = {
    "regular_silent_31d": (100, 10, 31, seq(b0=(1, 10, 0)), False, True),  # gap 10 -> 3 x 10 = 30 days
    "regular_silent_30d": (100, 10, 30, seq(b0=(1, 10, 0)), False, False),  # not longer than 30
    "rare_capped": (300, 2, 61, seq(), False, True),  # gap 150 -> 450, capped at 60
    "frequent_floor": (100, 100, 21, seq(b0=(5, 50, 0)), False, True),  # gap 1 -> 3, floor 20
    "frequent_floor_20d": (100, 100, 20, seq(b0=(5, 50, 0)), False, False),
    "new_last_week": (400, 1, 5, seq(b3=(1, 30, 0)), True, False),  # signup long ago, first order <= 7 days ago
    "orders_before_window": (400, 5, 5, seq(b3=(1, 30, 0)), False, False),  # 4 purchases before the window
    "new_oldest_bucket": (28, 4, 22, seq(b0=(4, 40, 0)), True, False),  # gap 7 -> 21 < 22, but new: not lapsed
    "first_order_a_return": (400, 0, 3, seq(b2=(0, 0, 1)), True, False),  # any order counts for "first order"
    "first_order_35d_ago": (35, 1, 35, seq(), False, False),  # outside the window: tenure 35 > 30
}
NAMES = list(USERS)


def rows(names=NAMES):
    return {
        "tenure_days": np.array([USERS[n][0] for n in names], float),
        "lifetime_orders": np.array([USERS[n][1] for n in names], float),
        "days_since_last_order": np.array([USERS[n][2] for n in names], float),
        "sequence": np.stack([USERS[n][3] for n in names]),
    }


def test_new_and_lapsed_follow_the_users_own_gap_with_floor_and_cap():
    f = L.facts_np(rows(), RULE)
    assert dict(zip(NAMES, f["lc_new"].tolist())) == {n: USERS[n][4] for n in NAMES}
    assert dict(zip(NAMES, f["lc_lapsed"].tolist())) == {n: USERS[n][5] for n in NAMES}


def test_lapse_threshold_is_clipped_multiple_of_the_typical_gap():
    got = L.lapse_after_days(L.NUMPY, np.array([100.0, 300.0, 100.0, 50.0]), np.array([10.0, 2.0, 100.0, 0.0]), RULE)
    assert got.tolist() == [30.0, 60.0, 20.0, 60.0]  # 3 x 10; cap; floor; no orders: gap = tenure (capped)


def test_recency_follows_the_churn_definition():
    assert L.recency_column("no_order") == "days_since_last_order"
    assert L.recency_column("no_activity") == "days_since_last_event"


def test_lifecycle_label_precedence():
    lapsed = np.array([True, False, False, False, False])
    new = np.array([False, True, True, False, False])
    top = np.array([True, True, False, True, False])
    assert L.lifecycle_label(L.NUMPY, lapsed, new, top).tolist() == ["lapsed", "at_risk", "new", "at_risk", "active"]


def test_expected_value_shrinks_short_histories_toward_the_population_rate():
    # P buys a lot, Q is 3 days old without orders, R was silent for the whole window, Z is lapsed
    spend, orders = np.array([140.0, 0.0, 0.0, 999.0]), np.array([4.0, 0.0, 0.0, 9.0])
    exposure = L.exposure_days(L.NUMPY, np.array([100.0, 3.0, 100.0, 100.0]), RULE)
    assert exposure.tolist() == [14.0, 7.0, 14.0, 14.0]  # the 14-day window; a 3-day customer counts one bucket
    savable = np.array([True, True, True, False])  # the lapsed user does not move the population rates
    pop_spend, pop_orders = L.population_rates_np(spend, orders, exposure, savable)
    assert (pop_spend, pop_orders) == pytest.approx((140 / 35, 4 / 35))
    # prior worth 2 typical orders = 2 / (4/35) = 17.5 days of the population's spend rate (4/day)
    got = L.expected_spend(L.NUMPY, spend, exposure, pop_spend, pop_orders, RULE)
    assert got[:3] == pytest.approx([(140 + 70) / 31.5 * 30, 70 / 24.5 * 30, 70 / 31.5 * 30])
    assert got[2] < got[1] < pop_spend * 30 < got[0]  # a long silence weighs more than a short one


def test_value_window_is_whole_buckets():
    assert RULE.value_buckets == 2
    assert L.LifecycleRule(n_buckets=26, bucket_days=7, value_window_days=91).value_buckets == 13
    assert L.LifecycleRule(n_buckets=4, bucket_days=7, value_window_days=365).value_buckets == 4
    assert (
        L.sequence_facts_np(np.stack([seq(b1=(1, 5, 0), b2=(2, 20, 0), b3=(1, 7, 0))]), RULE)["value_spend"][0] == 27.0
    )


def test_top_tier_by_mode():
    from churn_spark.config import ScoringConf

    assert L.top_tier(ScoringConf()) == "high"
    assert L.top_tier(ScoringConf(tier_shares={"urgent": 0.05, "watch": 0.2})) == "urgent"
    assert L.top_tier(ScoringConf(tier_mode="probability", tiers={"watch": 0.3, "urgent": 0.7})) == "urgent"


# ---- action rules, control group, budget ----------------------------------------------------------------------
RULES = {"views": "look", "views_down": "recommend", "spend_down": "coupon", "bad_review": "call"}


@pytest.mark.parametrize(
    "codes, want",
    [
        (
            ["days_since_last_event_high", "views_down_last_4w", "spend_down_last_4w"],
            ("recommend", "views_down_last_4w"),
        ),
        (["views_up_last_4w"], ("look", "views_up_last_4w")),  # only the shorter prefix matches
        (["spend_down_last_4w", "views_down_last_4w"], ("coupon", "spend_down_last_4w")),  # strongest code first
        (["bad_review_before_last_4w"], ("call", "bad_review_before_last_4w")),
        (["orders_down_last_4w"], ("email", None)),
        ([], ("email", None)),
        (None, ("email", None)),
    ],
)
def test_first_matching_reason_code_chooses_the_action(codes, want):
    assert A.match_action(codes, RULES, "email") == want


def test_default_rules_map_the_issues_examples():
    from churn_spark.config import ActionsConf

    a = ActionsConf()
    assert A.match_action(["views_down_last_4w"], a.rules, a.default_action)[0] == "personal_recommendations"
    assert A.match_action(["spend_down_last_4w"], a.rules, a.default_action)[0] == "coupon"
    assert A.match_action(["tenure_days_high"], a.rules, a.default_action)[0] == a.default_action


def test_control_group_is_deterministic_per_user_and_snapshot_with_the_configured_share():
    s1, s2 = dt.date(2026, 11, 2), dt.date(2026, 11, 9)
    assert A.control_draw("u1", s1) == A.control_draw("u1", s1)
    assert A.control_draw("u1", s1) != A.control_draw("u1", s2)
    draws = np.array([A.control_draw(str(i), s1) for i in range(20_000)])
    assert ((draws >= 0) & (draws < 1)).all()
    share = float((draws < 0.1).mean())
    assert 0.1 - 4 * 0.0021 < share < 0.1 + 4 * 0.0021  # 4 binomial standard deviations
    later = np.array([A.control_draw(str(i), s2) for i in range(20_000)]) < 0.1
    assert abs(float(((draws < 0.1) & later).mean()) - 0.01) < 0.004  # independent draws between snapshots


def test_budget_counts_contacted_users_only():
    control = [False, True, False, True, False, False]
    assert A.within_budget(control, 2) == [True, True, True, False, False, False]
    assert A.within_budget(control, 0) == [False] * 6
    assert A.within_budget(control, None) == [True] * 6
    assert A.within_budget([True, True, False], 1) == [True, True, True]
