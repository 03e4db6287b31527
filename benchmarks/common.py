"""Shared setup for the benchmarks: one local Spark session and a generated lake cached under work/bench."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RUN = dt.date(2026, 11, 2)


def config(users: int, *overrides: str):
    from churn_spark.config import load_config

    return load_config(
        [str(REPO / "conf" / "local.yaml")],
        [f"work_dir={REPO / 'work' / 'bench' / f'u{users}'}", "spark.log_level=ERROR", *overrides],
    )


def session(cfg):
    from churn_spark.logs import setup_logging
    from churn_spark.session import build_session

    setup_logging("WARNING")
    return build_session(cfg, app_name="churn-spark-bench")


def ensure_lake(spark, cfg, users: int, weeks: int = 78) -> None:
    from churn_spark.generator import LakeSpec, write_lake

    if not Path(cfg.lake_dir, "orders", "_delta_log").is_dir():
        write_lake(spark, LakeSpec(users=users, weeks=weeks, end_date=RUN, seed=42), cfg.lake_dir)


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0
