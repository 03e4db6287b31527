"""The one SparkSession factory: Delta wired in, local defaults, and spark-submit's settings left untouched.

Precedence (highest first): what spark-submit / an existing SparkConf already set, then ``spark.conf`` from the
YAML config, then the local defaults here. In local mode the driver binds to 127.0.0.1 and Python workers use the
interpreter running this code, so the venv's packages are what executors see.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

from . import class_archive, storage
from .config import Config
from .locations import prepare_storage, uses_s3a

# the Hadoop version pyspark 3.5 ships; it pulls the matching AWS SDK bundle
S3A_PACKAGE = "org.apache.hadoop:hadoop-aws:3.3.4"
# S3A retries for minutes by default; a wrong endpoint or key should fail a scheduled job in seconds
S3A_BOUNDED_RETRIES = {
    "spark.hadoop.fs.s3a.attempts.maximum": "3",
    "spark.hadoop.fs.s3a.retry.limit": "3",
    "spark.hadoop.fs.s3a.connection.establish.timeout": "5000",
    "spark.hadoop.fs.s3a.connection.timeout": "60000",
    # no delete of parent "directory" objects after every write: fewer requests, and the bulk delete it needs is
    # what some S3-compatible stores answer slowly or not at all
    "spark.hadoop.fs.s3a.directory.marker.retention": "keep",
}

DELTA_HELP = (
    "The Delta Lake jars could not be loaded. They are resolved from Maven Central through "
    "spark.jars.packages (io.delta:delta-spark_2.12:3.3.x). Without network access provide them yourself: "
    "--jars / spark.jars pointing at delta-spark_2.12-3.3.x.jar and delta-storage-3.3.x.jar, or an offline "
    "Ivy cache via spark.jars.ivy, or a Maven mirror via spark.jars.repositories."
)


S3A_HELP = (
    "A location is an s3a:// URI but the S3A filesystem (org.apache.hadoop:hadoop-aws) is not on the classpath. "
    "Add org.apache.hadoop:hadoop-aws:3.3.4 to spark.jars.packages (deploy/submit.sh does), or its jar and the "
    "matching aws-java-sdk-bundle to --jars."
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
    work = Path(storage.scratch_dir(cfg.work_dir))  # Derby and the warehouse dir need a local disk
    wanted: dict = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if local:
        wanted["spark.sql.warehouse.dir"] = str(work / "warehouse")
        # the parallel collector: in local mode the driver is also the executor, and for batch work on one box its
        # throughput beat the default G1 by about 10 % on the demo's build step (benchmarks/RESULTS.md)
        wanted["spark.driver.extraJavaOptions"] = (
            f"-XX:+UseParallelGC -Dderby.system.home={work / 'metastore'}"
            + (f" -Dlog4j2.configurationFile=file:{log4j_file()}" if log4j_file().is_file() else "")
            + class_archive.java_option(cfg.spark.class_archive)  # the classes of Spark + Delta, loaded ready-made
        )
        if cfg.spark.bind_localhost:
            wanted["spark.driver.host"] = "127.0.0.1"
            wanted["spark.driver.bindAddress"] = "127.0.0.1"
        if cfg.spark.enable_hive:
            wanted["spark.sql.catalogImplementation"] = "hive"
            wanted["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
                f"jdbc:derby:;databaseName={work / 'metastore' / 'metastore_db'};create=true"
            )
    if uses_s3a(cfg):
        wanted.update(S3A_BOUNDED_RETRIES)
    wanted.update(cfg.spark.conf)
    return local, {k: v for k, v in wanted.items() if k not in submitted}


def build_session(cfg: Config, app_name: str | None = None):
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    submitted = _submitted_conf()
    prepare_storage(cfg, submitted)
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
    Path(storage.scratch_dir(cfg.work_dir, "metastore")).mkdir(parents=True, exist_ok=True)
    given_jars = submitted.get("spark.jars", "") + submitted.get("spark.jars.packages", "")
    has_delta_jars = "delta" in given_jars
    # configure_spark_with_delta_pip replaces spark.jars.packages: keep the profile's own packages in the list
    extra = [p for p in settings.get("spark.jars.packages", "").split(",") if p.strip()]
    if uses_s3a(cfg) and "hadoop-aws" not in given_jars + settings.get("spark.jars", "") + ",".join(extra):
        extra.append(S3A_PACKAGE)
    try:
        if not has_delta_jars:
            builder = configure_spark_with_delta_pip(builder, extra_packages=extra)
        with _jvm_stdout_to_stderr():
            spark = builder.getOrCreate()
    except Exception as e:  # an Ivy resolution failure kills the JVM before it reports its port
        if not has_delta_jars and "gateway process exited" in str(e):
            raise DeltaUnavailable(
                f"Spark failed to start, most likely while resolving the Delta packages (the "
                f"launcher's output above says which). {DELTA_HELP}\nCause: {e}"
            ) from e
        raise
    spark.sparkContext.setLogLevel(cfg.spark.log_level)
    quiet_loggers(spark)
    _check_delta(spark)
    if uses_s3a(cfg):
        _check_class(spark, "org.apache.hadoop.fs.s3a.S3AFileSystem", S3A_HELP)
    return spark


@contextlib.contextmanager
def _jvm_stdout_to_stderr() -> Iterator[None]:
    """The JVM launched here inherits this process's stdout, so Ivy's ":: loading settings ::" line and anything the
    JVM prints would land in the JSON summary on stdout. Launch it with its stdout on our stderr."""
    from pyspark import SparkContext

    if SparkContext._gateway is not None or "PYSPARK_GATEWAY_PORT" in os.environ:  # the JVM already runs
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def log4j_file() -> Path:
    """conf/log4j2.properties next to the default.yaml in use (the repo, or $CHURN_SPARK_CONF_DIR)."""
    from .config import default_file

    return default_file().parent / "log4j2.properties"


def quiet_loggers(spark) -> None:
    """Apply the logger levels of conf/log4j2.properties to a running JVM: under spark-submit the driver JVM started
    before this code ran, so the -Dlog4j2.configurationFile of local mode never reached it."""
    path = log4j_file()
    if not path.is_file():
        return
    props = dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    props = {k.strip(): v.strip() for k, v in props.items()}
    jvm = spark._jvm
    for key, name in props.items():
        if key.startswith("logger.") and key.endswith(".name") and f"{key[:-5]}.level" in props:
            jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
                name, jvm.org.apache.logging.log4j.Level.toLevel(props[f"{key[:-5]}.level"].upper())
            )


def _check_delta(spark) -> None:
    _check_class(spark, "io.delta.tables.DeltaTable", DELTA_HELP)


def _check_class(spark, name: str, help_text: str) -> None:
    from py4j.protocol import Py4JJavaError

    try:
        spark._jvm.java.lang.Class.forName(name, True, spark._jvm.Thread.currentThread().getContextClassLoader())
    except Py4JJavaError as e:  # ClassNotFoundException: the jars are not on the classpath
        raise DeltaUnavailable(f"{help_text}\nCause: {e}") from e
