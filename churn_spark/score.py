"""Scoring job: champion (or a given version) x scoring snapshot -> the partitioned Delta ``churn_risk`` table.

The write replaces exactly one ``snapshot_date`` partition in a single Delta commit (``replaceWhere``), so a rerun
gives the same partition, other snapshots are never touched, and a crash leaves the previous version readable.
Concurrent runs on different snapshots both land (Delta's optimistic concurrency conflicts are retried).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass
from typing import Dict, Optional

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import lifecycle, ranking, registry
from .config import Config
from .delta_util import latest_version
from .errors import BadInput
from .logs import LOG, step
from .predict import score_frame, ship_model
from .reasons import ReasonSettings
from .tiers import tier_expr

RISK_COLUMNS = [
    "user_id",
    "snapshot_date",
    "churn_probability",
    "raw_score",
    "risk_tier",
    "risk_rank",
    "risk_percentile",
    "top_reasons",
    "model_name",
    "model_version",
    "scored_at",
    "feature_table_version",
    "run_id",
    *lifecycle.RISK_EXTRA,
]
MAX_BACKOFF_S = 30.0  # cap of the exponential backoff between retried Delta commits


class ScoringError(RuntimeError, BadInput):
    """Nothing to score, or a model that does not fit the feature table (exit 2)."""


@dataclass
class ScoreResult:
    snapshot: dt.date
    users: int
    tiers: Dict[str, int]
    table_version: int
    model_version: str
    seconds: float
    actions: Optional[dict] = None  # churn_actions summary (None when not written)

    @property
    def users_per_s(self) -> float:
        return self.users / self.seconds if self.seconds else 0.0


def latest_score_snapshot(features: DataFrame) -> dt.date:
    row = features.where(F.col("label").isNull()).agg(F.max("snapshot_date")).first()
    if row[0] is None:
        raise ScoringError("the feature table has no scoring snapshot (rows without a label): run build_sequences")
    return row[0]


def risk_rows(
    scored: DataFrame,
    scoring,
    model_name: str,
    model_version: str,
    features_version: int,
    run_id: str,
    scored_at: dt.datetime,
    rule: lifecycle.LifecycleRule,
    previous: Optional[DataFrame] = None,
) -> DataFrame:
    """Risk table rows. Users are ranked by the model's raw score (calibration is monotone but makes plateaus);
    equal raw scores share a rank and a tier, so nothing depends on row order or user ids.

    No step puts a whole snapshot into one task (:mod:`ranking`); ``scored`` is read several times, so persist it.
    Ranks, percentiles and tiers are computed among the savable users only (``scored`` carries the
    :data:`lifecycle.FACTS`): lapsed users get tier ``lapsed``, no percentile, and ranks after every savable user
    (by raw score among themselves). ``previous`` is :func:`lifecycle.previous_snapshot` (None: no earlier one).
    """
    savable = ~F.col("lc_lapsed")
    ranked, sizes = ranking.ranked_with_sizes(
        scored, ["snapshot_date", "lc_lapsed"], [("raw_probability", False)], rank_col="_r", size_col="_n"
    )
    savable_n: Dict[dt.date, int] = {}  # per snapshot: how many savable users rank before the lapsed ones
    for (snapshot, lapsed), n in sizes.items():
        savable_n[snapshot] = savable_n.get(snapshot, 0) + (0 if lapsed else n)
    ns = scored.sparkSession.createDataFrame(list(savable_n.items()), "snapshot_date date, _ns long")
    ranked = ranked.join(F.broadcast(ns), ["snapshot_date"], "left")
    share_above = (F.col("_r") - 1) / F.col("_n")
    ranked = ranked.select(
        "user_id",
        "snapshot_date",
        "churn_probability",
        F.col("raw_probability").alias("raw_score"),
        F.when(
            savable,
            tier_expr(scoring.tier_mode, scoring.tier_shares, scoring.tiers, share_above, F.col("churn_probability")),
        )
        .otherwise(F.lit(lifecycle.LAPSED))
        .alias("risk_tier"),
        F.when(savable, F.col("_r")).otherwise(F.col("_ns") + F.col("_r")).cast("int").alias("risk_rank"),
        F.when(savable, F.round(1 - share_above, 6)).alias("risk_percentile"),
        F.coalesce("top_reasons", F.array().cast("array<string>")).alias("top_reasons"),
        F.lit(model_name).alias("model_name"),
        F.lit(str(model_version)).alias("model_version"),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
        F.lit(features_version).cast("long").alias("feature_table_version"),
        F.lit(run_id).alias("run_id"),
        *lifecycle.FACTS,
    )
    top = lifecycle.top_tier(scoring)
    ranked = lifecycle.value_columns(ranked, rule, top)
    return lifecycle.with_change(ranked, previous, top).select(*RISK_COLUMNS)


def _conflicts() -> tuple:
    """delta-spark's typed concurrent-modification exceptions (raised to Python by its py4j converter)."""
    from delta import exceptions as dx  # importing it installs the converter

    return (
        dx.DeltaConcurrentModificationException,
        dx.ConcurrentWriteException,
        dx.MetadataChangedException,
        dx.ProtocolChangedException,
        dx.ConcurrentAppendException,
        dx.ConcurrentDeleteReadException,
        dx.ConcurrentDeleteDeleteException,
        dx.ConcurrentTransactionException,
    )


def write_partition(df: DataFrame, path: str, snapshot: dt.date, retries: int, metadata: str = "") -> int:
    """One Delta commit replacing exactly ``snapshot_date = snapshot``; returns that commit's version.

    Retried on Delta's concurrent-modification conflicts with capped, jittered backoff; ``df`` should be persisted
    by the caller so a retry does not recompute it.
    """
    import json
    import random

    from .delta_util import commit_metadata, new_write_id, write_version

    write_id = new_write_id()
    meta = commit_metadata(write_id, **(json.loads(metadata) if metadata else {}))
    for attempt in range(retries + 1):
        try:
            (
                df.write.format("delta")
                .mode("overwrite")
                .partitionBy("snapshot_date")
                .option("replaceWhere", f"snapshot_date = DATE'{snapshot.isoformat()}'")
                .option("mergeSchema", "true")  # tables written before a column was added gain it (null in old rows)
                .option("userMetadata", meta)
                .save(path)
            )
            break
        except _conflicts() as e:
            if attempt >= retries:
                raise
            wait = min(MAX_BACKOFF_S, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)
            LOG.warning(
                "concurrent Delta commit on %s (%s, attempt %d), retrying in %.1fs",
                path,
                type(e).__name__,
                attempt + 1,
                wait,
            )
            time.sleep(wait)
    return write_version(df.sparkSession, path, write_id)


def check_model_fits(spark: SparkSession, cfg: Config, model_dir: str, version: str, features_version: int) -> None:
    """A model is only applied to rows of the feature contract it was trained on; otherwise a clear error."""
    from .feature_spec import contract_differences
    from .promotion import bundle_contract
    from .sequences import table_contract

    table = table_contract(spark, cfg.features_path, features_version) or cfg.feature_contract
    diffs = contract_differences(bundle_contract(model_dir), table)
    if diffs:
        raise ScoringError(
            f"model version {version} was trained on other features than the feature table "
            f"{cfg.features_path} (version {features_version}) holds: {'; '.join(diffs)}. Train a "
            f"model on the current features (churn-spark train) or rebuild them with the model's "
            f"settings"
        )


def score(
    spark: SparkSession,
    cfg: Config,
    snapshot: Optional[dt.date] = None,
    model_version: Optional[str] = None,
    run_id: Optional[str] = None,
    write_actions: bool = True,
) -> ScoreResult:
    """Score every eligible user of a snapshot and write the risk partition (nothing is written on failure), then
    (``write_actions`` and ``actions.enabled``) that snapshot's ``churn_actions`` list."""
    run_id = run_id or uuid.uuid4().hex[:12]
    model_dir, version = registry.download_version(cfg, model_version)  # verifies checksums before anything else
    fv = latest_version(spark, cfg.features_path)
    check_model_fits(spark, cfg, model_dir, version, fv)
    features = spark.read.format("delta").option("versionAsOf", fv).load(cfg.features_path)
    snapshot = snapshot or latest_score_snapshot(features)
    rows = features.where(F.col("snapshot_date") == F.lit(snapshot))
    if rows.limit(1).count() == 0:
        raise ScoringError(
            f"the feature table {cfg.features_path} (version {fv}) has no feature rows for snapshot "
            f"{snapshot}: run build_sequences for it first"
        )
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.scoring.batch_size))
    ref = ship_model(spark, model_dir, cfg.path("tmp", "ship"))
    t0 = time.time()
    rule = lifecycle.LifecycleRule.from_config(cfg)
    with step("score", snapshot=snapshot, model_version=version) as info:
        scored = score_frame(
            lifecycle.with_facts(rows, rule),
            ref,
            ["user_id", "snapshot_date", *lifecycle.FACTS],
            reasons=ReasonSettings.from_config(cfg.scoring) if cfg.scoring.reasons else None,
        )
        if not cfg.scoring.reasons:
            scored = scored.withColumn("top_reasons", F.lit(None).cast("array<string>"))
        scored = scored.persist(StorageLevel.MEMORY_AND_DISK)  # ranked in several passes: run the model once
        out = risk_rows(
            scored,
            cfg.scoring,
            cfg.registry.model_name,
            version,
            fv,
            run_id,
            dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0),
            rule,
            lifecycle.previous_snapshot(spark, cfg.risk_table_path, snapshot),
        )
        out = out.persist(StorageLevel.MEMORY_AND_DISK)  # a retried commit must not re-run the model
        meta = json.dumps({"run_id": run_id, "model_version": version, "feature_table_version": fv})
        try:
            table_version = write_partition(out, cfg.risk_table_path, snapshot, cfg.scoring.max_retries, meta)
        finally:
            out.unpersist()
            scored.unpersist()
        written = (
            spark.read.format("delta")
            .option("versionAsOf", table_version)
            .load(cfg.risk_table_path)
            .where(F.col("snapshot_date") == F.lit(snapshot))
        )
        tiers = {r["risk_tier"]: r["n"] for r in written.groupBy("risk_tier").agg(F.count("*").alias("n")).collect()}
        users = sum(tiers.values())
        q = written.approxQuantile("churn_probability", [0.1, 0.5, 0.9, 0.99], 0.001) if users else []
        info.update(users=users, tiers=tiers, table_version=table_version, quantiles=[round(x, 4) for x in q])
    seconds = time.time() - t0  # no catalog write: `churn-spark sql-server` owns the catalog (bi_catalog.py)
    actions = None
    if write_actions and cfg.actions.enabled:
        from .actions import write_actions as write_action_list

        with step("actions", snapshot=snapshot) as info:
            actions = write_action_list(spark, cfg, snapshot, table_version, run_id)
            info.update(**actions)
    LOG.info(
        "scored %d users in %.1fs (%.0f users/s) into %s version %d",
        users,
        seconds,
        users / max(seconds, 1e-9),
        cfg.risk_table_path,
        table_version,
    )
    return ScoreResult(
        snapshot=snapshot,
        users=users,
        tiers=tiers,
        table_version=table_version,
        model_version=version,
        seconds=seconds,
        actions=actions,
    )
