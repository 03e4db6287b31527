"""Single-process pandas oracle for the behaviour-sequence features and labels.

Why it exists: the Spark feature builder is fast but hard to inspect. This module re-derives the same output
from the contract in :mod:`churn_spark.feature_spec` with plain Python loops, written without looking at the
Spark code, so tests can compare the two row by row on small data. Clarity beats speed here: never optimise it,
and never import from the Spark implementation.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from churn_spark.feature_spec import (
    CATEGORICAL_STATIC,
    EVENT_CHANNEL,
    FEATURE_STATIC,
    RETURN_STATUSES,
    SOURCE_CHANNELS,
    channels_for,
)

CHURN_DEFINITIONS = ("no_order", "no_activity")
REQUIRED_COLUMNS = {
    "orders": ["user_id", "ts", "amount", "n_items", "status"],
    "events": ["user_id", "ts", "event_type"],
    "reviews": ["user_id", "ts", "rating"],
    "users": ["user_id", "signup_ts", "country", "channel"],
}
UNKNOWN = "unknown"
OUTPUT_COLUMNS = ["user_id", "snapshot_date", "split", "label", "sequence", "long_sequence"]
OUTPUT_COLUMNS += FEATURE_STATIC + CATEGORICAL_STATIC


# --------------------------------------------------------------------------------------------- input cleaning
def _utc_naive(values: pd.Series) -> pd.Series:
    """Timestamps as tz-naive UTC: tz-aware values are converted to UTC, naive ones are taken as UTC already."""
    return pd.to_datetime(values, utc=True).dt.tz_localize(None)


def _as_date(value, what: str) -> dt.date:
    """A calendar date from a date / midnight datetime / Timestamp / ISO string."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    if ts != ts.normalize():
        raise ValueError(f"{what} must be a date (midnight UTC), got {value!r}")
    return ts.date()


def _is_missing(value) -> bool:
    if value is None or value is pd.NaT:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _prepare(name: str, df: pd.DataFrame, ts_column: str) -> pd.DataFrame:
    """Copy a source, check its columns, normalise user_id to str and add a ``day`` (datetime.date) column.

    Rows without a user_id are dropped. For event sources rows without a timestamp are dropped too (they cannot
    be placed in time); for users a missing signup_ts is kept (day = None).
    """
    missing = [c for c in REQUIRED_COLUMNS[name] if c not in df.columns]
    if missing:
        raise ValueError(f"source {name!r} lacks columns {missing}")
    out = df[REQUIRED_COLUMNS[name]].copy()
    out = out[out["user_id"].notna()]
    out["user_id"] = out["user_id"].astype(str)
    out[ts_column] = _utc_naive(out[ts_column])
    if name != "users":
        out = out[out[ts_column].notna()]
    out["day"] = [None if pd.isna(t) else t.date() for t in out[ts_column]]
    return out.reset_index(drop=True)


def _group_by_user(df: Optional[pd.DataFrame]) -> Dict[str, pd.DataFrame]:
    if df is None:
        return {}
    return {str(user): group for user, group in df.groupby("user_id", sort=False)}


def _num(value) -> float:
    """A numeric cell as float, nulls counting as 0 (like SQL sum skipping nulls)."""
    return 0.0 if _is_missing(value) else float(value)


# ---------------------------------------------------------------------------------------------- the oracle
def build_reference(
    tables: Dict[str, pd.DataFrame],
    snapshots: Dict[dt.date, str],
    *,
    n_buckets: int,
    bucket_days: int,
    lookback_days: int,
    horizon_days: int,
    as_of: dt.date,
    churn_definition: str = "no_order",
    return_statuses: Sequence[str] = RETURN_STATUSES,
    long_buckets: int = 0,
    long_bucket_days: int = 30,
) -> pd.DataFrame:
    """One row per eligible (user_id, snapshot_date), sorted by snapshot_date then user_id.

    Columns: user_id, snapshot_date (datetime.date), split, label (1.0 / 0.0 / NaN when S + H > as_of),
    sequence (list of n_buckets * len(channels) floats, ``sequence[t * C + c]``), long_sequence (the same with
    long_buckets x long_bucket_days; empty when long_buckets is 0), FEATURE_STATIC (float),
    CATEGORICAL_STATIC (str, "unknown" when missing). Channels = ``channels_for`` of the sources among
    orders/events/reviews present in ``tables`` (a key mapped to None counts as absent). An order whose status is
    one of ``return_statuses`` (compared trimmed and lower-case, like ingest stores them) is a return.
    """
    for name, value in (
        ("n_buckets", n_buckets),
        ("bucket_days", bucket_days),
        ("lookback_days", lookback_days),
        ("horizon_days", horizon_days),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if churn_definition not in CHURN_DEFINITIONS:
        raise ValueError(f"churn_definition must be one of {CHURN_DEFINITIONS}, got {churn_definition!r}")
    if tables.get("orders") is None:
        raise ValueError("an 'orders' table is required")
    unknown_sources = set(tables) - set(REQUIRED_COLUMNS)
    if unknown_sources:
        raise ValueError(f"unknown sources {sorted(unknown_sources)}")
    as_of = _as_date(as_of, "as_of")

    sources = [s for s in SOURCE_CHANNELS if tables.get(s) is not None]
    channels = channels_for(sources)
    n_channels = len(channels)
    position = {name: i for i, name in enumerate(channels)}
    window_days = n_buckets * bucket_days

    orders = _prepare("orders", tables["orders"], "ts")
    returns = {str(x).strip().lower() for x in return_statuses}
    orders["is_return"] = orders["status"].isin(returns)  # null / any other status = a purchase
    events = _prepare("events", tables["events"], "ts") if "events" in sources else None
    reviews = _prepare("reviews", tables["reviews"], "ts") if "reviews" in sources else None
    users = _prepare("users", tables["users"], "signup_ts") if tables.get("users") is not None else None
    if users is not None and users["user_id"].duplicated().any():
        dupes = sorted(users.loc[users["user_id"].duplicated(), "user_id"].unique())[:5]
        raise ValueError(f"users has several rows for user_id(s) {dupes}")

    orders_by_user = _group_by_user(orders)
    events_by_user = _group_by_user(events)
    reviews_by_user = _group_by_user(reviews)
    users_by_id = {} if users is None else {row.user_id: row for row in users.itertuples(index=False)}
    empty_orders = orders.iloc[0:0]

    plan: Dict[dt.date, str] = {}
    for raw_date, split in snapshots.items():
        snapshot = _as_date(raw_date, "snapshot date")
        if snapshot in plan:
            raise ValueError(f"snapshot {snapshot} given twice")
        plan[snapshot] = str(split)

    def bucket_of(day: dt.date, snapshot: dt.date) -> Optional[int]:
        """Bucket index of a day before S (0 = oldest), or None when outside the T*B-day window."""
        k = (snapshot - day).days
        if 1 <= k <= window_days:
            return n_buckets - 1 - (k - 1) // bucket_days
        return None

    rows = []
    for snapshot in sorted(plan):
        split = plan[snapshot]
        start = snapshot
        horizon_end = snapshot + dt.timedelta(days=horizon_days)
        lookback_start = snapshot - dt.timedelta(days=lookback_days)
        labelled = horizon_end <= as_of

        # Eligibility: >= 1 purchase with lookback_start <= day < S. Snapshots and bounds are midnights, so
        # comparing days is the same as comparing timestamps.
        eligible = set()
        for row in orders.itertuples(index=False):
            if not row.is_return and lookback_start <= row.day < start:
                eligible.add(row.user_id)

        for user in sorted(eligible):
            user_orders = orders_by_user.get(user, empty_orders)
            user_events = events_by_user.get(user)
            user_reviews = reviews_by_user.get(user)

            sequence = [[0.0] * n_channels for _ in range(n_buckets)]
            active_days: List[set] = [set() for _ in range(n_buckets)]
            ratings: List[List[float]] = [[] for _ in range(n_buckets)]
            lifetime_orders = 0.0
            lifetime_spend = 0.0
            last_purchase_day: Optional[dt.date] = None
            first_order_day: Optional[dt.date] = None
            last_activity_day: Optional[dt.date] = None
            purchase_day_set: set = set()
            future_purchase = False
            future_activity = False

            # --- orders
            for row in user_orders.itertuples(index=False):
                if row.day >= start:  # at or after S: only the label may look at it
                    if row.day < horizon_end:
                        future_activity = True
                        if not row.is_return:
                            future_purchase = True
                    continue
                first_order_day = row.day if first_order_day is None else min(first_order_day, row.day)
                last_activity_day = row.day if last_activity_day is None else max(last_activity_day, row.day)
                if not row.is_return:
                    lifetime_orders += 1
                    lifetime_spend += _num(row.amount)
                    last_purchase_day = row.day if last_purchase_day is None else max(last_purchase_day, row.day)
                    purchase_day_set.add(row.day)
                t = bucket_of(row.day, snapshot)
                if t is None:
                    continue
                active_days[t].add(row.day)
                if row.is_return:
                    sequence[t][position["returns"]] += 1
                else:
                    sequence[t][position["orders"]] += 1
                    sequence[t][position["spend"]] += _num(row.amount)
                    sequence[t][position["items"]] += _num(row.n_items)

            # --- events
            if user_events is not None:
                for row in user_events.itertuples(index=False):
                    if row.day >= start:
                        if row.day < horizon_end:
                            future_activity = True
                        continue
                    last_activity_day = row.day if last_activity_day is None else max(last_activity_day, row.day)
                    t = bucket_of(row.day, snapshot)
                    if t is None:
                        continue
                    active_days[t].add(row.day)
                    channel = EVENT_CHANNEL.get(row.event_type)
                    if channel is not None:  # an unknown event type is activity but feeds no count channel
                        sequence[t][position[channel]] += 1

            # --- reviews
            if user_reviews is not None:
                for row in user_reviews.itertuples(index=False):
                    if row.day >= start:
                        if row.day < horizon_end:
                            future_activity = True
                        continue
                    last_activity_day = row.day if last_activity_day is None else max(last_activity_day, row.day)
                    t = bucket_of(row.day, snapshot)
                    if t is None:
                        continue
                    active_days[t].add(row.day)
                    sequence[t][position["reviews"]] += 1
                    if not _is_missing(row.rating):
                        ratings[t].append(float(row.rating))
                for t in range(n_buckets):
                    if ratings[t]:
                        sequence[t][position["rating_mean"]] = sum(ratings[t]) / len(ratings[t])

            for t in range(n_buckets):
                sequence[t][position["active_days"]] = float(len(active_days[t]))

            # --- static features (eligible => at least one purchase before S, so these days exist)
            user_row = users_by_id.get(user)
            if user_row is not None and user_row.day is not None:
                tenure_from = user_row.day
            else:
                tenure_from = first_order_day
            country = UNKNOWN if user_row is None or _is_missing(user_row.country) else str(user_row.country)
            channel_value = UNKNOWN if user_row is None or _is_missing(user_row.channel) else str(user_row.channel)

            if labelled:
                churned = not future_purchase if churn_definition == "no_order" else not future_activity
                label = 1.0 if churned else 0.0
            else:
                label = math.nan

            rhythm = _purchase_rhythm(sorted(purchase_day_set), snapshot)
            rows.append(
                {
                    "user_id": user,
                    "snapshot_date": snapshot,
                    "split": split,
                    "label": label,
                    # time-major: [t * C + c]; stored as float32 (rounded once from the double sums)
                    "sequence": np.asarray(sequence, dtype=np.float64).astype(np.float32).reshape(-1).tolist(),
                    "tenure_days": float((snapshot - tenure_from).days),
                    "days_since_last_order": float((snapshot - last_purchase_day).days),
                    "days_since_last_event": float((snapshot - last_activity_day).days),
                    "lifetime_orders": float(lifetime_orders),
                    "lifetime_spend": float(lifetime_spend),
                    "mean_order_value": lifetime_spend / lifetime_orders if lifetime_orders > 0 else 0.0,
                    **rhythm,
                    "country": country,
                    "channel": channel_value,
                }
            )

    result = pd.DataFrame(rows, columns=[c for c in OUTPUT_COLUMNS if c != "long_sequence"])
    # the long sequence is, by the contract, the sequence of the same rows at the coarser bucketing
    coarse = (
        build_reference(
            tables,
            snapshots,
            n_buckets=long_buckets,
            bucket_days=long_bucket_days,
            lookback_days=lookback_days,
            horizon_days=horizon_days,
            as_of=as_of,
            churn_definition=churn_definition,
            return_statuses=return_statuses,
        )  # fmt: skip
        if long_buckets
        else result.assign(sequence=[[] for _ in range(len(result))])
    )
    if list(coarse["user_id"]) != list(result["user_id"]):  # same rows by construction (eligibility ignores buckets)
        raise AssertionError("coarse and fine reference rows differ")
    result.insert(5, "long_sequence", list(coarse["sequence"]))
    result["label"] = result["label"].astype("float64")
    for column in FEATURE_STATIC:
        result[column] = result[column].astype("float64")
    for column in ["user_id", "split"] + CATEGORICAL_STATIC:
        result[column] = result[column].astype(object)
    return result.reset_index(drop=True)


def _purchase_rhythm(days: List[dt.date], snapshot: dt.date) -> Dict[str, float]:
    """The RHYTHM_STATIC features of one user from their sorted distinct purchase days before the snapshot."""
    gaps = [float((b - a).days) for a, b in zip(days, days[1:])]
    mean = sum(gaps) / len(gaps) if gaps else 0.0
    spread = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) if len(gaps) >= 2 else 0.0
    since_last = float((snapshot - days[-1]).days)
    return {
        "purchase_days": float(len(days)),
        "days_since_first_purchase": float((snapshot - days[0]).days),
        "gap_mean_days": mean,
        "gap_std_days": spread,
        "overdue_ratio": since_last / mean if gaps else 0.0,
    }
