"""Realised-outcome monitoring: did last month's warnings come true? (Delta table ``model_performance``).

Why a module of its own: a score is a prediction about a window that has not happened yet. Once the horizon of an
earlier scored snapshot S has passed (``S + H <= run date``) we know what really happened, and this module measures
the scores of ``churn_risk`` against it. The outcome is computed by the *same* code path as the training labels
(``sequences.build_features`` on a plan holding only the matured snapshots, ``as_of`` = the run date, after the same
ingest validation), so "churned" here means exactly what it meant to the model.

Per (snapshot, model version, group) one row: users, realised churn rate, ROC-AUC, PR-AUC, log loss, Brier, lift and
precision/recall in the top 10 %, precision/recall of the ``high`` tier, calibration by score decile and its
expected calibration error, the model's test ROC-AUC and a flag when the realised ROC-AUC is below it by more than
``monitoring.realised_auc_margin``. Groups: ``all``; and when ``churn_actions`` exists, ``contacted`` (on the action
list, not control), ``control`` (the hold-out) and ``untreated`` (everyone not contacted: the model's performance
free of the campaign's effect). The ``contacted`` row carries ``uplift`` = control churn rate - contacted churn rate.

Idempotent per snapshot (``replaceWhere``). Each run recomputes a matured snapshot (up to
``monitoring.max_age_days`` old) whose inputs changed: the lake versions (late data), its risk partition or its
action list; the fingerprint of those inputs is stored in the ``inputs`` column.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Dict, Iterable, List, Optional

import numpy as np
import pandas as pd

from . import storage
from .actions import ACTIONS_TABLE
from .metrics import classification_report
from .run_metrics import metrics_files, shipped_metrics
from .tiers import share_above

PERF_TABLE = ("tables", "model_performance")
N_DECILES = 10
METRIC_KEYS = ("roc_auc", "pr_auc", "log_loss", "brier", "lift_top10", "precision_top10", "recall_top10")
PERF_SCHEMA = (
    "snapshot_date date, model_version string, `group` string, horizon_days int, matured_on date, run_date date, "
    "users long, churners long, realised_churn_rate double, mean_predicted double, roc_auc double, pr_auc double, "
    "log_loss double, brier double, lift_top10 double, precision_top10 double, recall_top10 double, "
    "high_tier_users long, precision_high double, recall_high double, "
    "calibration array<struct<decile:int,users:long,mean_predicted:double,realised_rate:double>>, "
    "calibration_error double, test_roc_auc double, auc_margin double, auc_below_test boolean, uplift double, "
    "sampled boolean, inputs string, computed_at timestamp"
)


# ---------------------------------------------------------------------------------------------------------
# pure metric logic (unit-tested on hand-made arrays)
# ---------------------------------------------------------------------------------------------------------
def score_deciles(score: np.ndarray, n: int = N_DECILES) -> np.ndarray:
    """Decile 1..n of each user by raw score, n = highest risk. A user's decile comes from the share of users
    scored strictly higher, so equal scores always share a decile and the row order never matters."""
    q = share_above(np.asarray(score, float))
    return n - np.minimum(np.floor(q * n), n - 1).astype(int)


def calibration_by_decile(y, p, score, n: int = N_DECILES) -> List[dict]:
    """Per score decile (1 = lowest risk): users, mean predicted probability and realised churn rate."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    d = score_deciles(score, n)
    out = []
    for k in range(1, n + 1):
        m = d == k
        if m.any():
            out.append(
                {
                    "decile": k,
                    "users": int(m.sum()),
                    "mean_predicted": float(p[m].mean()),
                    "realised_rate": float(y[m].mean()),
                }
            )
    return out


def calibration_error(deciles: List[dict]) -> float:
    """Expected calibration error: user-weighted mean |mean predicted - realised rate| over the deciles."""
    n = sum(d["users"] for d in deciles)
    if not n:
        return float("nan")
    return float(sum(d["users"] * abs(d["mean_predicted"] - d["realised_rate"]) for d in deciles) / n)


def tier_precision_recall(y, tiers, tier: str = "high") -> tuple[int, float, float]:
    """(users in ``tier``, churn rate among them, share of all churners they hold)."""
    y, t = np.asarray(y, float), np.asarray(tiers, dtype=object)
    m = t == tier
    n = int(m.sum())
    hits = float(y[m].sum())
    return n, (hits / n if n else float("nan")), (hits / y.sum() if y.sum() > 0 else float("nan"))


def auc_below_test(realised: Optional[float], test: Optional[float], margin: float) -> bool:
    """True when the realised ROC-AUC is more than ``margin`` below the test ROC-AUC (unknown values never flag)."""
    if realised is None or test is None or not (math.isfinite(realised) and math.isfinite(test)):
        return False
    return realised < test - margin


def group_metrics(y, p, score, tiers) -> dict:
    """The realised metrics of one group of users (ranking metrics on the raw score, see ``metrics``)."""
    y = np.asarray(y, float)
    rep = classification_report(y, p, threshold=0.5, score=score)
    n_high, prec_high, rec_high = tier_precision_recall(y, tiers)
    deciles = calibration_by_decile(y, p, score)
    return {
        "users": int(len(y)),
        "churners": int(y.sum()),
        "realised_churn_rate": rep["base_rate"],
        "mean_predicted": float(np.mean(p)),
        **{k: rep[k] for k in METRIC_KEYS},
        "high_tier_users": n_high,
        "precision_high": prec_high,
        "recall_high": rec_high,
        "calibration": deciles,
        "calibration_error": calibration_error(deciles),
    }


def groups_of(frame: pd.DataFrame) -> Dict[str, np.ndarray]:
    """Boolean masks per group. ``control`` is True (hold-out), False (contacted) or missing (not on the list)."""
    masks = {"all": np.ones(len(frame), bool)}
    if "control" in frame.columns and frame["control"].notna().any():
        ctrl = frame["control"]
        masks["contacted"] = (ctrl == False).to_numpy()  # noqa: E712 (object column with None)
        masks["control"] = (ctrl == True).to_numpy()  # noqa: E712
        masks["untreated"] = ~masks["contacted"]
    return masks


def performance_rows(frame: pd.DataFrame, test_auc: Dict[str, float], margin: float) -> List[dict]:
    """Rows of ``model_performance`` for one snapshot's labelled users.

    ``frame``: model_version, label, churn_probability, raw_score, risk_tier and optionally control.
    """
    rows = []
    for version, part in frame.groupby("model_version", sort=True):
        rates = {}
        for group, m in groups_of(part).items():
            if not m.any():
                continue
            g = part[m]
            r = group_metrics(
                g["label"].to_numpy(),
                g["churn_probability"].to_numpy(),
                g["raw_score"].to_numpy(),
                g["risk_tier"].to_numpy(),
            )
            test = test_auc.get(str(version))
            r.update(
                model_version=str(version),
                group=group,
                test_roc_auc=test,
                auc_margin=float(margin),
                auc_below_test=auc_below_test(r["roc_auc"], test, margin),
                uplift=None,
            )
            rates[group] = r["realised_churn_rate"]
            rows.append(r)
        if "contacted" in rates and "control" in rates:
            for r in rows:
                if r["model_version"] == str(version) and r["group"] == "contacted":
                    r["uplift"] = rates["control"] - rates["contacted"]
    return rows


def test_roc_auc_by_version(runs_dir: str) -> Dict[str, float]:
    """Test ROC-AUC of each model version, from the training runs' ``metrics.json`` (``models.deep`` of the run
    that registered it; ``scored_by.test_metrics`` as a fallback for a champion trained elsewhere)."""
    out: Dict[str, float] = {}
    fallback: Dict[str, float] = {}
    for f in metrics_files(runs_dir):
        try:
            m = json.loads(storage.read_text(f))
        except ValueError:
            continue
        deep = shipped_metrics(m)
        if m.get("model_version") is not None and deep.get("roc_auc") is not None:
            out[str(m["model_version"])] = float(deep["roc_auc"])
        sb = m.get("scored_by") or {}
        if sb.get("model_version") is not None and (sb.get("test_metrics") or {}).get("roc_auc") is not None:
            fallback[str(sb["model_version"])] = float(sb["test_metrics"]["roc_auc"])
    return {**fallback, **out}


def matured(snapshots: Iterable[dt.date], run_date: dt.date, horizon_days: int, max_age_days: int) -> List[dt.date]:
    """Scored snapshots whose label window ``[S, S + H)`` has closed by the run date and that are not too old."""
    h, oldest = dt.timedelta(days=horizon_days), run_date - dt.timedelta(days=max_age_days)
    return sorted(s for s in set(snapshots) if s + h <= run_date and s >= oldest)


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return _clean(v.item())
    return v


# ---------------------------------------------------------------------------------------------------------
# Spark side
# ---------------------------------------------------------------------------------------------------------
def _is_delta(spark, path: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def realised_labels(spark, cfg, tables, snapshots: List[dt.date], as_of: dt.date):
    """(user_id, snapshot_date, label) of every eligible user of ``snapshots``: the training label definition."""
    from .sequences import build_from_config

    plan = {s: "monitor" for s in snapshots}
    return build_from_config(spark, cfg, tables, as_of, plan).select("user_id", "snapshot_date", "label")


def _fingerprints(spark, cfg, risk, actions, snaps: List[dt.date], lineage: dict) -> Dict[dt.date, str]:
    """What a snapshot's row depends on: lake versions, the risk partition and the action list."""
    from pyspark.sql import functions as F

    sel = risk.where(F.col("snapshot_date").isin(snaps))
    sig = {
        r["snapshot_date"]: [int(r["n"]), str(r["at"]), list(r["v"])]
        for r in sel.groupBy("snapshot_date")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.max("scored_at").alias("at"),
            F.sort_array(F.collect_set("model_version")).alias("v"),
        )
        .collect()
    }
    act = {}
    if actions is not None:
        act = {
            r["snapshot_date"]: [int(r["n"]), int(r["c"] or 0)]
            for r in actions.where(F.col("snapshot_date").isin(snaps))
            .groupBy("snapshot_date")
            .agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("control").cast("int")).alias("c"))
            .collect()
        }
    lake = {k: (v or {}).get("version") for k, v in sorted(lineage.items())}
    return {
        s: json.dumps(
            {
                "lake": lake,
                "risk": sig.get(s),
                "actions": act.get(s),
                "horizon_days": cfg.snapshots.horizon_days,
                "churn_definition": cfg.snapshots.churn_definition,
            },
            sort_keys=True,
            default=str,
        )
        for s in snaps
    }


def update_model_performance(spark, cfg, run_date: dt.date, force: bool = False) -> dict:
    """Compute (or recompute, when its inputs changed) ``model_performance`` for every matured snapshot."""
    from pyspark.sql import functions as F

    from .evaluation import collect_scores
    from .lake import ingest
    from .logs import LOG, step

    path = cfg.path(*PERF_TABLE)
    if not _is_delta(spark, cfg.risk_table_path):
        return {"table": path, "computed": [], "note": "no churn_risk table yet"}
    risk = spark.read.format("delta").load(cfg.risk_table_path)
    H = cfg.snapshots.horizon_days
    scored = [r[0] for r in risk.select("snapshot_date").distinct().collect()]
    snaps = matured(scored, run_date, H, cfg.monitoring.max_age_days)
    if not snaps:
        return {"table": path, "computed": [], "note": f"no scored snapshot has matured by {run_date} (H={H} days)"}
    actions_path = cfg.path(*ACTIONS_TABLE)
    actions = spark.read.format("delta").load(actions_path) if _is_delta(spark, actions_path) else None
    with step("monitor", run_date=run_date, matured=len(snaps)) as info:
        res = ingest(spark, cfg, f"monitor-{run_date.isoformat()}", cfg.clock or run_date)
        try:
            prints = _fingerprints(spark, cfg, risk, actions, snaps, res.lineage)
            done = {}
            if _is_delta(spark, path) and not force:
                done = {
                    r["snapshot_date"]: r["inputs"]
                    for r in spark.read.format("delta")
                    .load(path)
                    .where(F.col("group") == "all")
                    .select("snapshot_date", "inputs")
                    .collect()
                }
            todo = [s for s in snaps if done.get(s) != prints[s]]
            info.update(todo=[s.isoformat() for s in todo])
            if not todo:
                return {"table": path, "computed": [], "unchanged": [s.isoformat() for s in snaps]}
            labels = realised_labels(spark, cfg, res.tables, todo, run_date)
            joined = risk.where(F.col("snapshot_date").isin(todo)).join(labels, ["user_id", "snapshot_date"])
            if actions is not None:
                joined = joined.join(
                    actions.select("user_id", "snapshot_date", "control"), ["user_id", "snapshot_date"], "left"
                )
            else:
                joined = joined.withColumn("control", F.lit(None).cast("boolean"))
            cols = [
                "user_id",
                "snapshot_date",
                "model_version",
                "label",
                "churn_probability",
                "raw_score",
                "risk_tier",
                "control",
            ]
            test_auc = test_roc_auc_by_version(cfg.path("runs"))
            cap = cfg.training.max_eval_rows
            rows = []
            for s in todo:
                pdf = collect_scores(joined.where(F.col("snapshot_date") == F.lit(s)).select(*cols), cap)
                if pdf.empty:
                    LOG.warning("matured snapshot %s: no scored user could be labelled", s)
                    continue
                for r in performance_rows(pdf, test_auc, cfg.monitoring.realised_auc_margin):
                    rows.append(
                        {
                            **r,
                            "snapshot_date": s,
                            "horizon_days": H,
                            "matured_on": s + dt.timedelta(days=H),
                            "run_date": run_date,
                            "sampled": len(pdf) >= cap,
                            "inputs": prints[s],
                        }
                    )
        finally:
            res.release()
        version = _write(spark, path, rows, todo)
        flagged = sorted(
            {
                (r["snapshot_date"].isoformat(), r["model_version"])
                for r in rows
                if r["auc_below_test"] and r["group"] == "all"
            }
        )
        info.update(rows=len(rows), flagged=flagged)
    return {
        "table": path,
        "table_version": version,
        "computed": [s.isoformat() for s in todo],
        "flagged": [list(f) for f in flagged],
        "realised": {
            r["snapshot_date"].isoformat(): {
                k: _clean(r[k]) for k in ("model_version", "users", "realised_churn_rate", "roc_auc", "test_roc_auc")
            }
            for r in rows
            if r["group"] == "all"
        },
    }


def _write(spark, path: str, rows: List[dict], snaps: List[dt.date]) -> Optional[int]:
    """Replace exactly the partitions of ``snaps`` in one commit (a snapshot whose users vanished loses its rows)."""
    from .delta_util import replace_partitions

    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    names = [f.split(" ")[0].strip("`") for f in _top_level_fields(PERF_SCHEMA)]
    data = [
        tuple(
            _clean(r.get(n))
            if n != "calibration"
            else [
                (d["decile"], d["users"], _clean(d["mean_predicted"]), _clean(d["realised_rate"]))
                for d in r["calibration"]
            ]
            for n in names[:-1]
        )
        + (now,)
        for r in rows
    ]
    df = spark.createDataFrame(data, PERF_SCHEMA)
    dates = ", ".join(f"DATE'{s.isoformat()}'" for s in sorted(snaps))
    return replace_partitions(df, path, f"snapshot_date IN ({dates})", source="monitoring")


def _top_level_fields(schema: str) -> List[str]:
    """Split a DDL schema string on top-level commas (not those inside ``<...>``)."""
    out, depth, cur = [], 0, ""
    for ch in schema:
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + [cur.strip()] if cur.strip() else out
