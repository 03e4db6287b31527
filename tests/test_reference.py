"""Hand-computed checks of the pandas oracle (churn_spark.reference): the full case, bucket and label boundaries,
eligibility. Pure pandas, no Spark; the tables and the calendar (T, B, S) are in reference_cases.py.
"""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest
from reference_cases import (
    ALL,
    ORDERS_ONLY,
    B,
    H,
    S,
    T,
    build,
    events,
    full_tables,
    one,
    orders,
    reviews,
    seq,
    users,
)

from churn_spark.feature_spec import CATEGORICAL_STATIC, FEATURE_STATIC, NUMERIC_STATIC, RHYTHM_STATIC, channels_for
from churn_spark.reference import build_reference


def test_full_case_hand_computed():
    out = build(full_tables())
    assert (
        list(out.columns)
        == ["user_id", "snapshot_date", "split", "label", "sequence", "long_sequence"]
        + FEATURE_STATIC
        + CATEGORICAL_STATIC
    )
    assert list(out["user_id"]) == ["a", "b"]  # c: events only, d: purchase too old, r: only a return

    a = one(out, "a")
    assert a["split"] == "test"
    assert a["sequence"] == seq(
        ALL,
        {"orders": 1, "spend": 20, "items": 2, "views": 1, "carts": 1, "favourites": 1, "active_days": 2},
        {
            "orders": 1,
            "spend": 30,
            "items": 3,
            "returns": 1,
            "searches": 1,
            "reviews": 2,
            "rating_mean": 4.5,
            "active_days": 3,
        },
    )
    assert a["tenure_days"] == 40.0  # signup 2023-12-01 -> 2024-01-10
    assert a["days_since_last_order"] == 2.0  # last purchase Jan 8 (the Jan 9 refund is not a purchase)
    assert a["days_since_last_event"] == 1.0  # Jan 9 (refund and search)
    assert a["lifetime_orders"] == 3.0  # Jan 1 (outside the window), Jan 4, Jan 8
    assert a["lifetime_spend"] == 60.0
    assert a["mean_order_value"] == 20.0
    assert a["country"] == "DE" and a["channel"] == "unknown"
    assert a["label"] == 0.0  # purchase exactly at S counts for the label

    b = one(out, "b")
    assert b["sequence"] == seq(ALL, {"orders": 1, "spend": 7.5, "items": 1, "active_days": 1}, {})
    assert b["tenure_days"] == 4.0  # no users row: first order Jan 6
    assert b["days_since_last_order"] == 4.0
    assert b["days_since_last_event"] == 4.0
    assert b["lifetime_orders"] == 1.0 and b["lifetime_spend"] == 7.5 and b["mean_order_value"] == 7.5
    assert b["country"] == "unknown" and b["channel"] == "unknown"
    assert b["label"] == 1.0  # the order at exactly S + H is outside [S, S + H)


def test_output_types_and_sort_order():
    snapshots = {S: "test", dt.date(2024, 1, 9): "train"}
    out = build(full_tables(), snapshots)
    # at S' = Jan 9 the lookback is [Jan 3, Jan 9), so d's Jan 3 purchase makes d eligible there
    assert list(zip(out["snapshot_date"], out["user_id"])) == [
        (dt.date(2024, 1, 9), "a"),
        (dt.date(2024, 1, 9), "b"),
        (dt.date(2024, 1, 9), "d"),
        (S, "a"),
        (S, "b"),
    ]
    assert list(out["split"]) == ["train", "train", "train", "test", "test"]
    d = one(out, "d", dt.date(2024, 1, 9))  # Jan 3 is k = 6 from Jan 9: bucket 0
    assert d["sequence"] == seq(ALL, {"orders": 1, "spend": 9, "items": 1, "active_days": 1}, {})
    assert [d[c] for c in NUMERIC_STATIC] == [6.0, 6.0, 6.0, 1.0, 9.0, 9.0]
    assert all(type(d) is dt.date for d in out["snapshot_date"])
    assert all(isinstance(u, str) for u in out["user_id"])
    assert out["label"].dtype == "float64"
    for column in NUMERIC_STATIC:
        assert out[column].dtype == "float64", column
    for s in out["sequence"]:
        assert isinstance(s, list) and len(s) == T * len(ALL) and all(type(v) is float for v in s)
    for column in CATEGORICAL_STATIC:
        assert all(isinstance(v, str) for v in out[column])


# ------------------------------------------------------------------------------------------------ boundaries
def test_event_exactly_at_snapshot_is_excluded():
    tables = {
        "orders": orders(("u", "2024-01-09 12:00", 1.0, 1, "completed")),
        "events": events(("u", "2024-01-10 00:00:00", "view"), ("u", "2024-01-09 23:59:59.999", "cart")),
    }
    row = one(build(tables), "u")
    chans = channels_for(["orders", "events"])
    assert row["sequence"] == seq(chans, {}, {"orders": 1, "spend": 1, "items": 1, "carts": 1, "active_days": 1})
    assert row["days_since_last_event"] == 1.0


def test_event_at_window_start_is_in_bucket_0():
    # S - B*T = 2024-01-04: k = 6 -> bucket 0; Jan 7 (k = 3) is the first day of bucket 1.
    tables = {
        "orders": orders(("u", "2024-01-09 12:00", 1.0, 1, "completed")),
        "events": events(
            ("u", "2024-01-04 00:00", "view"), ("u", "2024-01-06 23:59", "view"), ("u", "2024-01-07 00:00", "search")
        ),
    }
    row = one(build(tables), "u")
    chans = channels_for(["orders", "events"])
    assert row["sequence"] == seq(
        chans, {"views": 2, "active_days": 2}, {"orders": 1, "spend": 1, "items": 1, "searches": 1, "active_days": 2}
    )


def test_row_one_day_before_window_only_in_lifetime_stats():
    # 2024-01-03 = S - B*T - 1 day: not in the sequence, but in lifetime stats, tenure and recency.
    tables = {
        "orders": orders(
            ("u", "2024-01-03 23:00", 40.0, 4, "completed"), ("u", "2024-01-08 12:00", 20.0, 1, "completed")
        ),
        "events": events(("u", "2024-01-03 05:00", "view")),
    }
    row = one(build(tables), "u")
    chans = channels_for(["orders", "events"])
    assert row["sequence"] == seq(chans, {}, {"orders": 1, "spend": 20, "items": 1, "active_days": 1})
    assert row["lifetime_orders"] == 2.0
    assert row["lifetime_spend"] == 60.0
    assert row["mean_order_value"] == 30.0
    assert row["tenure_days"] == 7.0


def test_order_at_horizon_end_does_not_count_for_label():
    base = [("u", "2024-01-08 12:00", 1.0, 1, "completed")]
    only_at_end = build({"orders": orders(*base, ("u", "2024-01-15 00:00", 1.0, 1, "completed"))})
    assert one(only_at_end, "u")["label"] == 1.0
    just_before = build({"orders": orders(*base, ("u", "2024-01-14 23:59:59", 1.0, 1, "completed"))})
    assert one(just_before, "u")["label"] == 0.0
    a_return_only = build({"orders": orders(*base, ("u", "2024-01-12 10:00", 1.0, 1, "cancelled"))})
    assert one(a_return_only, "u")["label"] == 1.0  # a return is not a purchase


def test_return_statuses_are_a_parameter():
    """The oracle takes the configured return statuses (trimmed, lower-case) rather than a constant."""
    tables = {
        "orders": orders(
            ("u", "2024-01-05 12:00", 10.0, 1, "completed"),
            ("u", "2024-01-08 12:00", 30.0, 2, "lost"),
            ("u", "2024-01-09 12:00", 5.0, 1, "refunded"),
        )
    }
    default = one(build(tables), "u")
    assert default["lifetime_orders"] == 2.0 and default["days_since_last_order"] == 2.0  # "lost" is a purchase
    custom = one(
        build_reference(
            tables,
            {S: "test"},
            n_buckets=T,
            bucket_days=B,
            lookback_days=T * B,
            horizon_days=H,
            as_of=dt.date(2024, 2, 1),
            return_statuses=[" Lost "],
        ),
        "u",
    )
    assert custom["lifetime_orders"] == 2.0 and custom["lifetime_spend"] == 15.0  # "refunded" is a purchase now
    assert custom["days_since_last_order"] == 1.0
    assert custom["sequence"] == seq(
        ORDERS_ONLY,
        {"orders": 1, "spend": 10, "items": 1, "active_days": 1},
        {"orders": 1, "spend": 5, "items": 1, "returns": 1, "active_days": 2},
    )


def test_no_activity_definition():
    tables = {
        "orders": orders(
            ("u", "2024-01-08 12:00", 1.0, 1, "completed"),
            ("v", "2024-01-08 12:00", 1.0, 1, "completed"),
            ("w", "2024-01-08 12:00", 1.0, 1, "completed"),
            ("w", "2024-01-11 12:00", 1.0, 1, "refunded"),
        ),
        "events": events(("u", "2024-01-14 23:00", "view"), ("v", "2024-01-15 00:00", "view")),
    }
    no_order = build(tables)
    no_activity = build(tables, churn_definition="no_activity")
    assert list(no_order["label"]) == [1.0, 1.0, 1.0]
    assert list(no_activity["label"]) == [0.0, 1.0, 0.0]  # u: an event; v: event at S + H; w: a return


def test_label_null_when_horizon_passes_run_date():
    tables = {"orders": orders(("u", "2024-01-08 12:00", 1.0, 1, "completed"))}
    assert one(build(tables, as_of=dt.date(2024, 1, 15)), "u")["label"] == 1.0  # S + H == as_of: labelled
    assert math.isnan(one(build(tables, as_of=dt.date(2024, 1, 14)), "u")["label"])
    score = build(tables, {S: "score"}, as_of=S)
    assert one(score, "u")["split"] == "score" and math.isnan(one(score, "u")["label"])


# ------------------------------------------------------------------------------------------------ eligibility
def test_single_order_user():
    row = one(build({"orders": orders(("u", "2024-01-05 18:30", 12.0, 3, "completed"))}), "u")
    assert row["sequence"] == seq(ORDERS_ONLY, {"orders": 1, "spend": 12, "items": 3, "active_days": 1}, {})
    assert [row[c] for c in NUMERIC_STATIC] == [5.0, 5.0, 5.0, 1.0, 12.0, 12.0]
    assert [row[c] for c in RHYTHM_STATIC] == [1.0, 5.0, 0.0, 0.0, 0.0]  # one purchase day: no rhythm yet
    assert row["label"] == 1.0


def test_purchase_rhythm_of_a_hand_made_customer():
    """Purchases 100, 70, 70 (same day twice), 50 and 10 days before S; a return 5 days before S is no purchase.
    Distinct purchase days: 4; gaps 30, 20, 40 -> mean 30, population std sqrt(200/3); last purchase 10 days ago,
    so a third of the customer's usual gap has passed (overdue ratio 1/3)."""
    day = lambda k: (pd.Timestamp(S) - pd.Timedelta(days=k) + pd.Timedelta(hours=9)).isoformat()  # noqa: E731
    row = one(
        build(
            {
                "orders": orders(
                    ("u", day(100), 5.0, 1, "completed"),
                    ("u", day(70), 5.0, 1, "completed"),
                    ("u", day(70), 7.0, 1, "completed"),
                    ("u", day(50), 5.0, 1, "completed"),
                    ("u", day(10), 5.0, 1, "completed"),
                    ("u", day(5), 5.0, 1, "refunded"),
                )
            },
            lookback_days=120,
        ),
        "u",
    )
    assert row["purchase_days"] == 4.0
    assert row["days_since_first_purchase"] == 100.0
    assert row["gap_mean_days"] == 30.0
    assert row["gap_std_days"] == pytest.approx(math.sqrt(200 / 3), rel=1e-12)
    assert row["overdue_ratio"] == pytest.approx(10 / 30, rel=1e-12)


def test_eligibility():
    tables = {
        "orders": orders(
            ("edge", "2024-01-04 00:00", 1.0, 1, "completed"),  # exactly S - lookback: eligible
            ("old", "2024-01-03 23:59", 1.0, 1, "completed"),  # just before: not eligible
            ("ret", "2024-01-08 00:00", 1.0, 1, "cancelled"),  # only a return: not eligible
            ("late", "2024-01-10 00:00", 1.0, 1, "completed"),
        ),  # at S: not eligible
        "events": events(("ev", "2024-01-08 00:00", "view")),  # events only: not eligible
        "reviews": reviews(("rv", "2024-01-08 00:00", 5)),
        "users": users(("ev", "2023-01-01", "DE", "web"), ("nobody", "2023-01-01", "DE", "web")),
    }
    assert list(build(tables)["user_id"]) == ["edge"]
    assert list(build(tables, lookback_days=7)["user_id"]) == ["edge", "old"]


def test_no_eligible_user_gives_empty_frame_with_columns():
    out = build({"orders": orders(("u", "2024-01-11 00:00", 1.0, 1, "completed"))})
    assert out.empty
    assert (
        list(out.columns)
        == ["user_id", "snapshot_date", "split", "label", "sequence", "long_sequence"]
        + FEATURE_STATIC
        + CATEGORICAL_STATIC
    )
