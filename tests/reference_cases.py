"""Hand-made tables for the pandas oracle's tests (test_reference*.py): builders per source and the full case.

T = 2 buckets of B = 3 days and S = 2024-01-10, so:
  bucket 1 (newest) = Jan 7, 8, 9;  bucket 0 (oldest) = Jan 4, 5, 6;  Jan 3 and earlier = outside the window.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from churn_spark.feature_spec import CATEGORICAL_STATIC, FEATURE_STATIC, channels_for
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
