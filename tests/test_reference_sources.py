"""Hand-computed checks of the pandas oracle (churn_spark.reference): missing sources, users, ratings, time zones and
leakage. Pure pandas, no Spark; the tables and the calendar (T, B, S) are in reference_cases.py.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from reference_cases import (
    FEATURES,
    ORDERS_ONLY,
    H,
    S,
    build,
    events,
    full_tables,
    one,
    orders,
    reviews,
    seq,
    users,
)

from churn_spark.feature_spec import channels_for


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
