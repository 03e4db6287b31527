"""Synthetic e-commerce lake, generated in Spark (distributed, seeded, reproducible).

Churn is a hidden process over time, not a column: each user may enter a *decline* at some week, after which
browsing fades first, then carts and orders, ratings turn bad and refunds rise; ``decline_weeks`` later the user is
gone. Stable users order as a Poisson process (so a long gap alone does not mean churn) and everybody follows a
yearly season. A sequence model can see the decline weeks before orders stop; recency alone sees it late.

Randomness comes from ``xxhash64(seed, user, week, stream)`` rather than ``rand()``, so the same seed gives the
same rows whatever the partitioning or cluster size.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

COUNTRIES = ["DE", "FR", "GB", "US", "PL", "ES", "NL", "IT"]
CHANNELS = ["organic", "ads", "referral", "social"]
EVENT_TYPES = ["view", "cart", "favorite", "search"]
CATEGORIES = ["fashion", "home", "electronics", "beauty", "sports", "books", "toys", "grocery"]
# an order's status: cancelled with CANCEL_P, else refunded with REFUND_P[declining], else completed
CANCEL_P = 0.04
REFUND_P = {True: 0.12, False: 0.03}


@dataclass(frozen=True)
class LakeSpec:
    users: int = 20_000
    weeks: int = 78
    end_date: dt.date = dt.date(2026, 11, 2)  # exclusive: no activity on or after this day
    seed: int = 42
    dirty: bool = False
    csv: bool = False  # write orders and events as CSV with string timestamps (and unparseable rows if dirty)
    decline_share: float = 0.55  # share of users that enter a decline at some week (possibly after the end)

    @property
    def start_date(self) -> dt.date:
        return self.end_date - dt.timedelta(weeks=self.weeks)


def _u(seed: int, *parts) -> Column:
    """Uniform [0,1) from a hash of (seed, parts...): deterministic, partitioning-independent."""
    cols = [F.lit(seed)] + [p if isinstance(p, Column) else F.lit(p) for p in parts]
    return (F.xxhash64(*cols).bitwiseAND(F.lit((1 << 52) - 1))).cast("double") / float(1 << 52)


def _normal(seed: int, *parts) -> Column:
    u1 = F.greatest(_u(seed, *parts, "n1"), F.lit(1e-12))
    u2 = _u(seed, *parts, "n2")
    return F.sqrt(-2.0 * F.log(u1)) * F.cos(2 * math.pi * u2)


def _count(mean: Column, seed: int, *parts) -> Column:
    """Poisson-like count: two Bernoullis below mean 2, a rounded normal above."""
    small = (_u(seed, *parts, "b1") < mean / 2).cast("int") + (_u(seed, *parts, "b2") < mean / 2).cast("int")
    big = F.greatest(F.lit(0), F.round(mean + F.sqrt(mean) * _normal(seed, *parts)).cast("int"))
    return F.when(mean < 2, small).otherwise(big)


def _pick(values: list, u: Column) -> Column:
    arr = F.array(*[F.lit(v) for v in values])
    return F.element_at(arr, (F.floor(u * len(values)) + 1).cast("int"))


def users_frame(spark: SparkSession, spec: LakeSpec) -> DataFrame:
    """One row per user with the hidden parameters (kept out of the written tables)."""
    parts = max(2, spec.users // 20_000)
    s = spec.seed
    u = spark.range(0, spec.users, numPartitions=parts).withColumnRenamed("id", "uid")
    channel = _pick(CHANNELS, _u(s, "uid_channel", F.col("uid")))
    # ads users decline more often; a static hint, not the whole story
    decline_p = F.lit(spec.decline_share) * F.when(channel == "ads", 1.3).otherwise(0.9)
    signup_week = F.floor(_u(s, "signup", F.col("uid")) * (spec.weeks + 52 - 12)).cast("int") - 52
    declines = _u(s, "declines", F.col("uid")) < decline_p
    decline_start = signup_week + 4 + F.floor(_u(s, "dstart", F.col("uid")) * (spec.weeks + 30)).cast("int")
    return u.select(
        "uid",
        channel.alias("channel"),
        _pick(COUNTRIES, _u(s, "country", F.col("uid"))).alias("country"),
        signup_week.alias("signup_week"),
        # orders per week when engaged: 0.12 .. ~1.5
        (0.12 + 0.45 * -F.log(F.greatest(_u(s, "rate", F.col("uid")), F.lit(1e-9)))).alias("rate"),
        (20 + 90 * _u(s, "aov", F.col("uid"))).alias("aov"),
        F.when(declines, decline_start).otherwise(F.lit(10_000)).alias("decline_start"),
        (3 + F.floor(_u(s, "dlen", F.col("uid")) * 8)).cast("int").alias("decline_weeks"),
    )


def user_weeks(spark: SparkSession, spec: LakeSpec, users: DataFrame) -> DataFrame:
    """One row per user and week since signup with the hidden state of that week (engagement, season, decline):
    what the orders and events are drawn from, and what :mod:`churn_spark.generator_truth` reads."""
    weeks = spark.range(0, spec.weeks).withColumnRenamed("id", "week").withColumn("week", F.col("week").cast("int"))
    uw = users.crossJoin(F.broadcast(weeks)).where(F.col("week") >= F.col("signup_week"))
    start = F.lit(spec.start_date)
    week_start = F.date_add(start, F.col("week") * 7)
    season = (
        1
        + 0.25 * F.sin(2 * math.pi * F.weekofyear(week_start) / 52.0)
        + F.when(F.month(week_start).isin(11, 12), 0.3).otherwise(0.0)
    )
    # engagement: 1 before the decline, linear fade during it, 0 after; browsing fades two weeks earlier
    progress = (F.col("week") - F.col("decline_start")) / F.col("decline_weeks")
    browse_progress = (F.col("week") - F.col("decline_start") + 2) / F.col("decline_weeks")
    engage = F.greatest(F.lit(0.0), F.least(F.lit(1.0), 1 - progress))
    browse = F.greatest(F.lit(0.03), F.least(F.lit(1.0), 1 - browse_progress))
    return uw.select(
        "*",
        week_start.alias("week_start"),
        F.pow(engage, 1.5).alias("engage"),
        browse.alias("browse"),
        season.alias("season"),
        (F.col("week") >= F.col("decline_start")).alias("declining"),
    )


def _timestamp(spec: LakeSpec, stream: str, *parts) -> Column:
    """A timestamp uniformly inside the row's week."""
    secs = F.floor(_u(spec.seed, stream, *parts) * 7 * 86400).cast("long")
    return (F.col("week_start").cast("timestamp").cast("long") + secs).cast("timestamp")


def order_mean() -> Column:
    """Expected orders of a user week (a row of :func:`user_weeks`), the mean of its :func:`_count`."""
    return F.col("rate") * F.col("engage") * F.col("season")


def generate(spark: SparkSession, spec: LakeSpec) -> dict[str, DataFrame]:
    """Return the four lake tables as lazy DataFrames (nothing is built on the driver)."""
    s = spec.seed
    users = users_frame(spark, spec)
    uw = user_weeks(spark, spec, users)
    uid, wk = F.col("uid"), F.col("week")

    # ---- orders --------------------------------------------------------------------------------------------
    o_mean = order_mean()
    orders = (
        uw.withColumn("n", _count(o_mean, s, "orders", uid, wk))
        .where("n > 0")
        .withColumn("i", F.explode(F.sequence(F.lit(0), F.col("n") - 1)))
    )
    refund_p = F.when(F.col("declining"), REFUND_P[True]).otherwise(REFUND_P[False])
    r = _u(s, "status", uid, wk, F.col("i"))
    orders = orders.select(
        (uid * 100_000 + wk * 100 + F.col("i")).alias("order_id"),
        uid.alias("user_id"),
        _timestamp(spec, "ots", uid, wk, F.col("i")).alias("order_ts"),
        F.round(F.col("aov") * F.exp(0.4 * _normal(s, "amt", uid, wk, F.col("i"))), 2).alias("amount"),
        (1 + F.floor(_u(s, "items", uid, wk, F.col("i")) * 4)).cast("int").alias("n_items"),
        F.when(r < CANCEL_P, "cancelled")
        .when(r < CANCEL_P + refund_p, "refunded")
        .otherwise("completed")
        .alias("status"),
        F.col("declining"),
    )

    # ---- browsing events -------------------------------------------------------------------------------------
    v_mean = (3 + 10 * F.sqrt(F.col("rate"))) * F.col("browse") * F.col("season")
    kinds = F.array(
        F.struct(F.lit("view").alias("t"), v_mean.alias("m")),
        F.struct(F.lit("cart").alias("t"), (0.18 * v_mean * (0.4 + 0.6 * F.col("engage"))).alias("m")),
        F.struct(F.lit("favorite").alias("t"), (0.06 * v_mean).alias("m")),
        F.struct(F.lit("search").alias("t"), (0.3 * v_mean).alias("m")),
    )
    events = (
        uw.select(uid, wk, "week_start", F.explode(kinds).alias("k"))
        .withColumn("n", _count(F.col("k.m"), s, "ev", uid, wk, F.col("k.t")))
        .where("n > 0")
        .withColumn("i", F.explode(F.sequence(F.lit(0), F.col("n") - 1)))
    )
    item = F.floor(_u(s, "item", uid, wk, F.col("k.t"), F.col("i")) * 50_000).cast("long")
    events = events.select(
        uid.alias("user_id"),
        _timestamp(spec, "ets", uid, wk, F.col("k.t"), F.col("i")).alias("event_ts"),
        F.col("k.t").alias("event_type"),
        item.alias("item_id"),
        _pick(CATEGORIES, _u(s, "cat", item)).alias("category"),
    )

    # ---- reviews: some orders get one; ratings sour during a decline ----------------------------------------------
    rv = orders.where(_u(s, "rev", F.col("order_id")) < 0.3)
    good = 4 + F.floor(_u(s, "rg", F.col("order_id")) * 2)
    bad = 1 + F.floor(_u(s, "rb", F.col("order_id")) * 2)
    rating = F.when(F.col("declining") & (_u(s, "rsour", F.col("order_id")) < 0.6), bad).otherwise(
        F.when(_u(s, "rmeh", F.col("order_id")) < 0.1, F.lit(3)).otherwise(good)
    )
    reviews = rv.select(
        F.col("user_id"),
        (F.col("order_ts") + F.expr("INTERVAL 2 DAYS")).alias("review_ts"),
        rating.cast("int").alias("rating"),
    ).where(F.col("review_ts") < F.lit(spec.end_date).cast("timestamp"))

    users_out = users.select(
        uid.alias("user_id"),
        (
            F.date_add(F.lit(spec.start_date), F.col("signup_week") * 7).cast("timestamp") + F.expr("INTERVAL 9 HOURS")
        ).alias("signup_ts"),
        "country",
        "channel",
    )
    tables = {"users": users_out, "orders": orders.drop("declining"), "events": events, "reviews": reviews}
    return inject_dirt(tables, spec) if spec.dirty else tables


def inject_dirt(tables: dict[str, DataFrame], spec: LakeSpec) -> dict[str, DataFrame]:
    """Realistic dirt for the validation path: duplicates, null ids, negative amounts, future timestamps."""
    e = tables["events"]
    dup = e.where(_u(spec.seed, "dup", F.col("user_id"), F.col("event_ts"), F.col("item_id")) < 0.005)
    return dict(tables, orders=dirty_orders(tables["orders"], spec.seed), events=e.unionByName(dup))


def dirty_orders(o: DataFrame, seed: int) -> DataFrame:
    """Null user ids, future timestamps and negative amounts on a few orders (shared with the sparse profile, whose
    orders table has the same columns)."""
    future = F.col("order_ts") + F.expr("INTERVAL 400 DAYS")
    h = _u(seed, "dirt", F.col("order_id"))
    return o.select(
        "order_id",
        F.when(h < 0.002, F.lit(None)).otherwise(F.col("user_id")).alias("user_id"),
        F.when((h >= 0.002) & (h < 0.003), future).otherwise(F.col("order_ts")).alias("order_ts"),
        F.when((h >= 0.003) & (h < 0.005), -F.col("amount")).otherwise(F.col("amount")).alias("amount"),
        "n_items",
        "status",
    )


def write_lake(spark: SparkSession, spec: LakeSpec, lake_dir: str) -> dict[str, int]:
    """Write the tables (Delta, or CSV for orders/events when ``spec.csv``) and return row counts."""
    return write_tables(spark, generate(spark, spec), lake_dir, seed=spec.seed, dirty=spec.dirty, csv=spec.csv)


def write_tables(
    spark: SparkSession, tables: dict[str, DataFrame], lake_dir: str, *, seed: int, dirty: bool, csv: bool
) -> dict[str, int]:
    """Write generated tables under ``lake_dir`` and return row counts (one writer for every generator profile).

    Delta (overwrite, so a rerun is a new version); with ``csv`` orders and events are CSV with string timestamps,
    and with ``dirty`` too a few order timestamps are unparseable.
    """
    import time

    from .logs import LOG

    counts = {}
    for i, (name, df) in enumerate(tables.items(), 1):
        t0 = time.time()
        path = f"{lake_dir}/{name}"
        if csv and name in ("orders", "events"):
            ts_col = "order_ts" if name == "orders" else "event_ts"
            out = df.withColumn(ts_col, F.date_format(ts_col, "yyyy-MM-dd HH:mm:ss"))
            if dirty and name == "orders":
                bad = _u(seed, "garble", F.col("order_id")) < 0.001
                out = out.withColumn(ts_col, F.when(bad, F.lit("not-a-date")).otherwise(F.col(ts_col)))
            out.write.mode("overwrite").option("header", True).csv(path)
        else:
            df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)
        counts[name] = (
            spark.read.format("csv" if csv and name in ("orders", "events") else "delta")
            .option("header", True)
            .load(path)
            .count()
        )
        LOG.info(
            "generated %s (%d/%d): %d rows in %.1fs -> %s", name, i, len(tables), counts[name], time.time() - t0, path
        )
    return counts
