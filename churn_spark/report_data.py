"""Everything the weekly report shows, gathered into one typed object before any HTML is written.

Why a module of its own: the report reads from four places (the run's ``metrics.json`` and ``test_scores.csv``, the
risk, feature and quarantine Delta tables) whose formats change at different times. Gathering them here, into plain
python/pandas values, keeps the Spark work small and in one place (a few aggregations, never a full collect) and
lets the page be rendered and tested from a :class:`ReportData` built by hand, without Spark.

``metrics.json`` keys added over time (``scored_by``, the gate's interval, ``tiers``, cross-fitted validation
Brier) are read with ``.get`` through the small typed views below, so a report of an older run still renders.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from . import drift, storage
from .run_metrics import read_metrics, shipped_metrics

MODELS = ("deep", "blend", "lr_rfm", "gbt")
TIERS = ("high", "medium", "low")
HIST_BINS = 20
TOP_COLUMNS = ["risk_rank", "user_id", "churn_probability", "raw_score", "risk_tier", "risk_percentile", "top_reasons"]
TIER_OUTCOME_COLUMNS = ["tier", "users", "churn_rate", "mean_probability"]
VALUE_COLUMNS = [
    "value_rank",
    "user_id",
    "expected_value_at_risk",
    "churn_probability",
    "risk_rank",
    "lifecycle",
    "action",
    "control",
    "top_reasons",
]
PERF_COLUMNS = [
    "snapshot_date",
    "model_version",
    "group",
    "users",
    "realised_churn_rate",
    "mean_predicted",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "lift_top10",
    "precision_high",
    "test_roc_auc",
    "auc_below_test",
    "uplift",
]


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def is_number(v: Any) -> bool:
    """A finite int/float (numpy included), not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------------------------------------------------
# typed views of metrics.json
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoredBy:
    """The registered model version that scored this week's snapshot, and its test metrics when known."""

    model_version: str
    role: str  # "champion" | "candidate" | "unknown"
    test_metrics: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class Gate:
    """The champion/challenger decision of this run's training (every field optional in older runs)."""

    promoted: bool = False
    metric: Optional[str] = None
    margin: Optional[float] = None
    candidate: Optional[float] = None
    champion: Optional[float] = None
    champion_version: Optional[str] = None
    reason: str = ""
    comparable: Optional[bool] = None
    interval: Optional[Tuple[float, float]] = None  # improvement candidate - champion, positive = candidate better
    confidence: Optional[float] = None
    champion_metrics: Optional[Dict[str, Any]] = None
    improvement: Optional[float] = None  # observed, same orientation as the interval
    rows: Optional[int] = None  # test rows both models were measured on

    @classmethod
    def from_metrics(cls, metrics: Dict[str, Any]) -> "Gate":
        g = metrics.get("gate") or {}
        iv = g.get("interval")
        interval = (
            (float(iv[0]), float(iv[1]))
            if isinstance(iv, (list, tuple)) and len(iv) == 2 and all(is_number(x) for x in iv)
            else None
        )
        comparable = g.get("comparable")
        version = g.get("champion_version")
        return cls(
            promoted=bool(g.get("promoted")),
            metric=g.get("metric"),
            margin=g.get("margin") if is_number(g.get("margin")) else None,
            candidate=g.get("candidate") if is_number(g.get("candidate")) else None,
            champion=g.get("champion") if is_number(g.get("champion")) else None,
            champion_version=None if version is None else str(version),
            reason=str(g.get("reason") or ""),
            comparable=None if comparable is None else bool(comparable),
            interval=interval,
            confidence=g.get("confidence") if is_number(g.get("confidence")) else None,
            champion_metrics=g.get("champion_metrics") or None,
            improvement=g.get("improvement") if is_number(g.get("improvement")) else None,
            rows=int(g["rows"]) if is_number(g.get("rows")) else None,
        )


# ---------------------------------------------------------------------------------------------------------
@dataclass
class ReportData:
    """Everything the report shows, as plain python/pandas objects (no Spark)."""

    run_date: dt.date
    metrics: Dict[str, Any]  # metrics.json as written by training
    test_scores: pd.DataFrame = field(default_factory=lambda: _empty(["user_id", "label", *MODELS]))
    score_snapshot: Optional[dt.date] = None  # default: run_date
    tier_counts: pd.DataFrame = field(default_factory=lambda: _empty(["snapshot_date", "risk_tier", "n"]))
    histogram: pd.DataFrame = field(default_factory=lambda: _empty(["bin", "n"]))  # score snapshot, 20 bins
    top_users: pd.DataFrame = field(default_factory=lambda: _empty(TOP_COLUMNS))
    scoring: Dict[str, Any] = field(default_factory=dict)  # from the risk table: model_versions, run_ids, scored_at
    tier_mode: str = "probability"  # "probability": tier_thresholds are probability cut-offs; "share": shares
    tier_thresholds: Dict[str, float] = field(default_factory=dict)
    psi: pd.DataFrame = field(default_factory=lambda: _empty(drift.PSI_COLUMNS))
    psi_threshold: float = 0.2
    quarantine: pd.DataFrame = field(default_factory=lambda: _empty(["source", "reason", "n"]))
    lifecycle: Dict[str, int] = field(default_factory=dict)  # users per lifecycle on the score snapshot
    actions: Dict[str, Any] = field(default_factory=dict)  # listed / contacted / control / by_action
    top_value: pd.DataFrame = field(default_factory=lambda: _empty(VALUE_COLUMNS))  # churn_actions by value rank
    performance: pd.DataFrame = field(default_factory=lambda: _empty(PERF_COLUMNS))  # model_performance rows
    calibration: List[Dict[str, Any]] = field(default_factory=list)  # deciles of the newest matured snapshot
    calibration_snapshot: Optional[dt.date] = None
    ingest_summary: Optional[Dict[str, Dict[str, Any]]] = None
    timings: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # runlog.json: {step: {seconds, parts}}
    notes: List[str] = field(default_factory=list)  # what could not be gathered, shown on top of the page

    def __post_init__(self) -> None:
        if self.score_snapshot is None:
            self.score_snapshot = self.run_date

    # ---- metrics.json views ----------------------------------------------------------------------------
    @property
    def candidate_version(self) -> Optional[str]:
        v = self.metrics.get("model_version")
        return None if v is None else str(v)

    def gate(self) -> Gate:
        return Gate.from_metrics(self.metrics)

    def scored_by(self) -> Optional[ScoredBy]:
        """Who scored this week: ``metrics["scored_by"]``, else the risk table's model version (metrics unknown).

        When the entry has no test metrics but the scoring version is the gate's champion, the champion's
        metrics from the gate stand in (same test rows).
        """
        sb = self.metrics.get("scored_by") or {}
        version, role, test = sb.get("model_version"), sb.get("role"), sb.get("test_metrics")
        if version is None:
            versions = (self.scoring or {}).get("model_versions") or []
            if len(versions) != 1:
                return None
            version = versions[0]
            role = "candidate" if str(version) == self.candidate_version else "unknown"
        version = str(version)
        if not test and version == self.candidate_version:
            test = shipped_metrics(self.metrics)
        gate = self.gate()
        if not test and gate.champion_metrics and gate.champion_version == version:
            test = gate.champion_metrics
        return ScoredBy(model_version=version, role=str(role or "unknown"), test_metrics=test or None)

    def tier_outcomes(self) -> pd.DataFrame:
        """Realised churn per risk tier on the labelled test snapshot (``metrics["tiers"]["test"]``), tier order."""
        test = (self.metrics.get("tiers") or {}).get("test") or {}
        order = [t for t in TIERS if t in test] + sorted(t for t in test if t not in TIERS)
        return pd.DataFrame(
            [(t, test[t].get("users"), test[t].get("churn_rate"), test[t].get("mean_probability")) for t in order],
            columns=TIER_OUTCOME_COLUMNS,
        )

    @property
    def tier_outcome_mode(self) -> Optional[str]:
        return (self.metrics.get("tiers") or {}).get("mode")

    # ---- table views -----------------------------------------------------------------------------------
    def tiers_by_snapshot(self) -> pd.DataFrame:
        """One row per snapshot: high, medium, low, total, high_share (sorted by date)."""
        tc = self.tier_counts
        if tc is None or tc.empty:
            return pd.DataFrame(columns=["snapshot_date", *TIERS, "total", "high_share"])
        tc = tc.assign(snapshot_date=pd.to_datetime(tc["snapshot_date"]).dt.date, n=tc["n"].astype("int64"))
        wide = tc.pivot_table(index="snapshot_date", columns="risk_tier", values="n", aggfunc="sum", fill_value=0)
        for t in TIERS:
            if t not in wide:
                wide[t] = 0
        extra = [c for c in wide.columns if c not in TIERS]
        wide = wide[[*TIERS, *extra]].astype("int64")
        wide["total"] = wide.sum(axis=1)
        wide["high_share"] = wide["high"] / wide["total"].where(wide["total"] > 0)
        return wide.sort_index().reset_index()

    def score_tiers(self) -> Dict[str, int]:
        """Users per tier on the score snapshot (every tier present, zeros when nothing was scored)."""
        w = self.tiers_by_snapshot()
        row = w[w["snapshot_date"] == self.score_snapshot]
        if row.empty:
            return {t: 0 for t in TIERS}
        r = row.iloc[0]
        return {t: int(r[t]) for t in w.columns if t not in ("snapshot_date", "total", "high_share")}

    def drifted_channels(self) -> List[str]:
        return drift.flagged(self.psi, self.psi_threshold)


# ---------------------------------------------------------------------------------------------------------
# Spark side
# ---------------------------------------------------------------------------------------------------------
def step_timings(runlog: Union[str, Path]) -> Dict[str, Dict[str, Any]]:
    """{step: {"seconds", "parts"}} of the weekly steps recorded so far (the report step itself runs last, so it
    is never among them); empty when the report runs outside ``weekly``."""
    if not storage.is_file(str(runlog)):
        return {}
    steps = json.loads(storage.read_text(str(runlog))).get("steps", {})
    return {name: out["timings"] for name, out in steps.items() if isinstance(out, dict) and out.get("timings")}


def gather(spark, cfg, run_date: dt.date, ingest_summary: Optional[dict] = None) -> ReportData:
    """Read metrics.json, test_scores.csv and small aggregates of the risk, feature and quarantine tables."""
    run_dir = cfg.path("runs", run_date.isoformat())
    metrics_file = storage.join(run_dir, "metrics.json")
    if not storage.is_file(metrics_file):
        raise FileNotFoundError(f"{metrics_file} not found: run training for {run_date} before the report")
    metrics = read_metrics(metrics_file)  # validated against the schema training wrote it with
    notes: List[str] = []
    scores_file = storage.join(run_dir, "test_scores.csv")
    if storage.is_file(scores_file):
        test_scores = pd.read_csv(io.BytesIO(storage.read_bytes(scores_file)), dtype={"user_id": str})
    else:
        test_scores = _empty(["user_id", "label", *MODELS])
        notes.append(f"{storage.name(scores_file)} not found: no ROC/PR/calibration/gains plots")
    mode = str(getattr(cfg.scoring, "tier_mode", "probability"))
    thresholds = getattr(cfg.scoring, "tier_shares", {}) if mode == "share" else cfg.scoring.tiers
    data = ReportData(
        run_date=run_date,
        metrics=metrics,
        test_scores=test_scores,
        score_snapshot=run_date,
        tier_mode=mode,
        tier_thresholds=dict(thresholds),
        psi_threshold=float(cfg.report.psi_threshold),
        ingest_summary=ingest_summary,
        timings=step_timings(storage.join(run_dir, "runlog.json")),
        notes=notes,
    )
    _gather_risk(spark, cfg, data)
    _gather_drift(spark, cfg, data)
    _gather_quarantine(spark, cfg, data)
    _gather_actions(spark, cfg, data)
    _gather_performance(spark, cfg, data)
    return data


def _is_delta(spark, path: str) -> bool:
    """Whether ``path`` holds a Delta table. A missing path or a plain directory is False (Delta checks for
    ``<path>/_delta_log`` without raising); any other failure, e.g. an unreachable file system, propagates."""
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def _gather_risk(spark, cfg, data: ReportData) -> None:
    from pyspark.sql import functions as F

    path = cfg.risk_table_path
    if not _is_delta(spark, path):
        data.notes.append(f"risk table {path} does not exist yet: run scoring for {data.score_snapshot}")
        return
    risk = spark.read.format("delta").load(path)
    rows = risk.groupBy("snapshot_date", "risk_tier").agg(F.count(F.lit(1)).alias("n")).collect()
    data.tier_counts = pd.DataFrame(
        [(r["snapshot_date"], r["risk_tier"], int(r["n"])) for r in rows], columns=["snapshot_date", "risk_tier", "n"]
    )
    snap = risk.where(F.col("snapshot_date") == F.lit(data.score_snapshot))
    p = F.col("churn_probability")
    hist = (
        snap.where(p.isNotNull())
        .select(F.least(F.floor(p * HIST_BINS), F.lit(HIST_BINS - 1)).cast("int").alias("bin"))
        .groupBy("bin")
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    )
    counts = {int(r["bin"]): int(r["n"]) for r in hist}
    data.histogram = pd.DataFrame({"bin": range(HIST_BINS), "n": [counts.get(i, 0) for i in range(HIST_BINS)]})
    columns = [c for c in TOP_COLUMNS if c in risk.columns]  # raw_score: only in tables written since it exists
    top = snap.orderBy("risk_rank", "user_id").limit(int(cfg.report.top_n)).select(*columns).collect()
    data.top_users = pd.DataFrame(
        [[list(r[c] or []) if c == "top_reasons" else r[c] for c in columns] for r in top], columns=columns
    )
    meta = snap.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sort_array(F.collect_set("model_name")).alias("model_names"),
        F.sort_array(F.collect_set("model_version")).alias("model_versions"),
        F.sort_array(F.collect_set("run_id")).alias("run_ids"),
        F.max("scored_at").alias("scored_at"),
        F.max("feature_table_version").alias("feature_table_version"),
    ).first()
    data.scoring = meta.asDict()
    if not meta["rows"]:
        data.notes.append(f"the risk table has no rows for the score snapshot {data.score_snapshot}")


def _gather_drift(spark, cfg, data: ReportData) -> None:
    """PSI per channel of log1p(per-user channel total), score snapshot vs the training snapshots."""
    from pyspark.errors import AnalysisException

    from .feature_spec import channels_for

    train = [dt.date.fromisoformat(d) for d in (data.metrics.get("snapshots") or {}).get("train", [])]
    path = cfg.features_path
    if not train:
        data.notes.append("metrics.json lists no training snapshots: input drift skipped")
        return
    if not _is_delta(spark, path):
        data.notes.append(f"feature table {path} does not exist: input drift skipped")
        return
    version = data.metrics.get("features_version")
    reader = spark.read.format("delta")
    try:  # the exact table version training read, when it is still there (VACUUM / log retention may drop it)
        feats = (reader.option("versionAsOf", int(version)) if version is not None else reader).load(path)
    except AnalysisException as e:
        data.notes.append(f"feature table version {version} not readable ({type(e).__name__}): used the latest")
        feats = spark.read.format("delta").load(path)
    try:
        data.psi = drift.channel_psi(
            feats, train, data.score_snapshot, channels_for(list(cfg.sources)), cfg.sequence.n_buckets
        )
    except drift.DriftSkipped as e:
        data.notes.append(str(e))


def _gather_quarantine(spark, cfg, data: ReportData) -> None:
    from pyspark.sql import functions as F

    path = cfg.quarantine_path
    if not _is_delta(spark, path):
        data.notes.append(f"quarantine table {path} does not exist: no quarantined rows recorded")
        return
    run_id = f"build-{data.run_date.isoformat()}"
    rows = (
        spark.read.format("delta")
        .load(path)
        .where(F.col("run_id") == F.lit(run_id))
        .groupBy("source", "reason")
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    )
    data.quarantine = pd.DataFrame(
        sorted((r["source"], r["reason"], int(r["n"])) for r in rows), columns=["source", "reason", "n"]
    )


def _gather_actions(spark, cfg, data: ReportData) -> None:
    """Lifecycle counts of the score snapshot, and its ``churn_actions`` list (size, actions, top by value)."""
    from pyspark.sql import functions as F

    from .actions import actions_table_path

    if _is_delta(spark, cfg.risk_table_path):
        risk = spark.read.format("delta").load(cfg.risk_table_path)
        if "lifecycle" in risk.columns:
            rows = risk.where(F.col("snapshot_date") == F.lit(data.score_snapshot)).groupBy("lifecycle").count()
            data.lifecycle = {str(r["lifecycle"]): int(r["count"]) for r in rows.collect()}
    path = actions_table_path(cfg)
    if not _is_delta(spark, path):
        data.notes.append("no churn_actions table: no action list")
        return
    acts = spark.read.format("delta").load(path).where(F.col("snapshot_date") == F.lit(data.score_snapshot))
    by = acts.groupBy("action", "control").count().collect()
    contacted = {str(r["action"]): int(r["count"]) for r in by if not r["control"]}
    data.actions = {
        "contacted": sum(contacted.values()),
        "control": sum(int(r["count"]) for r in by if r["control"]),
        "by_action": dict(sorted(contacted.items())),
    }
    top = acts.orderBy("value_rank").limit(int(cfg.report.top_n)).select(*VALUE_COLUMNS).collect()
    data.top_value = pd.DataFrame(
        [[list(r[c] or []) if c == "top_reasons" else r[c] for c in VALUE_COLUMNS] for r in top], columns=VALUE_COLUMNS
    )


def _gather_performance(spark, cfg, data: ReportData) -> None:
    """Realised-outcome rows of ``model_performance`` and the calibration deciles of the newest matured snapshot."""
    from pyspark.sql import functions as F

    from .monitoring import PERF_TABLE

    path = cfg.path(*PERF_TABLE)
    if not _is_delta(spark, path):
        return
    perf = spark.read.format("delta").load(path)
    rows = perf.select(*PERF_COLUMNS).orderBy("snapshot_date", "model_version", "group").collect()
    data.performance = pd.DataFrame([[r[c] for c in PERF_COLUMNS] for r in rows], columns=PERF_COLUMNS)
    newest = perf.where(F.col("group") == "all").orderBy(F.desc("snapshot_date"), F.desc("model_version")).first()
    if newest is not None:
        data.calibration_snapshot = newest["snapshot_date"]
        data.calibration = [d.asDict() for d in newest["calibration"] or []]
