"""One SparkSession for the whole suite (local[2], few shuffle partitions, bound to 127.0.0.1)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end tests (still run by make test)")


@pytest.fixture(scope="session")
def work_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("churn")


def make_config(work_dir: Path, *overrides: str):
    from churn_spark.config import load_config

    return load_config(
        [str(REPO / "conf" / "local.yaml")],
        [f"work_dir={work_dir}", "spark.conf.spark.sql.shuffle.partitions=2", *overrides],
    )


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3-compatible server (S3Proxy) with a bucket "lake", and this process's storage layer pointed at it."""
    from s3_server import s3_server

    from churn_spark import storage

    before = storage.options()
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        server.make_bucket("lake")
        storage.configure(storage.options_from_spark_conf(server.hadoop_conf()))
        try:
            yield server
        finally:
            storage.configure(before)


@pytest.fixture(scope="session")
def spark(work_root):
    from churn_spark.logs import setup_logging
    from churn_spark.session import build_session

    setup_logging()
    cfg = make_config(work_root / "session", "spark.log_level=ERROR")
    session = build_session(cfg, app_name="churn-spark-tests")
    yield session
    session.stop()


WEEKLY_RUN = "2026-11-02"
WEEKLY_SMALL = [
    "training.epochs=4",
    "training.batch_size=64",
    "training.conv_filters=16",
    "training.rnn_units=16",
    "training.gbt_max_iter=8",
    "snapshots.n_labelled=4",
    "scoring.batch_size=100",
]


@pytest.fixture(scope="session")
def weekly_run(spark, tmp_path_factory):
    """A dirty generated lake put through the whole weekly pipeline once (shared by end-to-end and fault tests)."""
    import datetime as dt

    from churn_spark import pipeline
    from churn_spark.generator import LakeSpec, write_lake

    run = dt.date.fromisoformat(WEEKLY_RUN)
    cfg = make_config(tmp_path_factory.mktemp("weekly"), *WEEKLY_SMALL)
    write_lake(spark, LakeSpec(users=1000, weeks=52, end_date=run, seed=21, dirty=True), cfg.lake_dir)
    log = pipeline.weekly(spark, cfg, run)
    return cfg, log
