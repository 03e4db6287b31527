"""``churn-spark backfill --from D1 --to D2 [--every 7] [--model-version V]``: score past snapshots into ``churn_risk``.

Why: a new deployment (or a new champion) otherwise has one snapshot of history; BI wants trends from day one and
``model_performance`` can only judge snapshots that were scored. Snapshots D1, D1 + every, ... <= D2 are scored
oldest first (so each snapshot's ``risk_delta`` / ``newly_high`` compare with the one before it) with one model
version (default: the champion, resolved once so a promotion during the backfill cannot mix versions).

* One Delta commit per snapshot (``score.write_partition`` replaces exactly that partition): idempotent.
* Resumable: a snapshot whose partition was already scored entirely by the same model version is skipped unless
  ``force``; after a crash, rerunning the same command continues where it stopped.
* Feature rows: snapshots missing from the feature table are built first, in one commit, through the same builder
  the weekly job uses (``sequences.build_features`` on a fresh ``lake.ingest``). Existing feature partitions are
  never rewritten (a weekly run's training snapshots stay exactly as trained on). Their ``label`` is left null: the
  lake may not yet hold a complete horizon after them, and realised outcomes are ``monitoring``'s job (computed when
  the horizon has passed). Dates with no eligible user (before the lake starts) are reported and skipped.
* No action lists: ``churn_actions`` is for campaigns that really ran; a backfilled list was never acted on and
  would read as a campaign without effect in ``model_performance``.
* Holds the weekly run lock: a backfill and a weekly run never write the same tables at once.
"""

from __future__ import annotations

import datetime as dt
from typing import Dict, List, Optional, Set

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from .config import Config
from .errors import BadInput
from .logs import LOG, step


class BackfillError(ValueError, BadInput):
    """Bad date range or step (a configuration-style error: exit code 2)."""


def snapshot_dates(start: dt.date, end: dt.date, every: int) -> List[dt.date]:
    """start, start + every, ... up to and including end."""
    if every < 1:
        raise BackfillError(f"--every must be >= 1 day, got {every}")
    if end < start:
        raise BackfillError(f"--to {end} is before --from {start}")
    n = (end - start).days // every
    return [start + dt.timedelta(days=i * every) for i in range(n + 1)]


def _is_delta(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def scored_versions(spark: SparkSession, risk_path: str, dates: List[dt.date]) -> Dict[dt.date, Set[str]]:
    """{snapshot: model versions of its rows} for the dates already in ``churn_risk``."""
    if not _is_delta(spark, risk_path):
        return {}
    rows = (
        spark.read.format("delta")
        .load(risk_path)
        .where(F.col("snapshot_date").isin(dates))
        .groupBy("snapshot_date")
        .agg(F.collect_set("model_version").alias("v"))
        .collect()
    )
    return {r["snapshot_date"]: set(r["v"]) for r in rows}


def feature_snapshots(spark: SparkSession, features_path: str, dates: List[dt.date]) -> Set[dt.date]:
    if not _is_delta(spark, features_path):
        return set()
    rows = (
        spark.read.format("delta")
        .load(features_path)
        .where(F.col("snapshot_date").isin(dates))
        .select("snapshot_date")
        .distinct()
        .collect()
    )
    return {r[0] for r in rows}


def build_missing_features(spark: SparkSession, cfg: Config, dates: List[dt.date], clock: dt.date) -> Optional[int]:
    """Feature rows for ``dates`` in one commit, without labels; returns its version. ``clock`` is ingest's "now"
    for the future-timestamp check."""
    from . import lake, sequences

    res = lake.ingest(spark, cfg, f"backfill-{clock.isoformat()}", clock)
    try:
        # as of the earliest date, S + H > as_of for every S: no labels
        feats = sequences.build_from_config(spark, cfg, res.tables, min(dates), {d: "backfill" for d in dates})
        return sequences.write_features(feats, cfg.features_path, dates, res.lineage, cfg.feature_contract)
    finally:
        res.release()


def backfill(
    spark: SparkSession,
    cfg: Config,
    start: dt.date,
    end: dt.date,
    every: int = 7,
    model_version: Optional[str] = None,
    force: bool = False,
) -> dict:
    """Score every snapshot of the range (see the module docstring); returns what was scored, skipped and why."""
    from .run_lock import held

    dates = snapshot_dates(start, end, every)
    with held(spark, cfg.lock_table_path, "weekly", cfg.lock.stale_after_s, cfg.lock.heartbeat_s):
        return _backfill(spark, cfg, dates, model_version, force)


def _backfill(
    spark: SparkSession, cfg: Config, dates: List[dt.date], model_version: Optional[str], force: bool
) -> dict:
    from . import registry
    from .score import score

    _, version = registry.download_version(cfg, model_version)  # the champion, once, for the whole range
    done = scored_versions(spark, cfg.risk_table_path, dates)
    todo = [d for d in dates if force or done.get(d) != {version}]
    skipped = [d.isoformat() for d in dates if d not in todo]
    out: dict = {
        "model_version": version,
        "snapshots": [d.isoformat() for d in dates],
        "skipped": skipped,
        "scored": {},
        "no_eligible_users": [],
        "features_version": None,
    }
    if not todo:
        LOG.info(
            "backfill: all %d snapshots already scored by model version %s (use --force to redo)", len(dates), version
        )
        return out
    have = feature_snapshots(spark, cfg.features_path, todo)
    missing = [d for d in todo if d not in have]
    if missing:
        clock = cfg.clock or dt.datetime.now(dt.timezone.utc).date()
        with step("backfill_features", snapshots=len(missing)) as info:
            out["features_version"] = build_missing_features(spark, cfg, missing, clock)
            info.update(features_version=out["features_version"])
        have = feature_snapshots(spark, cfg.features_path, todo)
    for d in todo:
        if d not in have:
            LOG.warning(
                "backfill: no eligible user at snapshot %s (no purchase in the %d days before): skipped",
                d,
                cfg.lookback_days,
            )
            out["no_eligible_users"].append(d.isoformat())
            continue
        r = score(
            spark, cfg, snapshot=d, model_version=version, run_id=f"backfill-{d.isoformat()}", write_actions=False
        )
        out["scored"][d.isoformat()] = {"users": r.users, "tiers": r.tiers, "risk_table_version": r.table_version}
    return out
