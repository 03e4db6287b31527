"""The one SparkSession factory: Delta wired in, local defaults, and spark-submit's settings left untouched.

Precedence (highest first): what spark-submit / an existing SparkConf already set, then ``spark.conf`` from the
YAML config, then the local defaults here. In local mode the driver binds to 127.0.0.1 and Python workers use the
interpreter running this code, so the venv's packages are what executors see.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .config import Config

DELTA_HELP = (
    "The Delta Lake jars could not be loaded. They are resolved from Maven Central through "
    "spark.jars.packages (io.delta:delta-spark_2.12:3.3.x). Without network access provide them yourself: "
    "--jars / spark.jars pointing at delta-spark_2.12-3.3.x.jar and delta-storage-3.3.x.jar, or an offline "
    "Ivy cache via spark.jars.ivy, or a Maven mirror via spark.jars.repositories."
)


class DeltaUnavailable(RuntimeError):
    pass


def _submitted_conf() -> dict:
    """Settings spark-submit gave this driver. Under spark-submit the JVM already runs (PYSPARK_GATEWAY_PORT is
    set) and holds them as system properties; a plain ``python`` start has none, and the JVM is launched later
    with the builder's settings."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return {}
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


def resolve_settings(cfg: Config, submitted: dict) -> tuple[bool, dict]:
    """(local mode?, settings to apply): config and local defaults, minus everything spark-submit already set."""
    local = (submitted.get("spark.master") or cfg.spark.master or "local[*]").startswith("local")
    work = Path(cfg.work_dir).resolve()
    wanted: dict = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if local:
        wanted["spark.sql.warehouse.dir"] = str(work / "warehouse")
        wanted["spark.driver.extraJavaOptions"] = f"-Dderby.system.home={work / 'metastore'}"
        if cfg.spark.bind_localhost:
            wanted["spark.driver.host"] = "127.0.0.1"
            wanted["spark.driver.bindAddress"] = "127.0.0.1"
        if cfg.spark.enable_hive:
            wanted["spark.sql.catalogImplementation"] = "hive"
            wanted["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
                f"jdbc:derby:;databaseName={work / 'metastore' / 'metastore_db'};create=true")
    wanted.update(cfg.spark.conf)
    return local, {k: v for k, v in wanted.items() if k not in submitted}


def build_session(cfg: Config, app_name: str | None = None):
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    submitted = _submitted_conf()
    local, settings = resolve_settings(cfg, submitted)
    if local:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        if cfg.spark.bind_localhost:
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(app_name or cfg.spark.app_name)
    if "spark.master" not in submitted:
        builder = builder.master(cfg.spark.master or "local[*]")
    for k, v in settings.items():
        builder = builder.config(k, v)
    Path(cfg.work_dir, "metastore").mkdir(parents=True, exist_ok=True)
    has_delta_jars = "delta" in (submitted.get("spark.jars", "") + submitted.get("spark.jars.packages", ""))
    try:
        if not has_delta_jars:
            builder = configure_spark_with_delta_pip(builder)
        spark = builder.getOrCreate()
    except Exception as e:  # an Ivy resolution failure kills the JVM before it reports its port
        if not has_delta_jars and "gateway process exited" in str(e):
            raise DeltaUnavailable(f"Spark failed to start, most likely while resolving the Delta packages (the "
                                   f"launcher's output above says which). {DELTA_HELP}\nCause: {e}") from e
        raise
    spark.sparkContext.setLogLevel(cfg.spark.log_level)
    _check_delta(spark)
    return spark


def _check_delta(spark) -> None:
    from py4j.protocol import Py4JJavaError

    try:
        spark._jvm.java.lang.Class.forName("io.delta.tables.DeltaTable", True,
                                            spark._jvm.Thread.currentThread().getContextClassLoader())
    except Py4JJavaError as e:  # ClassNotFoundException: the jars are not on the classpath
        raise DeltaUnavailable(f"{DELTA_HELP}\nCause: {e}") from e
