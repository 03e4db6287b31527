"""Sparse generator profile: a real retailer's shape (mostly one-time buyers, high 90-day churn), reproducible by
seed, written as the demo's orders table and nothing else, and read by the pipeline with conf/sparse.yaml."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO
from pyspark.sql import functions as F

from churn_spark.config import Config, load_config
from churn_spark.generator import LakeSpec, dirty_orders, generate
from churn_spark.generator_sparse import SparseSpec, lake_rows, lake_shape, orders_frame, simulate, write_sparse_lake

SPEC = SparseSpec(users=3000, seed=11)


@pytest.fixture(scope="module")
def simulated() -> pd.DataFrame:
    return simulate(SPEC)


@pytest.fixture(scope="module")
def sparse_cfg(tmp_path_factory) -> Config:
    """conf/sparse.yaml over the test profile, as a user would run it."""
    work = tmp_path_factory.mktemp("sparse")
    return load_config(
        [str(REPO / "conf" / "local.yaml"), str(REPO / "conf" / "sparse.yaml")],
        [f"work_dir={work}", "spark.conf.spark.sql.shuffle.partitions=2"],
    )


@pytest.fixture(scope="module")
def written(spark, sparse_cfg) -> dict[str, int]:
    return write_sparse_lake(spark, SPEC, sparse_cfg.lake_dir)


def test_shape_is_a_sparse_retailer(simulated):
    s = lake_shape(simulated, SPEC)
    assert s["customers"] == SPEC.users  # everybody's first order is inside the history
    assert s["one_time_share"] > 0.5
    assert 0.7 < s["churn_rate"] < 0.95 and 0.7 < s["churn_rate_last_labelled"] < 0.95
    assert 1.3 < s["orders_per_customer_mean"] < 4
    assert s["orders_per_customer_median"] == 1 and s["orders_per_customer_max"] >= 15  # a long tail
    assert 0.85 < s["purchase_share"] < 0.97  # mostly completed, some refunded / cancelled
    assert s["amount_p99"] > 5 * s["amount_median"]  # long-tailed spend


def test_same_seed_same_orders_other_seed_other_orders(simulated):
    pd.testing.assert_frame_equal(simulated, simulate(SPEC))
    other = simulate(dataclasses.replace(SPEC, seed=12))
    assert len(other) != len(simulated) or not other.equals(simulated)


def test_statuses_are_what_the_config_accepts(simulated):
    v = load_config([str(REPO / "conf" / "sparse.yaml")]).validation
    assert set(simulated["status"]) == {*v.purchase_statuses, *v.return_statuses}


def test_written_lake_is_the_simulation_with_the_demo_orders_schema(spark, sparse_cfg, written, simulated):
    assert list(written) == ["orders"]
    assert sorted(p.name for p in Path(sparse_cfg.lake_dir).iterdir()) == ["orders"]
    orders = spark.read.format("delta").load(f"{sparse_cfg.lake_dir}/orders")
    assert orders.dtypes == generate(spark, LakeSpec(users=5, weeks=1))["orders"].dtypes
    got = orders.select("*", F.unix_seconds("order_ts").alias("ts_s")).toPandas()
    want = lake_rows(simulated, SPEC)
    cols = ["order_id", "user_id", "ts_s", "amount", "n_items", "status"]
    got = got[cols].sort_values("order_id", ignore_index=True)
    pd.testing.assert_frame_equal(got, want[cols].reset_index(drop=True), check_dtype=False)


def test_spark_rows_do_not_depend_on_partitioning(spark):
    spec = dataclasses.replace(SPEC, users=200)
    fingerprint = lambda df: df.select(F.sum(F.xxhash64(*df.columns)), F.count("*")).first()  # noqa: E731
    assert fingerprint(orders_frame(spark, spec)) == fingerprint(orders_frame(spark, spec).repartition(3))


def test_dirty_orders_reuse_the_demo_dirt(spark):
    d = dirty_orders(orders_frame(spark, SPEC), SPEC.seed)
    assert d.where("user_id IS NULL").count() > 0 and d.where("amount < 0").count() > 0


def test_pipeline_builds_labelled_snapshots(spark, sparse_cfg, written, simulated):
    from churn_spark import pipeline

    out = pipeline.build_sequences(spark, sparse_cfg, SPEC.end_date)
    assert out["ingest"]["orders"]["quarantined"] == 0 and set(out["ingest"]) == {"orders"}
    feats = spark.read.format("delta").load(sparse_cfg.features_path)
    by_split = {
        r["split"]: r
        for r in feats.groupBy("split").agg(F.count("*").alias("n"), F.avg("label").alias("churn")).collect()
    }
    assert set(by_split) == {"train", "validation", "test", "score"}
    assert by_split["score"]["churn"] is None  # unlabelled
    assert all(0.7 < by_split[s]["churn"] < 0.97 for s in ("train", "validation", "test"))
    # the pipeline's test split is the shape's last labelled snapshot: same customers, same churn rate
    shape = lake_shape(simulated, SPEC)
    assert by_split["test"]["n"] == shape["churn_eligible_last_labelled"]
    assert by_split["test"]["churn"] == pytest.approx(shape["churn_rate_last_labelled"], abs=1e-4)
    width = feats.select(F.size("sequence")).first()[0]
    assert width == sparse_cfg.sequence.n_buckets * len(sparse_cfg.feature_contract["channels"])
