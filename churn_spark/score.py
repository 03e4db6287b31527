"""Scoring job: champion (or a given version) x scoring snapshot -> the partitioned Delta ``churn_risk`` table.

The write replaces exactly one ``snapshot_date`` partition in a single Delta commit (``replaceWhere``), so a rerun
gives the same partition, other snapshots are never touched, and a crash leaves the previous version readable.
Concurrent runs on different snapshots both land (Delta's optimistic concurrency conflicts are retried).
"""
from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from . import registry
from .config import Config
from .logs import LOG, step
from .predict import score_frame, ship_model

RISK_COLUMNS = ["user_id", "snapshot_date", "churn_probability", "risk_tier", "risk_rank", "risk_percentile",
                "top_reasons", "model_name", "model_version", "scored_at", "feature_table_version", "run_id"]


class ScoringError(RuntimeError):
    pass


@dataclass
class ScoreResult:
    snapshot: dt.date
    users: int
    tiers: Dict[str, int]
    table_version: int
    model_version: str
    seconds: float

    @property
    def users_per_s(self) -> float:
        return self.users / self.seconds if self.seconds else 0.0


def latest_score_snapshot(features: DataFrame) -> dt.date:
    row = features.where(F.col("label").isNull()).agg(F.max("snapshot_date")).first()
    if row[0] is None:
        raise ScoringError("the feature table has no scoring snapshot (rows without a label): run build_sequences")
    return row[0]


def tier_column(prob, tiers: Dict[str, float]):
    """Highest tier whose threshold the probability reaches; 'low' otherwise."""
    expr = F.lit("low")
    for name, threshold in sorted(tiers.items(), key=lambda kv: kv[1]):
        expr = F.when(prob >= threshold, F.lit(name)).otherwise(expr)
    return expr


def risk_rows(scored: DataFrame, tiers: Dict[str, float], model_name: str, model_version: str,
              features_version: int, run_id: str, scored_at: dt.datetime) -> DataFrame:
    w = Window.partitionBy("snapshot_date").orderBy(F.desc("churn_probability"), "user_id")
    return scored.select(
        "user_id", "snapshot_date", "churn_probability",
        tier_column(F.col("churn_probability"), tiers).alias("risk_tier"),
        F.row_number().over(w).alias("risk_rank"),
        F.round(1 - F.percent_rank().over(w), 6).alias("risk_percentile"),
        F.coalesce("top_reasons", F.array().cast("array<string>")).alias("top_reasons"),
        F.lit(model_name).alias("model_name"), F.lit(str(model_version)).alias("model_version"),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
        F.lit(features_version).cast("long").alias("feature_table_version"),
        F.lit(run_id).alias("run_id"),
    )


def write_partition(df: DataFrame, path: str, snapshot: dt.date, retries: int, metadata: str = "") -> int:
    """One Delta commit replacing exactly ``snapshot_date = snapshot``; retried on concurrent-modification errors."""
    from delta.tables import DeltaTable

    for attempt in range(retries + 1):
        try:
            (df.write.format("delta").mode("overwrite").partitionBy("snapshot_date")
             .option("replaceWhere", f"snapshot_date = DATE'{snapshot.isoformat()}'")
             .option("userMetadata", metadata).save(path))
            break
        except Exception as e:  # Delta raises ConcurrentAppend/ConcurrentDeleteRead/... via py4j
            text = str(e)
            if attempt < retries and ("Concurrent" in text or "ProtocolChanged" in text or "MetadataChanged" in text):
                wait = 0.5 * 2 ** attempt
                LOG.warning("concurrent Delta commit on %s (attempt %d), retrying in %.1fs", path, attempt + 1, wait)
                time.sleep(wait)
                continue
            raise
    return int(DeltaTable.forPath(df.sparkSession, path).history(1).select("version").first()[0])


def register_catalog(spark: SparkSession, cfg: Config) -> Optional[str]:
    """``churn.churn_risk`` over the Delta path plus a ``churn_risk_latest`` view, for BI tools."""
    name = cfg.scoring.catalog_table
    if not name:
        return None
    db = name.split(".")[0] if "." in name else None
    location = str(Path(cfg.risk_table_path).resolve()) if "://" not in cfg.risk_table_path else cfg.risk_table_path
    if db:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {db}")
    spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION '{location}'")
    view = f"{db + '.' if db else ''}churn_risk_latest"
    spark.sql(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {name} "
              f"WHERE snapshot_date = (SELECT max(snapshot_date) FROM {name})")
    return name


def score(spark: SparkSession, cfg: Config, snapshot: Optional[dt.date] = None, model_version: Optional[str] = None,
          run_id: Optional[str] = None) -> ScoreResult:
    """Score every eligible user of a snapshot and write the risk partition (nothing is written on failure)."""
    from delta.tables import DeltaTable

    run_id = run_id or uuid.uuid4().hex[:12]
    model_dir, version = registry.download_version(cfg, model_version)  # verifies checksums before anything else
    fv = int(DeltaTable.forPath(spark, cfg.features_path).history(1).select("version").first()[0])
    features = spark.read.format("delta").option("versionAsOf", fv).load(cfg.features_path)
    snapshot = snapshot or latest_score_snapshot(features)
    rows = features.where(F.col("snapshot_date") == F.lit(snapshot))
    if rows.limit(1).count() == 0:
        raise ScoringError(f"the feature table {cfg.features_path} (version {fv}) has no feature rows for snapshot "
                           f"{snapshot}: run build_sequences for it first")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.scoring.batch_size))
    ref = ship_model(spark, model_dir, cfg.path("tmp", "ship"))
    t0 = time.time()
    with step("score", snapshot=snapshot, model_version=version) as info:
        scored = score_frame(rows, ref, ["user_id", "snapshot_date"], with_reasons=cfg.scoring.reasons)
        if not cfg.scoring.reasons:
            scored = scored.withColumn("top_reasons", F.lit(None).cast("array<string>"))
        out = risk_rows(scored, cfg.scoring.tiers, cfg.registry.model_name, version, fv, run_id,
                        dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0))
        meta = f'{{"run_id": "{run_id}", "model_version": "{version}", "feature_table_version": {fv}}}'
        table_version = write_partition(out, cfg.risk_table_path, snapshot, cfg.scoring.max_retries, meta)
        written = spark.read.format("delta").option("versionAsOf", table_version).load(cfg.risk_table_path) \
            .where(F.col("snapshot_date") == F.lit(snapshot))
        tiers = {r["risk_tier"]: r["n"] for r in written.groupBy("risk_tier").agg(F.count("*").alias("n")).collect()}
        users = sum(tiers.values())
        q = written.approxQuantile("churn_probability", [0.1, 0.5, 0.9, 0.99], 0.001) if users else []
        info.update(users=users, tiers=tiers, table_version=table_version,
                    quantiles=[round(x, 4) for x in q])
    seconds = time.time() - t0
    try:
        register_catalog(spark, cfg)
    except Exception as e:  # e.g. the embedded Derby metastore is held by a concurrent run: data is already safe
        LOG.warning("catalog registration of %s skipped (%s); the Delta table is written and the next run "
                    "registers it", cfg.scoring.catalog_table, str(e).splitlines()[0][:200])
    LOG.info("scored %d users in %.1fs (%.0f users/s) into %s version %d", users, seconds,
             users / max(seconds, 1e-9), cfg.risk_table_path, table_version)
    return ScoreResult(snapshot=snapshot, users=users, tiers=tiers, table_version=table_version,
                       model_version=version, seconds=seconds)
