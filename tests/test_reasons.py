"""Reason codes are true statements about the user's own row: hand-made attributions and raw rows, no Spark, no TF.

Every code family gets a user where it must fire and one where it must not. The layout: T = 10 weekly buckets with
recent_days = 28, so R = 4 recent buckets and 6 earlier ones (windows of different lengths: rates, not totals).
"""

import math

import numpy as np
import pytest

from churn_spark.config import load_config
from churn_spark.feature_spec import NUMERIC_STATIC, recent_buckets
from churn_spark.preprocess import FeatureStats
from churn_spark.reasons import ReasonSettings, codes_from, group_names, group_scores, recent_window, window_label

CHANNELS = ["orders", "views", "reviews", "rating_mean", "active_days"]
TYPICAL_BUCKET = {"orders": 1.0, "views": 10.0, "reviews": 0.5, "rating_mean": 3.0, "active_days": 3.0}
TYPICAL_STATIC = {
    "tenure_days": 365.0,
    "days_since_last_order": 14.0,
    "days_since_last_event": 3.0,
    "lifetime_orders": 10.0,
    "lifetime_spend": 500.0,
    "mean_order_value": 50.0,
}
T, R = 10, 4


def make_stats(n_buckets=T, bucket_days=7, recent_days=28) -> FeatureStats:
    return FeatureStats(
        channels=CHANNELS,
        n_buckets=n_buckets,
        seq_mean=[math.log1p(TYPICAL_BUCKET[c]) for c in CHANNELS],
        seq_std=[1.0] * len(CHANNELS),
        static_mean=[math.log1p(TYPICAL_STATIC[f]) for f in NUMERIC_STATIC],
        static_std=[1.0] * len(NUMERIC_STATIC),
        vocab={"country": ["DE"], "channel": ["organic"]},
        bucket_days=bucket_days,
        recent_days=recent_days,
    )


def user(n_buckets=T, **channels):
    """Raw (T*C,) row, time-major. A channel is (earlier value per bucket, recent value per bucket) or T values."""
    seq = np.zeros((n_buckets, len(CHANNELS)))
    for ch, v in channels.items():
        seq[:, CHANNELS.index(ch)] = [v[0]] * (n_buckets - R) + [v[1]] * R if isinstance(v, tuple) else v
    return seq.reshape(-1)


def static(**values):
    return np.array([values.get(f, TYPICAL_STATIC[f]) for f in NUMERIC_STATIC])


def codes(row, positive, stats=None, settings=None, static_row=None):
    """Codes for one user whose attribution is ``positive`` {(kind, name): score}, 0 for every other group."""
    stats = stats or make_stats()
    groups = group_names(stats)
    scores = np.array([[positive.get(g, 0.0) for g in groups]])
    st = static() if static_row is None else static_row
    return codes_from(scores, groups, row[None, :], st[None, :], stats, settings or ReasonSettings())[0]


# ---- the window: one definition ----------------------------------------------------------------------------
def test_recent_window_from_config_agrees_with_reasons_and_baselines(tmp_path):
    for overrides, r, label in [
        ([], 4, "last_4w"),
        (["sequence.n_buckets=12", "sequence.bucket_days=3", "sequence.recent_days=10"], 3, "last_9d"),
        (["sequence.bucket_days=14", "sequence.recent_days=28"], 2, "last_4w"),
        (["sequence.n_buckets=3", "sequence.recent_days=365"], 2, "last_2w"),
    ]:
        cfg = load_config(None, [f"work_dir={tmp_path}", *overrides])
        s = cfg.sequence
        stats = make_stats(s.n_buckets, s.bucket_days, s.recent_days)  # what training saves in the bundle
        assert (
            cfg.recent_buckets == recent_window(stats) == recent_buckets(s.n_buckets, s.bucket_days, s.recent_days) == r
        )
        assert window_label(stats) == label
    assert ReasonSettings.from_config(load_config(None, [f"work_dir={tmp_path}"]).scoring) == ReasonSettings()


def test_group_scores_sum_attributions_per_window_and_feature():
    stats = make_stats()
    a_seq = np.arange(T * len(CHANNELS), dtype=float).reshape(1, T, len(CHANNELS))
    a_static = np.arange(len(NUMERIC_STATIC) + 3, dtype=float)[None, :] + 100  # + 3 one-hot columns, ignored
    groups = group_names(stats)
    assert groups[:4] == [("recent", "orders"), ("earlier", "orders"), ("recent", "views"), ("earlier", "views")]
    assert groups[-len(NUMERIC_STATIC) :] == [("static", f) for f in NUMERIC_STATIC]
    g = dict(zip(groups, group_scores(a_seq, a_static, stats)[0], strict=True))
    c = CHANNELS.index("views")
    assert g[("recent", "views")] == sum(t * 5 + c for t in range(T - R, T))
    assert g[("earlier", "views")] == sum(t * 5 + c for t in range(T - R))
    assert g[("static", "days_since_last_order")] == 101.0
    one = make_stats(n_buckets=1)  # a single bucket: no earlier window, no earlier groups
    assert [k for k, _ in group_names(one)].count("earlier") == 0


def test_group_scores_feed_codes_from():
    stats = make_stats()
    a_seq = np.zeros((1, T, len(CHANNELS)))
    a_seq[0, -1, CHANNELS.index("orders")] = 0.7  # the last bucket of orders raised the logit
    scores = group_scores(a_seq, np.zeros((1, len(NUMERIC_STATIC))), stats)
    row = user(orders=(2, 0))[None, :]
    assert codes_from(scores, group_names(stats), row, static()[None, :], stats, ReasonSettings()) == [
        ["orders_down_last_4w"]
    ]


# ---- recent vs earlier: rates per day ----------------------------------------------------------------------
RECENT_ORDERS = {("recent", "orders"): 1.0}


def test_down_and_up_fire_on_a_real_change():
    assert codes(user(orders=(2, 1)), RECENT_ORDERS) == ["orders_down_last_4w"]
    assert codes(user(orders=(1, 2)), RECENT_ORDERS) == ["orders_up_last_4w"]
    assert codes(user(views=(0, 3)), {("recent", "views"): 1.0}) == ["views_up_last_4w"]


def test_equal_rates_make_no_claim_even_though_totals_differ():
    # 6 earlier buckets x 1 = 6 vs 4 recent x 1 = 4: lower total, same rate per day -> not "down"
    assert codes(user(orders=(1, 1)), RECENT_ORDERS) == []
    assert codes(user(orders=(0, 0)), RECENT_ORDERS) == []  # both zero
    assert codes(user(views=(0, 0)), {("recent", "views"): 5.0}) == []  # zero views throughout: no views_up


def test_tolerance_boundary_is_exclusive():
    s = ReasonSettings(tolerance=0.25)
    # earlier 4 per bucket over 6 buckets, recent window of 4 buckets: 25 % below = 12 in total, 25 % above = 20
    for recent, expected in [
        ([3, 3, 3, 3], []),
        ([3, 3, 3, 2], ["orders_down_last_4w"]),
        ([5, 5, 5, 5], []),
        ([5, 5, 5, 6], ["orders_up_last_4w"]),
    ]:
        assert codes(user(orders=[4] * 6 + recent), RECENT_ORDERS, settings=s) == expected, recent
    assert codes(user(orders=(4, 4)), RECENT_ORDERS, settings=ReasonSettings(tolerance=0.0)) == []


def test_window_label_follows_the_bucket_length():
    stats = make_stats(bucket_days=3, recent_days=12)  # R = 4 buckets of 3 days
    assert codes(user(orders=(2, 1)), RECENT_ORDERS, stats=stats) == ["orders_down_last_12d"]


def test_a_single_bucket_has_nothing_to_compare_with():
    stats = make_stats(n_buckets=1)
    row = np.zeros(len(CHANNELS))
    row[CHANNELS.index("orders")] = 3
    assert codes(row, RECENT_ORDERS, stats=stats) == []


# ---- attribution: only groups that raised the logit, strongest first, top N ----------------------------------
def test_no_code_without_a_positive_attribution():
    row = user(orders=(2, 0))
    assert codes(row, {}) == []
    assert codes(row, {("recent", "orders"): -0.5}) == []
    assert codes(row, {("recent", "orders"): 0.0, ("recent", "views"): 1.0}) == []  # views unchanged (zero)


def test_codes_follow_decreasing_score_skip_groups_without_a_claim_and_stop_at_top():
    row = user(orders=(2, 1), views=(10, 20), active_days=(3, 3))
    st = static(days_since_last_order=60.0, tenure_days=30.0)
    positive = {
        ("recent", "orders"): 0.2,
        ("recent", "views"): 0.5,
        ("recent", "active_days"): 0.9,
        ("static", "days_since_last_order"): 0.4,
        ("static", "tenure_days"): 0.1,
    }
    # active_days has the largest score but did not change: skipped, not replaced by a false statement
    assert codes(row, positive, static_row=st) == [
        "views_up_last_4w",
        "days_since_last_order_high",
        "orders_down_last_4w",
    ]
    assert codes(row, positive, static_row=st, settings=ReasonSettings(top=2)) == [
        "views_up_last_4w",
        "days_since_last_order_high",
    ]
    assert codes(row, positive, static_row=st, settings=ReasonSettings(top=10)) == [
        "views_up_last_4w",
        "days_since_last_order_high",
        "orders_down_last_4w",
        "tenure_days_low",
    ]


def test_batch_of_users_is_decided_row_by_row():
    stats = make_stats()
    groups = group_names(stats)
    scores = np.zeros((3, len(groups)))
    scores[:, groups.index(("recent", "orders"))] = 1.0
    rows = np.stack([user(orders=(2, 1)), user(orders=(1, 1)), user(orders=(1, 2))])
    statics = np.stack([static()] * 3)
    assert codes_from(scores, groups, rows, statics, stats, ReasonSettings()) == [
        ["orders_down_last_4w"],
        [],
        ["orders_up_last_4w"],
    ]
    assert codes_from(scores[:0], groups, rows[:0], statics[:0], stats, ReasonSettings()) == []


# ---- ratings: weighted by reviews, only over reviewed buckets ------------------------------------------------
RECENT_RATING, EARLIER_RATING = {("recent", "rating_mean"): 1.0}, {("earlier", "rating_mean"): 1.0}
BOTH_RATING = {**RECENT_RATING, **EARLIER_RATING}


def reviews(earlier, recent):
    """(reviews, rating_mean) per bucket from [(count, mean)] for the earlier and the recent buckets."""
    pairs = earlier + recent
    return {"reviews": [n for n, _ in pairs], "rating_mean": [m for _, m in pairs]}


def test_bad_review_fires_at_or_below_the_threshold():
    none4 = [(0, 0)] * 3
    assert codes(user(**reviews([(0, 0)] * 6, none4 + [(1, 2.0)])), RECENT_RATING) == ["bad_review"]
    assert codes(user(**reviews([(0, 0)] * 6, none4 + [(1, 2.5)])), RECENT_RATING) == ["bad_review"]
    assert codes(user(**reviews([(0, 0)] * 6, none4 + [(1, 3.0)])), RECENT_RATING) == []


def test_one_five_star_review_is_not_a_bad_review():
    # a single 5-star review in the last 4 weeks: averaging the rating over all 4 buckets would give 1.25
    assert codes(user(**reviews([(0, 0)] * 6, [(0, 0)] * 3 + [(1, 5.0)])), BOTH_RATING) == []
    assert codes(user(**reviews([(1, 5.0)] * 6, [(0, 0)] * 3 + [(1, 5.0)])), BOTH_RATING) == []  # unchanged


def test_mean_rating_is_weighted_by_the_number_of_reviews():
    # buckets (1 review of 1 star) and (3 reviews averaging 4): mean 3.25, not (1 + 4) / 2 = 2.5
    row = user(**reviews([(0, 0)] * 6, [(0, 0), (1, 1.0), (0, 0), (3, 4.0)]))
    assert codes(row, RECENT_RATING) == []
    row = user(**reviews([(0, 0)] * 6, [(0, 0), (3, 1.0), (0, 0), (1, 4.0)]))  # mean 1.75
    assert codes(row, RECENT_RATING) == ["bad_review"]


def test_no_reviews_means_no_rating_codes():
    row = user(orders=(1, 1))
    assert codes(row, {**BOTH_RATING, ("recent", "reviews"): 1.0}) == []
    # what is true of this user: fewer reviews than the typical user (0.5 per bucket) -- never a rating claim
    assert codes(row, {**BOTH_RATING, ("earlier", "reviews"): 1.0}) == ["reviews_low_before_last_4w"]


def test_rating_down_and_up_need_reviews_in_both_windows():
    assert codes(user(**reviews([(1, 4.5)] * 6, [(1, 3.0)] * 4)), RECENT_RATING) == ["rating_mean_down_last_4w"]
    assert codes(user(**reviews([(1, 3.0)] * 6, [(2, 4.5)] * 4)), RECENT_RATING) == ["rating_mean_up_last_4w"]
    assert codes(user(**reviews([(1, 4.0)] * 6, [(3, 4.0)] * 4)), RECENT_RATING) == []  # same mean
    assert codes(user(**reviews([(0, 0)] * 6, [(1, 3.0)] * 4)), RECENT_RATING) == []  # nothing earlier
    assert codes(user(**reviews([(1, 4.5)] * 6, [(0, 0)] * 4)), RECENT_RATING) == []  # nothing recent


def test_a_bad_recent_mean_is_reported_as_bad_review():
    assert codes(user(**reviews([(1, 4.5)] * 6, [(1, 2.0)] * 4)), RECENT_RATING) == ["bad_review"]


def test_bad_review_before_only_for_a_bad_earlier_mean():
    assert codes(user(**reviews([(1, 2.0)] * 6, [(0, 0)] * 4)), EARLIER_RATING) == ["bad_review_before_last_4w"]
    assert codes(user(**reviews([(1, 2.0), (1, 3.0)] * 3, [(0, 0)] * 4)), EARLIER_RATING) == [
        "bad_review_before_last_4w"
    ]  # mean exactly 2.5
    assert codes(user(**reviews([(1, 4.0)] * 6, [(1, 1.0)] * 4)), EARLIER_RATING) == []
    assert codes(user(**reviews([(0, 0)] * 6, [(1, 1.0)] * 4)), EARLIER_RATING) == []


# ---- earlier window vs the training population; static features --------------------------------------------
def test_earlier_window_low_and_high_against_the_typical_user():
    earlier_views = {("earlier", "views"): 1.0}  # typical bucket: 10 views
    assert codes(user(views=(2, 2)), earlier_views) == ["views_low_before_last_4w"]
    assert codes(user(views=(25, 25)), earlier_views) == ["views_high_before_last_4w"]
    assert codes(user(views=(10, 0)), earlier_views) == []  # typical
    assert codes(user(views=[10.4] * 6 + [0] * 4), earlier_views) == []  # within 5 %
    assert codes(user(views=[9, 11, 9, 11, 9, 11] + [0] * 4), earlier_views) == []  # mean 10
    assert codes(user(views=[0] * 5 + [60] + [0] * 4), earlier_views) == []  # mean 10 per earlier bucket


def test_static_high_and_low_against_the_typical_user():
    g = {("static", "days_since_last_order"): 1.0}
    assert codes(user(), g, static_row=static(days_since_last_order=60.0)) == ["days_since_last_order_high"]
    assert codes(user(), g, static_row=static(days_since_last_order=2.0)) == ["days_since_last_order_low"]
    assert codes(user(), g, static_row=static(days_since_last_order=14.0)) == []
    assert codes(user(), g, static_row=static(days_since_last_order=14.5)) == []  # within 5 %
    assert codes(user(), g, static_row=static(days_since_last_order=float("nan"))) == [
        "days_since_last_order_low"
    ]  # missing is 0 for the model too


@pytest.mark.parametrize("ch", ["orders", "views", "reviews", "active_days"])
def test_every_channel_uses_the_same_true_comparison(ch):
    assert codes(user(**{ch: (4, 1)}), {("recent", ch): 1.0}) == [f"{ch}_down_last_4w"]
    assert codes(user(**{ch: (2, 2)}), {("recent", ch): 1.0}) == []
