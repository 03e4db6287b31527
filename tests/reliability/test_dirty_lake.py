"""Dirty lakes: each kind of bad input is quarantined with a reason or stopped with an error naming source/column."""

import datetime as dt

import pytest
from conftest import make_config
from pyspark.sql import functions as F

from churn_spark.lake import BadInputError, ingest
from churn_spark.pipeline import build_sequences

CLOCK = dt.date(2026, 6, 1)
ORDERS = "order_id long, user_id string, order_ts string, amount double, n_items int, status string"


def _orders_only(tmp_path, *extra):
    return make_config(tmp_path, "sources.events=null", "sources.reviews=null", "sources.users=null", *extra)


def test_non_utf8_bytes_are_quarantined(spark, tmp_path):
    cfg = _orders_only(tmp_path, "sources.orders.format=csv", "validation.max_bad_fraction=0.9")
    d = tmp_path / "lake" / "orders"
    d.mkdir(parents=True)
    (d / "part-0.csv").write_bytes(
        b"order_id,user_id,order_ts,amount,n_items,status\n"
        b"1,u1,2026-05-01 10:00:00,10.0,1,completed\n"
        b"2,u\xfc2,2026-05-01 10:00:00,10.0,1,completed\n"
    )  # latin-1 byte in an id
    res = ingest(spark, cfg, "r", CLOCK)
    assert res.counts["orders"].by_reason == {"bad_encoding": 1} and res.counts["orders"].balanced


def test_wrong_column_type_in_a_delta_source(spark, tmp_path):
    cfg = _orders_only(tmp_path, "validation.max_bad_fraction=0.9")
    spark.createDataFrame(
        [(1, "u1", "2026-05-01", "12.5"), (2, "u1", "2026-05-02", "twelve")],
        "order_id long, user_id string, order_ts string, amount string",
    ).write.format("delta").save(f"{cfg.lake_dir}/orders")
    res = ingest(spark, cfg, "r", CLOCK)
    assert res.counts["orders"].by_reason == {"bad_amount": 1}
    assert res.tables["orders"].first().amount == 12.5


def test_schema_changed_between_runs_is_a_clear_error(spark, tmp_path):
    cfg = _orders_only(tmp_path)
    path = f"{cfg.lake_dir}/orders"
    spark.createDataFrame([(1, "u1", "2026-05-01", 1.0, 1, "completed")], ORDERS).write.format("delta").save(path)
    assert ingest(spark, cfg, "r", CLOCK).counts["orders"].used == 1
    spark.createDataFrame([(2, "u1", "2026-05-01", 1.0, 1, "completed")], ORDERS).withColumnRenamed(
        "order_ts", "ts_utc"
    ).write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)
    with pytest.raises(BadInputError) as e:
        ingest(spark, cfg, "r", CLOCK)
    assert (
        "source 'orders'" in str(e.value)
        and "'order_ts'" in str(e.value)
        and "sources.orders.columns.ts" in str(e.value)
    )


def test_empty_optional_source_just_contributes_nothing(spark, tmp_path):
    cfg = make_config(tmp_path, "sources.reviews=null", "sources.users=null", "snapshots.n_labelled=3")
    spark.createDataFrame(
        [("u1", "2026-05-20 10:00:00", 5.0, 1, "completed")],
        "user_id string, order_ts string, amount double, n_items int, status string",
    ).write.format("delta").save(f"{cfg.lake_dir}/orders")
    spark.createDataFrame([], "user_id string, event_ts string, event_type string").write.format("delta").save(
        f"{cfg.lake_dir}/events"
    )
    out = build_sequences(spark, cfg, CLOCK)
    assert out["ingest"]["events"]["rows_in"] == 0
    f = spark.read.format("delta").load(cfg.features_path).where(F.col("snapshot_date") == F.lit(CLOCK)).collect()
    assert len(f) == 1 and len(f[0].sequence) == 26 * 9  # orders (4) + events (4) channels + active_days


def test_bad_fraction_stops_the_weekly_build_before_writing(spark, tmp_path):
    cfg = _orders_only(tmp_path, "validation.max_bad_fraction=0.01")
    spark.createDataFrame(
        [(i, None if i % 2 else "u", "2026-05-01", 1.0, 1, "completed") for i in range(10)], ORDERS
    ).write.format("delta").save(f"{cfg.lake_dir}/orders")
    with pytest.raises(BadInputError, match="Nothing was written"):
        build_sequences(spark, cfg, CLOCK)
    from pathlib import Path

    assert not Path(cfg.features_path).exists() and not Path(cfg.quarantine_path).exists()
