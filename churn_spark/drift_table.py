"""Drift numbers as data: the Delta table ``drift`` (PSI per input channel and of the model's score).

Why a module of its own: the report shows drift for one week; BI and alerting need the history, so every weekly run
also writes its PSI rows to a table. The PSI arithmetic and the channel aggregation are those of
:mod:`churn_spark.drift` (called, not copied), so the table and the report always agree.

Rows per score snapshot (``replaceWhere`` on ``snapshot_date``: a rerun replaces its own rows):

* ``kind = channel``: log1p(per-user channel total) of the score snapshot vs the training snapshots of the run
  (``reference`` names them), one row per channel;
* ``kind = score``: the raw score of ``churn_risk`` on the score snapshot vs the raw scores of the same model
  version on its own test snapshot (``runs/<date>/test_scores.csv`` of the run that registered it). Bins are the
  reference's deciles; a value on an edge falls in the lower bin, as for the channels.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from . import drift, storage
from .run_metrics import metrics_files

DRIFT_TABLE = ("tables", "drift")
DRIFT_SCHEMA = (
    "snapshot_date date, run_date date, kind string, name string, psi double, n_expected long, "
    "n_actual long, n_bins int, threshold double, flagged boolean, reference string, model_version string, "
    "computed_at timestamp"
)


def bin_index(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin of each value: the number of edges strictly below it (the rule of :mod:`churn_spark.drift`)."""
    return np.searchsorted(np.asarray(edges, float), np.asarray(values, float), side="left")


def score_edges(reference: np.ndarray) -> List[float]:
    """Decile edges of the reference scores (tied deciles collapse)."""
    ref = np.asarray(reference, float)
    ref = ref[np.isfinite(ref)]
    if len(ref) == 0:
        return []
    return drift.distinct_edges(np.quantile(ref, [i / drift.PSI_BINS for i in range(1, drift.PSI_BINS)]))


def score_psi(reference: np.ndarray, actual_counts: dict, edges: Sequence[float]) -> Tuple[float, int, int, int]:
    """(PSI, reference users, actual users, bins) of the score: ``actual_counts`` is {bin: users}."""
    k = len(edges) + 1
    ref = np.asarray(reference, float)
    e = np.bincount(bin_index(ref[np.isfinite(ref)], edges), minlength=k)[:k]
    a = [int(actual_counts.get(b, 0)) for b in range(k)]
    return drift.psi(e, a), int(e.sum()), int(sum(a)), k


def reference_scores(runs_dir: str, model_version: str) -> Tuple[Optional[np.ndarray], str]:
    """The model version's raw test scores (``shipped``, in older runs ``deep``, of test_scores.csv of the run whose
    metrics.json registered it), with a description of where they came from; (None, reason) when not found."""
    for f in reversed(metrics_files(runs_dir)):
        try:
            m = json.loads(storage.read_text(f))
        except ValueError:
            continue
        run = storage.parent(f)
        scores = storage.join(run, "test_scores.csv")
        if str(m.get("model_version")) == str(model_version) and storage.is_file(scores):
            df = pd.read_csv(io.BytesIO(storage.read_bytes(scores)))
            column = "shipped" if "shipped" in df.columns else "deep"  # runs before the blend shipped the network
            test = ((m.get("snapshots") or {}).get("test") or ["?"])[0]
            return df[column].to_numpy(float), f"test snapshot {test} of run {storage.name(run)}"
    return None, f"no test_scores.csv of model version {model_version} under {runs_dir}"


def drift_rows(spark, cfg, run_date: dt.date) -> Tuple[list, List[str]]:
    """(rows, notes) for the score snapshot ``run_date``; a part that cannot be computed becomes a note."""
    from pyspark.sql import functions as F

    from .feature_spec import channels_for
    from .monitoring import _is_delta

    rows, notes = [], []
    thr = float(cfg.report.psi_threshold)
    metrics_file = cfg.path("runs", run_date.isoformat(), "metrics.json")
    metrics = json.loads(storage.read_text(metrics_file)) if storage.is_file(metrics_file) else {}
    train = [dt.date.fromisoformat(d) for d in (metrics.get("snapshots") or {}).get("train", [])]
    if not train:
        notes.append(f"{metrics_file} lists no training snapshots: channel drift skipped")
    elif not _is_delta(spark, cfg.features_path):
        notes.append("no feature table: channel drift skipped")
    else:
        try:
            t = drift.channel_psi(
                spark.read.format("delta").load(cfg.features_path),
                train,
                run_date,
                channels_for(list(cfg.sources)),
                cfg.sequence.n_buckets,
            )
            ref = "training snapshots " + ", ".join(d.isoformat() for d in train)
            for r in t.itertuples():
                rows.append(("channel", r.channel, r.psi, r.n_expected, r.n_actual, r.n_bins, ref, None))
        except drift.DriftSkipped as e:
            notes.append(str(e))
    if not _is_delta(spark, cfg.risk_table_path):
        notes.append("no churn_risk table: score drift skipped")
        return rows, notes
    snap = spark.read.format("delta").load(cfg.risk_table_path).where(F.col("snapshot_date") == F.lit(run_date))
    for (version,) in snap.select("model_version").distinct().collect():
        reference, where = reference_scores(cfg.path("runs"), version)
        if reference is None:
            notes.append(f"score drift of model version {version} skipped: {where}")
            continue
        edges = score_edges(reference)
        col = F.col("raw_score")
        b = sum(((col > F.lit(e)).cast("int") for e in edges), F.lit(0))
        counts = {
            int(r["bin"]): int(r["n"])
            for r in snap.where((F.col("model_version") == version) & col.isNotNull())
            .select(b.alias("bin"))
            .groupBy("bin")
            .agg(F.count(F.lit(1)).alias("n"))
            .collect()
        }
        value, n_e, n_a, k = score_psi(reference, counts, edges)
        rows.append(("score", "raw_score", value, n_e, n_a, k, where, str(version)))
    return [
        (
            run_date,
            run_date,
            kind,
            name,
            _f(v),
            int(ne),
            int(na),
            int(k),
            thr,
            bool(np.isfinite(v) and v > thr),
            ref,
            mv,
        )
        for kind, name, v, ne, na, k, ref, mv in rows
    ], notes


def _f(v) -> Optional[float]:
    return float(v) if v is not None and np.isfinite(v) else None


def write_drift(spark, cfg, run_date: dt.date) -> dict:
    """Replace the ``drift`` rows of the score snapshot ``run_date`` in one commit."""
    from .delta_util import replace_partitions

    rows, notes = drift_rows(spark, cfg, run_date)
    path = cfg.path(*DRIFT_TABLE)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    df = spark.createDataFrame([(*r, now) for r in rows], DRIFT_SCHEMA)
    version = replace_partitions(df, path, f"snapshot_date = DATE'{run_date.isoformat()}'", source="drift")
    return {
        "table": path,
        "table_version": version,
        "rows": len(rows),
        "flagged": [f"{r[2]}:{r[3]}" for r in rows if r[9]],
        "notes": notes,
    }
