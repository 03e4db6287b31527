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

    return load_config([str(REPO / "conf" / "local.yaml")],
                       [f"work_dir={work_dir}", "spark.conf.spark.sql.shuffle.partitions=2", *overrides])


@pytest.fixture(scope="session")
def spark(work_root):
    from churn_spark.logs import setup_logging
    from churn_spark.session import build_session

    setup_logging()
    cfg = make_config(work_root / "session", "spark.log_level=ERROR")
    session = build_session(cfg, app_name="churn-spark-tests")
    yield session
    session.stop()
