"""Hand-computed checks of the pandas oracle (churn_spark.reference). Pure pandas, no Spark.

Most cases use T = 2 buckets of B = 3 days and S = 2024-01-10, so:
  bucket 1 (newest) = Jan 7, 8, 9;  bucket 0 (oldest) = Jan 4, 5, 6;  Jan 3 and earlier = outside the window.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from churn_spark.feature_spec import CATEGORICAL_STATIC, FEATURE_STATIC, NUMERIC_STATIC, RHYTHM_STATIC, channels_for
from churn_spark.reference import build_reference

S = dt.date(2024, 1, 10)
T, B, H = 2, 3, 5
ALL = channels_for(["orders", "events", "reviews"])
ORDERS_ONLY = channels_for(["orders"])
FEATURES = ["sequence"] + FEATURE_STATIC + CATEGORICAL_STATIC


def _times(values) -> pd.Series:
    """Naive UTC datetime64[ns] from strings / Timestamps / None, one value at a time."""
    return pd.Series([pd.Timestamp(v) if v is not None else pd.NaT for v in values], dtype="datetime64[ns]")


def orders(*rows) -> pd.DataFrame:
    """rows: (user_id, ts, amount, n_items, status)."""
    df = pd.DataFrame(list(rows), columns=["user_id", "ts", "amount", "n_items", "status"])
    df["ts"] = _times(df["ts"])
    df["amount"] = df["amount"].astype(float)
    df["n_items"] = df["n_items"].astype("int64")
    return df


def events(*rows) -> pd.DataFrame:
    df = pd.DataFrame(list(rows), columns=["user_id", "ts", "event_type"])
    df["ts"] = _times(df["ts"])
    return df


def reviews(*rows) -> pd.DataFrame:
    df = pd.DataFrame(list(rows), columns=["user_id", "ts", "rating"])
    df["ts"] = _times(df["ts"])
    return df


def users(*rows) -> pd.DataFrame:
    df = pd.DataFrame(list(rows), columns=["user_id", "signup_ts", "country", "channel"])
    df["signup_ts"] = _times(df["signup_ts"])
    return df


def build(tables, snapshots=None, *, lookback_days=T * B, as_of=dt.date(2024, 2, 1), churn_definition="no_order"):
    return build_reference(
        tables,
        snapshots or {S: "test"},
        n_buckets=T,
        bucket_days=B,
        lookback_days=lookback_days,
        horizon_days=H,
        as_of=as_of,
        churn_definition=churn_definition,
    )


def seq(channels, bucket0: dict, bucket1: dict) -> list:
    """Expected flattened time-major sequence from two {channel: value} dicts, as stored: float32 values."""
    out = []
    for bucket in (bucket0, bucket1):
        out += [float(np.float32(bucket.get(c, 0.0))) for c in channels]
    return out


def one(df: pd.DataFrame, user: str, snapshot: dt.date = S) -> pd.Series:
    hit = df[(df["user_id"] == user) & (df["snapshot_date"] == snapshot)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


# ---------------------------------------------------------------------------------------------------- full case
def full_tables():
    return {
        "orders": orders(
            ("a", "2024-01-01 10:00", 10.0, 1, "completed"),  # k=9: outside window, lifetime only
            ("a", "2024-01-04 00:00", 20.0, 2, "completed"),  # k=6 = T*B: bucket 0 (boundary)
            ("a", "2024-01-08 12:00", 30.0, 3, "shipped"),  # bucket 1, a purchase (any non-return status)
            ("a", "2024-01-09 23:59", 5.0, 1, "refunded"),  # bucket 1, a return
            ("a", "2024-01-10 00:00", 100.0, 9, "completed"),  # exactly S: excluded; label window
            ("b", "2024-01-06 08:00", 7.5, 1, "completed"),  # b's only order before S
            ("b", "2024-01-15 00:00", 50.0, 1, "completed"),  # exactly S + H: not in the label window
            ("d", "2024-01-03 12:00", 9.0, 1, "completed"),  # k=7: before the lookback window
            ("r", "2024-01-08 12:00", 9.0, 1, "cancelled"),  # only a return in the lookback window
        ),
        "events": events(
            ("a", "2024-01-03 23:59:59", "view"),  # k=7: outside window
            ("a", "2024-01-04 01:00", "view"),
            ("a", "2024-01-04 02:00", "cart"),
            ("a", "2024-01-05 00:00", "favorite"),
            ("a", "2024-01-09 10:00", "search"),
            ("a", "2024-01-10 00:00", "view"),  # exactly S: excluded
            ("c", "2024-01-08 10:00", "view"),  # c has events but no orders
        ),
        "reviews": reviews(
            ("a", "2024-01-07 10:00", 4),
            ("a", "2024-01-07 11:00", 5),
        ),
        "users": users(
            ("a", "2023-12-01 15:00", "DE", None),
            ("c", "2023-12-01 15:00", "FR", "ads"),
        ),
    }


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


# ------------------------------------------------------------------------------------------------ sources
def test_missing_sources_shrink_channels():
    tables = full_tables()
    only_orders = build({"orders": tables["orders"]})
    assert ORDERS_ONLY == ["orders", "spend", "items", "returns", "active_days"]
    a = one(only_orders, "a")
    assert a["sequence"] == seq(
        ORDERS_ONLY,
        {"orders": 1, "spend": 20, "items": 2, "active_days": 1},
        {"orders": 1, "spend": 30, "items": 3, "returns": 1, "active_days": 2},
    )
    assert a["days_since_last_event"] == 1.0  # the Jan 9 refund
    assert a["tenure_days"] == 9.0  # no users source: first order Jan 1

    with_reviews = build({"orders": tables["orders"], "reviews": tables["reviews"]})
    chans = channels_for(["orders", "reviews"])
    assert chans == ["orders", "spend", "items", "returns", "reviews", "rating_mean", "active_days"]
    assert one(with_reviews, "a")["sequence"] == seq(
        chans,
        {"orders": 1, "spend": 20, "items": 2, "active_days": 1},
        {"orders": 1, "spend": 30, "items": 3, "returns": 1, "reviews": 2, "rating_mean": 4.5, "active_days": 3},
    )

    none_source = build({"orders": tables["orders"], "events": None})
    assert one(none_source, "a")["sequence"] == a["sequence"]


def test_users_signup_and_fallbacks():
    tables = {
        "orders": orders(
            ("u", "2024-01-05 12:00", 1.0, 1, "completed"),
            ("v", "2024-01-06 12:00", 1.0, 1, "completed"),
            ("w", "2024-01-07 12:00", 1.0, 1, "completed"),
        ),
        "users": users(("u", "2023-12-31 23:59", "FR", "ads"), ("v", None, None, "web")),
    }  # w has no users row at all
    out = build(tables)
    assert [one(out, x)["tenure_days"] for x in "uvw"] == [10.0, 4.0, 3.0]
    assert [(one(out, x)["country"], one(out, x)["channel"]) for x in "uvw"] == [
        ("FR", "ads"),
        ("unknown", "web"),
        ("unknown", "unknown"),
    ]


def test_rating_mean_per_bucket():
    tables = {
        "orders": orders(("u", "2024-01-08 12:00", 1.0, 1, "completed")),
        "reviews": reviews(
            ("u", "2024-01-04 10:00", 1),
            ("u", "2024-01-06 10:00", 2),
            ("u", "2024-01-06 11:00", 4),
            ("u", "2024-01-08 10:00", 5),
        ),
    }
    row = one(build(tables), "u")
    chans = channels_for(["orders", "reviews"])
    assert row["sequence"] == seq(
        chans,
        {"reviews": 3, "rating_mean": 7 / 3, "active_days": 2},
        {"orders": 1, "spend": 1, "items": 1, "reviews": 1, "rating_mean": 5, "active_days": 1},
    )


# ------------------------------------------------------------------------------------------------ time zones
def _to_zone(tables, zone: str):
    out = {}
    for name, df in tables.items():
        df = df.copy()
        column = "signup_ts" if name == "users" else "ts"
        df[column] = df[column].dt.tz_localize("UTC").dt.tz_convert(zone)
        out[name] = df
    return out


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_tz_aware_input_matches_naive_utc(zone):
    snapshots = {S: "test", dt.date(2024, 1, 8): "train"}
    naive = build(full_tables(), snapshots)
    aware = build(_to_zone(full_tables(), zone), snapshots)
    pd.testing.assert_frame_equal(naive, aware)


def test_tz_aware_day_is_the_utc_day():
    # 2024-01-09 22:00 in New York is 2024-01-10 03:00 UTC: at/after S, so excluded.
    tables = {
        "orders": orders(("u", "2024-01-08 12:00", 1.0, 1, "completed")),
        "events": events(("u", "2024-01-09 12:00", "view")),
    }
    tables["events"]["ts"] = pd.to_datetime(["2024-01-09 22:00"]).tz_localize("America/New_York")
    row = one(build(tables), "u")
    chans = channels_for(["orders", "events"])
    assert row["sequence"] == seq(chans, {}, {"orders": 1, "spend": 1, "items": 1, "active_days": 1})
    assert row["days_since_last_event"] == 2.0


# ------------------------------------------------------------------------------------------------ leakage
FUTURE_ROWS = {
    "orders": [("a", 999.0, 9, "completed"), ("b", 1.0, 1, "refunded"), ("new", 5.0, 1, "completed")],
    "events": [("a", "view"), ("b", "search"), ("new", "cart")],
    "reviews": [("a", 1), ("b", 5), ("new", 3)],
}


@pytest.mark.parametrize(
    "offset",
    [
        pd.Timedelta(0),
        pd.Timedelta(microseconds=1),
        pd.Timedelta(hours=23),
        pd.Timedelta(days=1),
        pd.Timedelta(days=H),
        pd.Timedelta(days=400),
    ],
)
@pytest.mark.parametrize("source", ["orders", "events", "reviews"])
def test_rows_at_or_after_snapshot_leave_features_unchanged(source, offset):
    base = build(full_tables())
    for payload in FUTURE_ROWS[source]:
        tables = full_tables()
        when = pd.Timestamp(S) + offset
        extra = pd.DataFrame(
            [(payload[0], when) + tuple(payload[1:])],
            columns=["user_id", "ts"] + [c for c in tables[source].columns if c not in ("user_id", "ts")],
        )
        tables[source] = pd.concat([tables[source], extra[tables[source].columns]], ignore_index=True)
        after = build(tables)
        assert list(after["user_id"]) == list(base["user_id"])  # eligibility unchanged too
        pd.testing.assert_frame_equal(
            after[["user_id", "snapshot_date", "split"] + FEATURES],
            base[["user_id", "snapshot_date", "split"] + FEATURES],
        )
