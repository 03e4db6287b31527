"""Point-in-time behaviour sequences and labels, as pure DataFrame transforms (contract: ``feature_spec``).

Plan: every source becomes daily per-user activity rows (one shuffle, by ``user_id``); the small snapshot table is
broadcast-joined onto them; rows are aggregated per (user, snapshot, bucket) and then per (user, snapshot) — both
aggregations reuse the ``user_id`` partitioning, so the whole build costs one shuffle of the activity plus the
users join. Bucket ``-1`` collects older history (lifetime statistics), ``-2`` the label horizon after S.
"""

from __future__ import annotations

import datetime as dt
from typing import Dict, List, Optional, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from .feature_spec import (
    EVENT_CHANNEL,
    MODEL_INPUT_COLUMNS,
    RETURN_STATUSES,
    SEQUENCE_TYPE,
    channels_for,
    normalise_statuses,
    snapshot_plan,
)
from .lake import utc_day

_DAILY_SUMS = [
    "orders",
    "spend",
    "items",
    "returns",
    "views",
    "carts",
    "favourites",
    "searches",
    "reviews",
    "rating_sum",
    "any_order",
]


def _activity(tables: Dict[str, DataFrame], return_statuses: Sequence[str]) -> DataFrame:
    """Union of all sources as (user_id, day, channel values...) rows, one per input row; ``day`` is the UTC day."""
    zero = {c: F.lit(0.0) for c in _DAILY_SUMS}
    day = utc_day(F.col("ts")).alias("day")
    parts = []
    o = tables["orders"]
    purchase = ~F.coalesce(F.col("status"), F.lit("")).isin(*normalise_statuses(return_statuses))
    parts.append(
        o.select(
            "user_id",
            day,
            *[
                v.alias(k)
                for k, v in {
                    **zero,
                    "orders": purchase.cast("double"),
                    "spend": F.when(purchase, F.col("amount")).otherwise(0.0),
                    "items": F.when(purchase, F.col("n_items")).otherwise(0.0),
                    "returns": (~purchase).cast("double"),
                    "any_order": F.lit(1.0),
                }.items()
            ],
        )
    )
    if "events" in tables:
        e = tables["events"]
        vals = {**zero, **{ch: (F.col("event_type") == et).cast("double") for et, ch in EVENT_CHANNEL.items()}}
        parts.append(e.select("user_id", day, *[v.alias(k) for k, v in vals.items()]))
    if "reviews" in tables:
        r = tables["reviews"]
        vals = {**zero, "reviews": F.lit(1.0), "rating_sum": F.col("rating").cast("double")}
        parts.append(r.select("user_id", day, *[v.alias(k) for k, v in vals.items()]))
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def daily_activity(tables: Dict[str, DataFrame], return_statuses: Sequence[str] = RETURN_STATUSES) -> DataFrame:
    """(user_id, day) -> channel sums; partitioned by user_id so later groupings need no further shuffle."""
    return (
        _activity(tables, return_statuses)
        .repartition("user_id")
        .groupBy("user_id", "day")
        .agg(*[F.sum(c).alias(c) for c in _DAILY_SUMS])
    )


def snapshots_frame(spark: SparkSession, plan: Dict[dt.date, str], horizon_days: int, as_of: dt.date) -> DataFrame:
    rows = [(s, split, s + dt.timedelta(days=horizon_days) <= as_of) for s, split in sorted(plan.items())]
    return spark.createDataFrame(rows, "snapshot_date date, split string, labelled boolean")


def build_features(
    spark: SparkSession,
    tables: Dict[str, DataFrame],
    plan: Dict[dt.date, str],
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
) -> DataFrame:
    """Feature rows for every eligible (user, snapshot) of ``plan``; see ``feature_spec`` for the contract.

    ``return_statuses`` are the order statuses counted as returns (``validation.return_statuses``); any other
    status, or none, is a purchase.
    """
    T, B = n_buckets, bucket_days
    channels = channels_for(list(tables))
    snaps = snapshots_frame(spark, plan, horizon_days, as_of)
    day, S = F.col("day"), F.col("snapshot_date")
    k = F.datediff(S, day)
    grains = [F.struct(F.lit(0).alias("kind"), _bucket(k, T, B, F.lit(-1)).alias("bucket"))]
    if long_buckets:  # every day also lands in its coarse bucket: both sequences come from one aggregation
        grains.append(
            F.struct(F.lit(1).alias("kind"), _bucket(k, long_buckets, long_bucket_days, F.lit(None)).alias("bucket"))
        )
    daily = daily_activity(tables, return_statuses)
    # every user's sorted purchase days, once per user (not per snapshot and bucket); each snapshot keeps the days
    # before it below. Collected here, the per-bucket aggregation holds only fixed-width values: a hash aggregation,
    # not the sort-based one that a collect_list over millions of groups falls back to.
    purchase_days = (
        daily.where(F.col("orders") > 0).groupBy("user_id").agg(F.array_sort(F.collect_list("day")).alias("_all_pdays"))
    )
    joined = (
        daily.join(F.broadcast(snaps), day < F.date_add(S, horizon_days))
        .select("*", F.inline(F.array(*grains)))
        .where((F.col("kind") == 0) | (F.col("bucket") >= 0))
    )
    # level 1: (user, snapshot, grain, bucket); grain 0: the weekly buckets (-1: older, -2: the horizon), 1: coarse
    in_lookback = (k >= 1) & (k <= lookback_days)
    lvl1 = joined.groupBy("user_id", "snapshot_date", "split", "labelled", "kind", "bucket").agg(
        *[F.sum(c).alias(c) for c in _DAILY_SUMS],
        F.count("*").alias("active_days"),
        F.max(F.when(F.col("orders") > 0, day)).alias("last_purchase_day"),
        F.max(day).alias("last_active_day"),
        F.min(F.when(F.col("any_order") > 0, day)).alias("first_order_day"),
        F.max(F.when(in_lookback & (F.col("orders") > 0), F.lit(1)).otherwise(F.lit(0))).alias("eligible"),
    )
    vec = _channel_vector(channels)
    fine, coarse = F.col("kind") == 0, F.col("kind") == 1
    past = fine & (F.col("bucket") >= -1)
    future = fine & (F.col("bucket") == -2)
    lvl2 = (
        lvl1.groupBy("user_id", "snapshot_date", "split", "labelled")
        .agg(
            F.map_from_entries(F.collect_list(F.when(fine & (F.col("bucket") >= 0), F.struct("bucket", vec)))).alias(
                "_m"
            ),
            F.map_from_entries(F.collect_list(F.when(coarse, F.struct("bucket", vec)))).alias("_long"),
            F.max(F.when(past, F.col("eligible"))).alias("_eligible"),
            F.sum(F.when(past, F.col("orders"))).alias("lifetime_orders"),
            F.sum(F.when(past, F.col("spend"))).alias("lifetime_spend"),
            F.max(F.when(past, F.col("last_purchase_day"))).alias("_last_purchase"),
            F.max(F.when(past, F.col("last_active_day"))).alias("_last_active"),
            F.min(F.when(past, F.col("first_order_day"))).alias("_first_order"),
            F.sum(F.when(future, F.col("orders"))).alias("_future_orders"),
            F.sum(F.when(future, F.col("active_days"))).alias("_future_active"),
        )
        .where(F.col("_eligible") == 1)
        .join(purchase_days, "user_id", "left")  # both sides partitioned by user_id already
    )
    sequence = _flat_sequence(F.col("_m"), T, len(channels))
    churned = (
        (F.coalesce(F.col("_future_orders"), F.lit(0.0)) == 0)
        if churn_definition == "no_order"
        else (F.coalesce(F.col("_future_active"), F.lit(0)) == 0)
    )
    out = lvl2.select(
        "user_id",
        "snapshot_date",
        "split",
        F.when(F.col("labelled"), churned.cast("double")).alias("label"),
        sequence.cast(SEQUENCE_TYPE).alias("sequence"),
        (_flat_sequence(F.col("_long"), long_buckets, len(channels)) if long_buckets else F.array())
        .cast(SEQUENCE_TYPE)
        .alias("long_sequence"),
        F.datediff(S, "_first_order").cast("double").alias("_tenure_orders"),
        F.datediff(S, "_last_purchase").cast("double").alias("days_since_last_order"),
        F.datediff(S, "_last_active").cast("double").alias("days_since_last_event"),
        F.coalesce("lifetime_orders", F.lit(0.0)).alias("lifetime_orders"),
        F.coalesce("lifetime_spend", F.lit(0.0)).alias("lifetime_spend"),
        F.filter(F.coalesce("_all_pdays", F.array().cast("array<date>")), lambda d: d < S).alias("_pdays"),
    ).withColumn(
        "mean_order_value",
        F.when(F.col("lifetime_orders") > 0, F.col("lifetime_spend") / F.col("lifetime_orders")).otherwise(0.0),
    )
    out = _with_users(_with_rhythm(out), tables.get("users"))
    return out.select("user_id", "snapshot_date", "split", "label", *MODEL_INPUT_COLUMNS)


def _bucket(k, n_buckets: int, bucket_days: int, older):
    """Bucket of a day ``k`` days before S: 0 (oldest) .. n-1 within the window, -2 at or after S, else ``older``."""
    inside = n_buckets - 1 - F.floor((k - 1) / bucket_days)
    return F.when(k <= 0, F.lit(-2)).when(k <= n_buckets * bucket_days, inside).otherwise(older).cast("int")


def _channel_vector(channels: List[str]):
    """The channel values of one aggregated bucket row, in contract order."""
    expr = {ch: F.col(ch) for ch in channels}
    if "rating_mean" in expr:
        expr["rating_mean"] = F.when(F.col("reviews") > 0, F.col("rating_sum") / F.col("reviews")).otherwise(0.0)
    return F.array(*[expr[ch].cast("double") for ch in channels])


def _flat_sequence(bucket_map, n_buckets: int, n_channels: int):
    """{bucket: channel vector} -> the flat time-major sequence, zeros for buckets without activity."""
    zeros = F.array_repeat(F.lit(0.0), n_channels)
    return F.flatten(
        F.transform(F.sequence(F.lit(0), F.lit(n_buckets - 1)), lambda i: F.coalesce(bucket_map[i], zeros))
    )


def _with_rhythm(features: DataFrame) -> DataFrame:
    """Purchase-rhythm statics from ``_pdays`` (the sorted distinct purchase days before S, bounded by the user's
    own history): gaps between consecutive days, their mean and population spread, and the overdue ratio."""
    days = F.col("_pdays")
    n = F.size(days)
    gaps = F.zip_with(F.slice(days, 2, n - 1), F.slice(days, 1, n - 1), lambda later, before: F.datediff(later, before))
    mean = F.aggregate(gaps, F.lit(0.0), lambda acc, g: acc + g) / (n - 1)
    spread = F.sqrt(F.aggregate(gaps, F.lit(0.0), lambda acc, g: acc + (g - F.col("gap_mean_days")) ** 2) / (n - 1))
    return (
        features.withColumn("purchase_days", n.cast("double"))
        .withColumn("days_since_first_purchase", F.datediff("snapshot_date", days[0]).cast("double"))
        .withColumn("gap_mean_days", F.when(n >= 2, mean).otherwise(0.0))
        .withColumn("gap_std_days", F.when(n >= 3, spread).otherwise(0.0))
        .withColumn(
            "overdue_ratio", F.when(n >= 2, F.col("days_since_last_order") / F.col("gap_mean_days")).otherwise(0.0)
        )
        .drop("_pdays")
    )


def _with_users(features: DataFrame, users: DataFrame | None) -> DataFrame:
    """Static user attributes; tenure from signup when known, else from the first order."""
    if users is None:
        return (
            features.withColumn("tenure_days", F.col("_tenure_orders"))
            .withColumn("country", F.lit("unknown"))
            .withColumn("channel", F.lit("unknown"))
            .drop("_tenure_orders")
        )
    u = users.select("user_id", utc_day(F.col("ts")).alias("_signup"), "country", "channel").dropDuplicates(["user_id"])
    j = features.join(u, "user_id", "left")
    return (
        j.select(
            "*",
            F.coalesce(F.datediff("snapshot_date", "_signup").cast("double"), F.col("_tenure_orders")).alias(
                "tenure_days"
            ),
        )
        .drop("_signup", "_tenure_orders")
        .withColumn("country", F.coalesce("country", F.lit("unknown")))
        .withColumn("channel", F.coalesce("channel", F.lit("unknown")))
    )


def plan_for(cfg, run_date: dt.date) -> Dict[dt.date, str]:
    s = cfg.snapshots
    return snapshot_plan(run_date, s.horizon_days, s.step_days, s.n_labelled)


def build_from_config(
    spark: SparkSession, cfg, tables: Dict[str, DataFrame], run_date: dt.date, plan: Optional[Dict] = None
) -> DataFrame:
    """Feature rows with the config's settings, labels as known on ``run_date``; ``plan`` defaults to the run's."""
    return build_features(
        spark,
        tables,
        plan if plan is not None else plan_for(cfg, run_date),
        n_buckets=cfg.sequence.n_buckets,
        bucket_days=cfg.sequence.bucket_days,
        lookback_days=cfg.lookback_days,
        horizon_days=cfg.snapshots.horizon_days,
        as_of=run_date,
        churn_definition=cfg.snapshots.churn_definition,
        return_statuses=cfg.validation.return_statuses,
        long_buckets=cfg.sequence.long_buckets,
        long_bucket_days=cfg.sequence.long_bucket_days,
    )


def write_features(
    features: DataFrame, path: str, snapshots: List[dt.date], lineage: dict, contract: Optional[dict] = None
) -> int:
    """Replace exactly the given snapshot partitions in one Delta commit; returns the version of that commit.

    The commit's metadata records the input versions and the feature contract (channels, buckets, statics), which
    scoring and the gate compare with a model's before applying it.
    """
    from .delta_util import commit_metadata, new_write_id, write_version

    dates = ", ".join(f"DATE'{d.isoformat()}'" for d in sorted(snapshots))
    write_id = new_write_id()
    (
        _as_table_types(features, path)
        .write.format("delta")
        .mode("overwrite")
        .partitionBy("snapshot_date")
        .option("replaceWhere", f"snapshot_date IN ({dates})")
        .option("mergeSchema", "true")  # tables written before a new feature column gain it (older rows: null)
        .option("userMetadata", commit_metadata(write_id, inputs=lineage, contract=contract))
        .save(path)
    )
    return write_version(features.sparkSession, path, write_id)


def _as_table_types(features: DataFrame, path: str) -> DataFrame:
    """``features`` with the column types of an existing table at ``path``: a table written before the sequences
    became float32 keeps its double arrays (widening on write; Delta cannot narrow a column in place)."""
    from delta.tables import DeltaTable

    spark = features.sparkSession
    if not DeltaTable.isDeltaTable(spark, path):
        return features
    existing = {f.name: f.dataType for f in spark.read.format("delta").load(path).schema.fields}
    return features.select(
        *[
            F.col(f.name).cast(existing[f.name]) if f.name in existing and existing[f.name] != f.dataType else f.name
            for f in features.schema.fields
        ]
    )


def table_contract(spark: SparkSession, path: str, version: int) -> Optional[dict]:
    """The feature contract recorded by the commit that wrote ``version`` (None for tables written before)."""
    from .delta_util import commit_user_metadata

    return (commit_user_metadata(spark, path, version) or {}).get("contract")
