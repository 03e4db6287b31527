"""Demo lake generator: reproducible, realistic shape, written as Delta with time travel."""

import datetime as dt

from pyspark.sql import functions as F

from churn_spark.generator import EVENT_TYPES, LakeSpec, generate, write_lake

SPEC = LakeSpec(users=300, weeks=30, seed=5)


def _fingerprint(df):
    return df.select(F.sum(F.xxhash64(*df.columns)).alias("h"), F.count("*").alias("n")).first()


def test_same_seed_same_rows_other_seed_other_rows(spark):
    a, b = generate(spark, SPEC), generate(spark, SPEC)
    # different partitioning must not change the rows either
    b = {k: v.repartition(3) for k, v in b.items()}
    for name in a:
        assert _fingerprint(a[name]) == _fingerprint(b[name]), name
    c = generate(spark, LakeSpec(users=300, weeks=30, seed=6))
    assert _fingerprint(a["orders"]) != _fingerprint(c["orders"])


def test_schema_and_value_ranges(spark):
    t = generate(spark, SPEC)
    assert t["users"].columns == ["user_id", "signup_ts", "country", "channel"]
    assert t["orders"].columns == ["order_id", "user_id", "order_ts", "amount", "n_items", "status"]
    assert t["events"].columns == ["user_id", "event_ts", "event_type", "item_id", "category"]
    assert t["reviews"].columns == ["user_id", "review_ts", "rating"]
    o = (
        t["orders"]
        .agg(F.min("amount"), F.min("order_ts"), F.max("order_ts"), F.countDistinct("order_id"), F.count("*"))
        .first()
    )
    assert o[0] > 0 and o[1] >= dt.datetime(2026, 3, 30) and o[2] < dt.datetime(2026, 11, 2)
    assert o[3] == o[4]  # order ids are unique
    assert {r[0] for r in t["orders"].select("status").distinct().collect()} == {"completed", "cancelled", "refunded"}
    assert {r[0] for r in t["events"].select("event_type").distinct().collect()} == set(EVENT_TYPES)
    r = t["reviews"].agg(F.min("rating"), F.max("rating")).first()
    assert 1 <= r[0] and r[1] <= 5


def test_scale_sanity(spark):
    t = generate(spark, SPEC)
    n = {k: v.count() for k, v in t.items()}
    assert n["users"] == 300
    assert 5 * 300 < n["orders"] < 30 * 300  # users sign up over time; ~0.2-1 orders per user-week
    assert 100 * 300 < n["events"] < 400 * 300
    assert 0.15 * n["orders"] < n["reviews"] < 0.4 * n["orders"]


def test_churn_is_a_process_over_time(spark):
    """Users who stop ordering were browsing less before they stopped (browsing fades first)."""
    t = generate(spark, SPEC)
    weekly = (
        t["events"]
        .where("event_type = 'view'")
        .groupBy("user_id", F.floor(F.datediff(F.lit(SPEC.end_date), F.to_date("event_ts")) / 7).alias("wb"))
        .count()
    )
    last_order = t["orders"].groupBy("user_id").agg(F.max("order_ts").alias("lo"))
    gone = last_order.where(F.col("lo") < F.lit(dt.datetime(2026, 8, 1))).select("user_id")
    stay = last_order.where(F.col("lo") >= F.lit(dt.datetime(2026, 10, 20))).select("user_id")

    def ratio(users):  # views in weeks 14-17 before the end vs weeks 22-25 (the decline happens in between for 'gone')
        w = weekly.join(users, "user_id")
        late = w.where("wb BETWEEN 14 AND 17").agg(F.sum("count")).first()[0] or 0
        early = w.where("wb BETWEEN 22 AND 25").agg(F.sum("count")).first()[0] or 1
        return late / early

    assert ratio(gone) < 0.6 * ratio(stay)


def test_dirty_lake_has_each_kind_of_dirt(spark):
    t = generate(spark, LakeSpec(users=300, weeks=30, seed=5, dirty=True))
    o = t["orders"]
    assert o.where("user_id IS NULL").count() > 0
    assert o.where("amount < 0").count() > 0
    assert o.where(F.col("order_ts") >= F.lit(dt.datetime(2026, 11, 2))).count() > 0
    e = t["events"]
    assert e.count() > e.distinct().count()  # exact duplicates


def test_written_as_delta_with_time_travel(spark, tmp_path):
    lake = str(tmp_path / "lake")
    counts = write_lake(spark, LakeSpec(users=50, weeks=10, seed=1), lake)
    assert counts["users"] == 50 and counts["orders"] > 0
    write_lake(spark, LakeSpec(users=80, weeks=10, seed=1), lake)  # overwrite: a new Delta version
    assert spark.read.format("delta").load(f"{lake}/users").count() == 80
    assert spark.read.format("delta").option("versionAsOf", 0).load(f"{lake}/users").count() == 50


def test_csv_mode_writes_string_timestamps_and_garbage(spark, tmp_path):
    lake = str(tmp_path / "lake")
    write_lake(spark, LakeSpec(users=1500, weeks=8, seed=3, dirty=True, csv=True), lake)
    o = spark.read.option("header", True).csv(f"{lake}/orders")
    assert o.where("order_ts = 'not-a-date'").count() > 0
    assert dict(o.dtypes)["order_ts"] == "string"
