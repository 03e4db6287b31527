"""Point-in-time behaviour sequences and labels, as DataFrame transforms (contract: ``feature_spec``).

Plan: every source row becomes one narrow activity row (user, day, kind, value, items), shuffled once by ``user_id``;
each partition's rows are sorted by (user, day) and turned into the feature rows of every snapshot by the numpy
kernel of :mod:`churn_spark.user_history` (``mapInArrow``), which sums each (user, day) and then reads each day once
instead of once per snapshot; the users source is joined last.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Dict, List, Optional, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from .feature_spec import (
    MODEL_INPUT_COLUMNS,
    RETURN_STATUSES,
    channels_for,
    normalise_statuses,
    snapshot_plan,
)
from .lake import utc_day
from .user_history import EVENT_KIND, OTHER_EVENT, OUTPUT_SCHEMA, PURCHASE, RETURN, REVIEW, Layout, feature_batches

EPOCH = dt.date(1970, 1, 1)


def _activity(tables: Dict[str, DataFrame], return_statuses: Sequence[str]) -> DataFrame:
    """Union of all sources as the kernel's narrow ``INPUT_COLUMNS`` rows, one per source row; ``day`` is the UTC day.

    These rows are what the feature build shuffles, so they stay narrow: the channel sums are spelled out only
    by the kernel (:func:`churn_spark.user_history.daily_sums`).
    """
    day = F.unix_date(utc_day(F.col("ts"))).alias("day")
    none = F.lit(None).cast("double")

    def narrow(df: DataFrame, kind, value, items) -> DataFrame:
        return df.select("user_id", day, kind.cast("int").alias("kind"), value.alias("value"), items.alias("items"))

    returned = F.coalesce(F.col("status"), F.lit("")).isin(*normalise_statuses(return_statuses))
    o = tables["orders"]
    parts = [narrow(o, F.when(returned, RETURN).otherwise(PURCHASE), F.col("amount"), F.col("n_items").cast("double"))]
    if "events" in tables:
        kind = F.lit(OTHER_EVENT)
        for et, code in EVENT_KIND.items():
            kind = F.when(F.col("event_type") == et, code).otherwise(kind)
        parts.append(narrow(tables["events"], kind, none, none))
    if "reviews" in tables:
        parts.append(narrow(tables["reviews"], F.lit(REVIEW), F.col("rating").cast("double"), none))
    return functools.reduce(DataFrame.unionByName, parts)


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
    status, or none, is a purchase. The daily rows are partitioned by user and sorted by (user, day); the kernel of
    :mod:`churn_spark.user_history` turns each user's rows into all snapshots' rows in one pass.
    """
    layout = Layout(
        channels=tuple(channels_for(list(tables))),
        n_buckets=n_buckets,
        bucket_days=bucket_days,
        long_buckets=long_buckets,
        long_bucket_days=long_bucket_days if long_buckets else 0,
        lookback_days=lookback_days,
        horizon_days=horizon_days,
        churn_definition=churn_definition,
        snapshots=tuple(
            ((s - EPOCH).days, split, s + dt.timedelta(days=horizon_days) <= as_of) for s, split in sorted(plan.items())
        ),
    )
    rows = (
        _activity(tables, return_statuses)
        .repartition("user_id")
        .sortWithinPartitions("user_id", "day")
        .mapInArrow(functools.partial(feature_batches, layout), OUTPUT_SCHEMA)
    )
    S = F.date_from_unix_date("snapshot_day")
    out = rows.select(
        "*",
        S.alias("snapshot_date"),
        (F.col("snapshot_day") - F.col("first_order_day")).cast("double").alias("_tenure_orders"),
    )
    out = _with_users(out, tables.get("users"))
    return out.select("user_id", "snapshot_date", "split", "label", *MODEL_INPUT_COLUMNS)


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
