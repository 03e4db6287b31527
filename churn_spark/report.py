"""Weekly run report: one self-contained HTML file (inline CSS, base64 PNGs) that can be mailed or archived.

Two layers so the page can be tested without Spark: :func:`gather` does the few small Spark aggregations (never a
full collect) into a plain :class:`ReportData`; :func:`render` turns that into HTML with no Spark, no network.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import pandas as pd

MODELS = ("deep", "lr_rfm", "gbt")
METRIC_KEYS = ("roc_auc", "pr_auc", "log_loss", "brier", "threshold", "precision", "recall", "f1",
               "precision_top10", "recall_top10", "precision_top20", "recall_top20", "lift_top10", "base_rate",
               "n_users")
LOWER_IS_BETTER = {"log_loss", "brier"}
NOT_COMPARED = {"threshold", "base_rate", "n_users"}
TIERS = ("high", "medium", "low")
HIST_BINS = 20
PSI_BINS = 10
PSI_EPS = 1e-4
DPI = 80
MAX_CURVE_POINTS = 2000

TOP_COLUMNS = ["risk_rank", "user_id", "churn_probability", "risk_tier", "risk_percentile", "top_reasons"]


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


# ---------------------------------------------------------------------------------------------------------
# Pure helpers (also used by tests and handy for cross-checking the Spark numbers)
# ---------------------------------------------------------------------------------------------------------
def psi(expected_counts: Iterable[float], actual_counts: Iterable[float], eps: float = PSI_EPS) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` over bin shares; empty bins are floored at ``eps``.

    ``expected_counts`` is the reference (training) population, ``actual_counts`` the new one, bin by bin.
    Returns NaN when either population is empty.
    """
    e = np.asarray(list(expected_counts), dtype=float)
    a = np.asarray(list(actual_counts), dtype=float)
    if e.shape != a.shape:
        raise ValueError(f"psi: {len(e)} expected bins vs {len(a)} actual bins")
    if e.sum() <= 0 or a.sum() <= 0:
        return float("nan")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def quantile_edges(values: Iterable[float], n_bins: int = PSI_BINS) -> List[float]:
    """Sorted distinct inner edges at the 1/n .. (n-1)/n quantiles (ties collapse, e.g. zero-heavy channels)."""
    v = np.asarray(list(values), dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return []
    q = np.quantile(v, [i / n_bins for i in range(1, n_bins)])
    return sorted(set(float(x) for x in q))


def bin_counts(values: Iterable[float], edges: Sequence[float]) -> np.ndarray:
    """Counts per bin where bin = number of edges strictly below the value (the rule :func:`gather` uses in Spark)."""
    v = np.asarray(list(values), dtype=float)
    v = v[~np.isnan(v)]
    idx = np.searchsorted(np.asarray(edges, dtype=float), v, side="left")
    return np.bincount(idx, minlength=len(edges) + 1)


def psi_from_values(expected: Iterable[float], actual: Iterable[float], n_bins: int = PSI_BINS) -> float:
    """PSI of two raw samples: quantile edges from ``expected``, counts per bin in both (pandas reference)."""
    expected = np.asarray(list(expected), dtype=float)
    edges = quantile_edges(expected, n_bins)
    return psi(bin_counts(expected, edges), bin_counts(actual, edges))


def channel_totals(sequences: Iterable[Sequence[float]], n_channels: int) -> np.ndarray:
    """(users, channels) totals over time of time-major flattened sequences ``seq[t * C + c]``."""
    arr = np.asarray([np.asarray(s, dtype=float) for s in sequences], dtype=float)
    if arr.size == 0:
        return np.zeros((0, n_channels))
    return arr.reshape(len(arr), -1, n_channels).sum(axis=1)


def reliability_table(y, p, n_bins: int = 10) -> pd.DataFrame:
    """Equal-width probability bins: mean predicted probability vs observed churn rate (empty bins dropped)."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    idx = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    df = pd.DataFrame({"bin": idx, "p": p, "y": y})
    g = df.groupby("bin").agg(mean_predicted=("p", "mean"), observed_rate=("y", "mean"), n=("y", "size"))
    return g.reset_index()


def gains_table(y, p, points: int = 100) -> pd.DataFrame:
    """Cumulative gains and lift: share of churners caught in the top ``share_users`` of users by score."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    n, pos = len(y), float(np.sum(y))
    if n == 0 or pos == 0:
        return pd.DataFrame(columns=["share_users", "share_positives", "lift"])
    cum = np.cumsum(y[np.argsort(-p, kind="stable")])
    share = np.arange(1, points + 1) / points
    k = np.maximum(np.ceil(share * n).astype(int), 1)
    caught = cum[k - 1] / pos
    return pd.DataFrame({"share_users": share, "share_positives": caught, "lift": caught / (k / n)})


def histogram_counts(probabilities: Iterable[float], n_bins: int = HIST_BINS) -> pd.DataFrame:
    """The score histogram exactly as :func:`gather` computes it in Spark: ``bin = min(floor(p * n), n - 1)``."""
    p = np.asarray(list(probabilities), dtype=float)
    p = p[~np.isnan(p)]
    idx = np.clip(np.floor(p * n_bins).astype(int), 0, n_bins - 1)
    return pd.DataFrame({"bin": np.arange(n_bins), "n": np.bincount(idx, minlength=n_bins)[:n_bins]})


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
    scoring: Dict[str, Any] = field(default_factory=dict)  # model_names, model_versions, run_ids, scored_at, ...
    tier_thresholds: Dict[str, float] = field(default_factory=dict)
    psi: pd.DataFrame = field(default_factory=lambda: _empty(["channel", "psi", "n_expected", "n_actual", "n_bins"]))
    psi_threshold: float = 0.2
    quarantine: pd.DataFrame = field(default_factory=lambda: _empty(["source", "reason", "n"]))
    ingest_summary: Optional[Dict[str, Dict[str, Any]]] = None
    notes: List[str] = field(default_factory=list)  # what could not be gathered, shown on top of the page

    def __post_init__(self) -> None:
        if self.score_snapshot is None:
            self.score_snapshot = self.run_date

    # ---- derived views ---------------------------------------------------------------------------------
    def tiers_by_snapshot(self) -> pd.DataFrame:
        """One row per snapshot: high, medium, low, total, high_share (sorted by date)."""
        tc = self.tier_counts
        if tc is None or tc.empty:
            return pd.DataFrame(columns=["snapshot_date", *TIERS, "total", "high_share"])
        tc = tc.assign(snapshot_date=_as_dates(tc["snapshot_date"]), n=tc["n"].astype("int64"))
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
        w = self.tiers_by_snapshot()
        row = w[w["snapshot_date"] == self.score_snapshot]
        if row.empty:
            return {t: 0 for t in TIERS}
        r = row.iloc[0]
        return {t: int(r[t]) for t in w.columns if t not in ("snapshot_date", "total", "high_share")}

    def drifted_channels(self) -> List[str]:
        if self.psi is None or self.psi.empty:
            return []
        return [str(c) for c, v in zip(self.psi["channel"], self.psi["psi"]) if _num(v) and v > self.psi_threshold]

    def numbers(self) -> Dict[str, float]:
        """Flat {key: number} of what the page shows, e.g. ``deep.roc_auc``, ``tier.high``, ``users_scored``."""
        out: Dict[str, float] = {}
        m = self.metrics
        for name, d in (m.get("models") or {}).items():
            for k, v in d.items():
                if _num(v):
                    out[f"{name}.{k}"] = v
        for name, d in (m.get("validation") or {}).items():
            for k, v in d.items():
                if _num(v):
                    out[f"validation.{name}.{k}"] = v
        gate = m.get("gate") or {}
        if "promoted" in gate:
            out["gate.promoted"] = int(bool(gate["promoted"]))
        for k in ("candidate", "champion", "margin"):
            if _num(gate.get(k)):
                out[f"gate.{k}"] = gate[k]
        if _num(m.get("features_version")):
            out["features_version"] = m["features_version"]
        tr = m.get("training") or {}
        for k in ("samples_per_s_total", "epochs"):
            if _num(tr.get(k)):
                out[f"training.{k}"] = tr[k]
        for r in tr.get("ranks") or []:
            if _num(r.get("samples_per_s")):
                out[f"training.rank{r.get('rank')}.samples_per_s"] = r["samples_per_s"]
        if self.test_scores is not None:
            out["test.n_rows"] = int(len(self.test_scores))
        tiers = self.score_tiers()
        for t, n in tiers.items():
            out[f"tier.{t}"] = n
        users = int(sum(tiers.values()))
        out["users_scored"] = users
        out["high_share"] = tiers.get("high", 0) / users if users else float("nan")
        out["snapshots_scored"] = int(len(self.tiers_by_snapshot()))
        out["histogram.total"] = int(self.histogram["n"].sum()) if not self.histogram.empty else 0
        out["top_users.n"] = int(len(self.top_users))
        if self.psi is not None and not self.psi.empty:
            for c, v in zip(self.psi["channel"], self.psi["psi"]):
                out[f"psi.{c}"] = float(v)
        out["psi.flagged"] = len(self.drifted_channels())
        q = self.quarantine
        if q is not None and not q.empty:
            for s, r, n in zip(q["source"], q["reason"], q["n"]):
                out[f"quarantine.{s}.{r}"] = int(n)
        out["quarantine.total"] = int(q["n"].sum()) if q is not None and not q.empty else 0
        for src, c in (self.ingest_summary or {}).items():
            for k in ("rows_in", "used", "quarantined", "deduplicated"):
                if _num(c.get(k)):
                    out[f"ingest.{src}.{k}"] = int(c[k])
        return out


def _num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _as_dates(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s).dt.date


# ---------------------------------------------------------------------------------------------------------
# Spark side
# ---------------------------------------------------------------------------------------------------------
def gather(spark, cfg, run_date: dt.date, ingest_summary: Optional[dict] = None) -> ReportData:
    """Read metrics.json, test_scores.csv and small aggregates of the risk, feature and quarantine tables."""
    run_dir = Path(cfg.path("runs", run_date.isoformat()))
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file} not found: run training for {run_date} before the report")
    metrics = json.loads(metrics_file.read_text())
    notes: List[str] = []
    scores_file = run_dir / "test_scores.csv"
    if scores_file.is_file():
        test_scores = pd.read_csv(scores_file, dtype={"user_id": str})
    else:
        test_scores = _empty(["user_id", "label", *MODELS])
        notes.append(f"{scores_file.name} not found: no ROC/PR/calibration/gains plots")

    data = ReportData(run_date=run_date, metrics=metrics, test_scores=test_scores, score_snapshot=run_date,
                      tier_thresholds=dict(cfg.scoring.tiers), psi_threshold=float(cfg.report.psi_threshold),
                      ingest_summary=ingest_summary, notes=notes)
    _gather_risk(spark, cfg, data)
    _gather_drift(spark, cfg, data)
    _gather_quarantine(spark, cfg, data)
    return data


def _is_delta(spark, path: str) -> bool:
    from delta.tables import DeltaTable

    try:
        return bool(DeltaTable.isDeltaTable(spark, path))
    except Exception:  # e.g. a path that cannot be listed
        return False


def _gather_risk(spark, cfg, data: ReportData) -> None:
    from pyspark.sql import functions as F

    path = cfg.risk_table_path
    if not _is_delta(spark, path):
        data.notes.append(f"risk table {path} does not exist yet: run scoring for {data.score_snapshot}")
        return
    risk = spark.read.format("delta").load(path)
    rows = (risk.groupBy("snapshot_date", "risk_tier").agg(F.count(F.lit(1)).alias("n")).collect())
    data.tier_counts = pd.DataFrame([(r["snapshot_date"], r["risk_tier"], int(r["n"])) for r in rows],
                                    columns=["snapshot_date", "risk_tier", "n"])
    snap = risk.where(F.col("snapshot_date") == F.lit(data.score_snapshot))
    p = F.col("churn_probability")
    hist = (snap.where(p.isNotNull())
            .select(F.least(F.floor(p * HIST_BINS), F.lit(HIST_BINS - 1)).cast("int").alias("bin"))
            .groupBy("bin").agg(F.count(F.lit(1)).alias("n")).collect())
    counts = {int(r["bin"]): int(r["n"]) for r in hist}
    data.histogram = pd.DataFrame({"bin": range(HIST_BINS), "n": [counts.get(i, 0) for i in range(HIST_BINS)]})
    top = (snap.orderBy("risk_rank").limit(int(cfg.report.top_n)).select(*TOP_COLUMNS).collect())
    data.top_users = pd.DataFrame([(int(r["risk_rank"]), r["user_id"], float(r["churn_probability"]), r["risk_tier"],
                                    r["risk_percentile"], list(r["top_reasons"] or [])) for r in top],
                                  columns=TOP_COLUMNS)
    meta = snap.agg(F.count(F.lit(1)).alias("rows"),
                    F.sort_array(F.collect_set("model_name")).alias("model_names"),
                    F.sort_array(F.collect_set("model_version")).alias("model_versions"),
                    F.sort_array(F.collect_set("run_id")).alias("run_ids"),
                    F.max("scored_at").alias("scored_at"),
                    F.max("feature_table_version").alias("feature_table_version")).first()
    data.scoring = {k: meta[k] for k in ("rows", "model_names", "model_versions", "run_ids", "scored_at",
                                         "feature_table_version")}
    if not meta["rows"]:
        data.notes.append(f"the risk table has no rows for the score snapshot {data.score_snapshot}")


def _gather_drift(spark, cfg, data: ReportData) -> None:
    """PSI per channel of log1p(per-user channel total), score snapshot vs the training snapshots."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from .feature_spec import channels_for

    train = [dt.date.fromisoformat(d) for d in (data.metrics.get("snapshots") or {}).get("train", [])]
    path = cfg.features_path
    if not train:
        data.notes.append("metrics.json lists no training snapshots: input drift skipped")
        return
    if not _is_delta(spark, path):
        data.notes.append(f"feature table {path} does not exist: input drift skipped")
        return
    channels = channels_for(list(cfg.sources))
    C, T = len(channels), int(cfg.sequence.n_buckets)
    reader = spark.read.format("delta")
    version = data.metrics.get("features_version")
    try:  # the exact table version training read, when it is still there
        feats = (reader.option("versionAsOf", int(version)) if version is not None else reader).load(path)
    except Exception as e:
        data.notes.append(f"feature table version {version} not readable ({type(e).__name__}): used the latest")
        feats = spark.read.format("delta").load(path)

    def total(c: int):
        # sum over t of sequence[t*C + c]: keep the elements whose index is c modulo C, then add them up
        only_c = F.filter(F.col("sequence"), lambda x, i: (i % C) == c)
        return F.aggregate(only_c, F.lit(0.0), lambda acc, x: acc + F.coalesce(x, F.lit(0.0)))

    score = data.score_snapshot
    pop = F.when(F.col("snapshot_date") == F.lit(score), F.lit("actual")).otherwise(F.lit("expected"))
    base = (feats.where(F.col("snapshot_date").isin([*train, score]) & F.col("sequence").isNotNull())
            .select(pop.alias("_pop"), F.size("sequence").alias("_len"),
                    *[F.log1p(F.greatest(total(c), F.lit(0.0))).alias(f"_c{c}") for c in range(C)]))
    base = base.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        sizes = {r["_pop"]: r for r in base.groupBy("_pop").agg(
            F.count(F.lit(1)).alias("n"), F.min("_len").alias("lo"), F.max("_len").alias("hi")).collect()}
        if "expected" not in sizes or "actual" not in sizes:
            data.notes.append(f"input drift skipped: no feature rows for "
                              f"{'the training snapshots' if 'expected' not in sizes else f'the score snapshot {score}'}")
            return
        bad = [(k, r["lo"], r["hi"]) for k, r in sizes.items() if r["lo"] != T * C or r["hi"] != T * C]
        if bad:
            data.notes.append(f"input drift skipped: sequence length {bad} != n_buckets*channels = {T}*{C}; "
                              "the feature table was built with another configuration")
            return
        probs = [i / PSI_BINS for i in range(1, PSI_BINS)]
        quantiles = base.where(F.col("_pop") == "expected").approxQuantile(
            [f"_c{c}" for c in range(C)], probs, 0.001)
        edges = [sorted(set(float(x) for x in q)) for q in quantiles]

        def bin_of(c: int):
            col = F.col(f"_c{c}")
            return sum(((col > F.lit(e)).cast("int") for e in edges[c]), F.lit(0))

        binned = base.select("_pop", F.explode(F.array(*[
            F.struct(F.lit(c).alias("ch"), bin_of(c).alias("bin")) for c in range(C)])).alias("b"))
        rows = (binned.groupBy("_pop", F.col("b.ch").alias("ch"), F.col("b.bin").alias("bin"))
                .agg(F.count(F.lit(1)).alias("n")).collect())
    finally:
        base.unpersist()
    counts = {(r["_pop"], int(r["ch"]), int(r["bin"])): int(r["n"]) for r in rows}
    out = []
    for c, name in enumerate(channels):
        k = len(edges[c]) + 1
        e = [counts.get(("expected", c, b), 0) for b in range(k)]
        a = [counts.get(("actual", c, b), 0) for b in range(k)]
        out.append((name, psi(e, a), int(sum(e)), int(sum(a)), k))
    data.psi = pd.DataFrame(out, columns=["channel", "psi", "n_expected", "n_actual", "n_bins"])


def _gather_quarantine(spark, cfg, data: ReportData) -> None:
    from pyspark.sql import functions as F

    path = cfg.quarantine_path
    if not _is_delta(spark, path):
        data.notes.append(f"quarantine table {path} does not exist: no quarantined rows recorded")
        return
    run_id = f"build-{data.run_date.isoformat()}"
    rows = (spark.read.format("delta").load(path).where(F.col("run_id") == F.lit(run_id))
            .groupBy("source", "reason").agg(F.count(F.lit(1)).alias("n")).collect())
    data.quarantine = pd.DataFrame(sorted((r["source"], r["reason"], int(r["n"])) for r in rows),
                                   columns=["source", "reason", "n"])


def write_report(spark, cfg, run_date: dt.date, ingest_summary: Optional[dict] = None) -> str:
    """Gather, render and write ``<work_dir>/runs/<run_date>/report.html`` (atomically); returns the path."""
    data = gather(spark, cfg, run_date, ingest_summary=ingest_summary)
    out = Path(cfg.path("runs", run_date.isoformat(), "report.html"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(render(data), encoding="utf-8")
    os.replace(tmp, out)
    return str(out)


# ---------------------------------------------------------------------------------------------------------
# Rendering (pure)
# ---------------------------------------------------------------------------------------------------------
COLORS = {"deep": "#1f77b4", "lr_rfm": "#ff7f0e", "gbt": "#2ca02c",
          "high": "#d62728", "medium": "#ff7f0e", "low": "#2ca02c"}

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}td.best{font-weight:bold}
tr.drift td{background:#fde2e2;color:#a00;font-weight:bold}tr.bad td{background:#fde2e2}
.badge{display:inline-block;padding:2px 8px;border-radius:4px;color:#fff;font-weight:bold}
.yes{background:#2a8a2a}.no{background:#a33}
.notes{background:#fff6d5;border:1px solid #e6cf6e;padding:6px 12px}
figure{display:inline-block;margin:6px 10px 6px 0;vertical-align:top}figcaption{font-size:12px;color:#555}
.meta td{text-align:left}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _f4(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    try:
        return f"{float(v):.4f}"
    except (TypeError, ValueError):
        return str(v)


def _rate(v: Any) -> str:
    return f"{float(v):,.1f}" if _num(v) else "—"


def _int(v: Any) -> str:
    try:
        return f"{int(v):,}"
    except (TypeError, ValueError):
        return "—" if v is None else str(v)


Cell = Any  # a value, or (value, css class)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Cell]], row_classes: Optional[Sequence[str]] = None,
           left: Sequence[int] = (0,), css: str = "") -> str:
    """An HTML table; every header and cell is escaped here (callers pass plain text)."""
    lc = set(left)
    out = [f'<table class="{_e(css)}">' if css else "<table>", "<tr>"]
    out += [f'<th class="l">{_e(h)}</th>' if i in lc else f"<th>{_e(h)}</th>" for i, h in enumerate(headers)]
    out.append("</tr>")
    for j, row in enumerate(rows):
        cls = row_classes[j] if row_classes and row_classes[j] else ""
        out.append(f'<tr class="{_e(cls)}">' if cls else "<tr>")
        for i, cell in enumerate(row):
            text, ccls = cell if isinstance(cell, tuple) else (cell, "")
            classes = " ".join(x for x in ("l" if i in lc else "", ccls) if x)
            out.append(f'<td class="{_e(classes)}">{_e(text)}</td>' if classes else f"<td>{_e(text)}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _figure(w: float = 4.6, h: float = 3.2, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)  # Agg canvas on this figure only: no pyplot state, no global backend switch
    axes = fig.subplots(1, ncols)
    return fig, axes


def _img(fig, caption: str) -> str:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    b64 = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _thin(*arrays: np.ndarray, n: int = MAX_CURVE_POINTS):
    size = len(arrays[0])
    if size <= n:
        return arrays
    idx = np.unique(np.linspace(0, size - 1, n).round().astype(int))
    return tuple(a[idx] for a in arrays)


def _score_column(df: pd.DataFrame, model: str) -> Optional[str]:
    for c in (f"{model}_calibrated", model):
        if c in df.columns:
            return c
    return None


def _labelled(df: pd.DataFrame) -> pd.DataFrame:
    if df is None or df.empty or "label" not in df:
        return pd.DataFrame()
    return df[df["label"].notna()]


def _curves(data: ReportData) -> List[str]:
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    df = _labelled(data.test_scores)
    if df.empty or df["label"].nunique() < 2:
        return []
    y = df["label"].to_numpy(dtype=float)
    fig_roc, ax_roc = _figure()
    fig_pr, ax_pr = _figure()
    fig_g, (ax_g, ax_l) = _figure(8.4, 3.2, ncols=2)
    for m in MODELS:
        col = _score_column(df, m)
        if col is None:
            continue
        p = df[col].to_numpy(dtype=float)
        fpr, tpr, _ = roc_curve(y, p)
        ax_roc.plot(*_thin(fpr, tpr), color=COLORS[m], lw=1.5, label=f"{m} (AUC {auc(fpr, tpr):.3f})")
        prec, rec, _ = precision_recall_curve(y, p)
        ax_pr.plot(*_thin(rec, prec), color=COLORS[m], lw=1.5, label=m)
        g = gains_table(y, p)
        ax_g.plot(np.r_[0, g["share_users"]], np.r_[0, g["share_positives"]], color=COLORS[m], lw=1.5, label=m)
        ax_l.plot(g["share_users"], g["lift"], color=COLORS[m], lw=1.5, label=m)
    ax_roc.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test, calibrated)")
    base = float(y.mean())
    ax_pr.axhline(base, ls=":", color="grey", lw=1, label=f"base rate {base:.3f}")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall (test, calibrated)", ylim=(0, 1.02))
    ax_g.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax_g.set(xlabel="share of users contacted (by score)", ylabel="share of churners caught", title="Cumulative gains")
    ax_l.axhline(1, ls=":", color="grey", lw=1)
    ax_l.set(xlabel="share of users contacted (by score)", ylabel="lift", title="Lift")
    for ax in (ax_roc, ax_pr, ax_g, ax_l):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    out = [_img(fig_roc, "ROC curves on the test snapshot"), _img(fig_pr, "Precision-recall curves on the test snapshot"),
           _img(fig_g, "Cumulative gains and lift on the test snapshot")]
    raw = "deep" if "deep" in df else None
    cal = "deep_calibrated" if "deep_calibrated" in df else None
    if raw or cal:
        fig, ax = _figure()
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfect")
        for col, style, lab in ((raw, "o--", "deep raw"), (cal, "s-", "deep calibrated")):
            if col:
                t = reliability_table(y, df[col].to_numpy(dtype=float), 10)
                ax.plot(t["mean_predicted"], t["observed_rate"], style, ms=4, lw=1.3, label=lab)
        ax.set(xlabel="mean predicted probability", ylabel="observed churn rate", title="Reliability (deep, 10 bins)",
               xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        out.append(_img(fig, "Calibration of the deep model: raw vs calibrated"))
    return out


def _training_plot(data: ReportData) -> List[str]:
    tr = data.metrics.get("training") or {}
    hist = tr.get("history") or {}
    ranks = tr.get("ranks") or []
    if not hist and not ranks:
        return []
    fig, (ax_h, ax_r) = _figure(8.4, 3.0, ncols=2)
    for key, style in (("loss", "-o"), ("val_loss", "-s")):
        vals = hist.get(key) or []
        if vals:
            ax_h.plot(range(1, len(vals) + 1), vals, style, ms=3, lw=1.3, label=key)
    ax_h.set(xlabel="epoch", ylabel="loss", title="Training loss")
    if hist:
        ax_h.legend(fontsize=8)
    ax_h.grid(alpha=0.3)
    if ranks:
        ax_r.bar([str(r.get("rank")) for r in ranks], [float(r.get("samples_per_s") or 0) for r in ranks],
                 color="#1f77b4")
    ax_r.set(xlabel="Horovod rank", ylabel="samples/s", title="Throughput per rank")
    ax_r.grid(alpha=0.3, axis="y")
    return [_img(fig, "Training loss per epoch and samples/s per rank")]


def _risk_plots(data: ReportData) -> List[str]:
    out = []
    wide = data.tiers_by_snapshot()
    if not wide.empty:
        tiers = data.score_tiers()
        fig, (ax_t, ax_s) = _figure(8.4, 3.0, ncols=2)
        names = list(tiers)
        ax_t.bar(names, [tiers[t] for t in names], color=[COLORS.get(t, "grey") for t in names])
        ax_t.set(title=f"Risk tiers, snapshot {data.score_snapshot}", ylabel="users")
        ax_t.grid(alpha=0.3, axis="y")
        x = pd.to_datetime(wide["snapshot_date"])
        ax_s.plot(x, wide["high_share"] * 100, "-o", ms=3, color=COLORS["high"])
        ax_s.set(title="High-risk share per snapshot", ylabel="% of scored users")
        ax_s.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax_s.grid(alpha=0.3)
        out.append(_img(fig, "Risk tiers of the score snapshot and high-risk share over snapshots"))
    h = data.histogram
    if h is not None and not h.empty and h["n"].sum() > 0:
        fig, ax = _figure(5.6, 3.0)
        left = h["bin"].to_numpy(dtype=float) / HIST_BINS
        ax.bar(left, h["n"].to_numpy(dtype=float), width=1 / HIST_BINS, align="edge", color="#1f77b4",
               edgecolor="white")
        for name, thr in sorted(data.tier_thresholds.items(), key=lambda kv: kv[1]):
            ax.axvline(thr, ls="--", lw=1, color=COLORS.get(name, "grey"), label=f"{name} ≥ {thr:g}")
        ax.set(xlim=(0, 1), xlabel="churn probability", ylabel="users",
               title=f"Score distribution, snapshot {data.score_snapshot}")
        if data.tier_thresholds:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        out.append(_img(fig, "Distribution of churn probabilities (20 bins)"))
    return out


def _psi_plot(data: ReportData) -> List[str]:
    if data.psi is None or data.psi.empty:
        return []
    d = data.psi
    fig, ax = _figure(5.6, 0.6 + 0.28 * len(d))
    vals = d["psi"].astype(float).fillna(0).to_numpy()
    ax.barh(list(d["channel"].astype(str)), vals,
            color=[COLORS["high"] if v > data.psi_threshold else "#1f77b4" for v in vals])
    ax.axvline(data.psi_threshold, ls="--", color="grey", lw=1)
    ax.invert_yaxis()
    ax.set(xlabel="PSI (score vs training snapshots)", title="Input drift per channel")
    ax.tick_params(axis="y", labelsize=8)
    return [_img(fig, "PSI per channel; dashed line = threshold")]


def _header(data: ReportData) -> str:
    m = data.metrics
    gate = m.get("gate") or {}
    promoted = bool(gate.get("promoted"))
    badge = (f'<span class="badge yes">{_e("PROMOTED")}</span>' if promoted
             else f'<span class="badge no">{_e("NOT PROMOTED")}</span>')
    snaps = m.get("snapshots") or {}
    sc = data.scoring or {}
    rows = [
        ("Run date", data.run_date),
        ("Model", f"{m.get('model_name', '?')} version {m.get('model_version', '?')}"),
        ("MLflow run id", m.get("run_id", "?")),
        ("Feature table version", m.get("features_version", "?")),
        ("Gate", f"{gate.get('metric', '?')}: candidate {_f4(gate.get('candidate'))} vs champion "
                 f"{_f4(gate.get('champion'))} (version {gate.get('champion_version') or '—'}, margin "
                 f"{gate.get('margin', '—')}) — {gate.get('reason', '')}"),
        ("Snapshots", "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in snaps.items())),
    ]
    if sc:
        rows.append(("Score snapshot scored by",
                     f"{', '.join(map(str, sc.get('model_names') or []))} version(s) "
                     f"{', '.join(map(str, sc.get('model_versions') or [])) or '—'} at {sc.get('scored_at')} "
                     f"(feature table version {sc.get('feature_table_version')}, scoring run "
                     f"{', '.join(map(str, sc.get('run_ids') or [])) or '—'})"))
    return (f"<h1>Churn early-warning report — {_e(data.run_date)}</h1><p>{badge} {_e(gate.get('reason', ''))}</p>"
            + _table(["item", "value"], rows, css="meta"))


def _metrics_section(data: ReportData) -> str:
    models = [x for x in MODELS if x in (data.metrics.get("models") or {})]
    models += [x for x in (data.metrics.get("models") or {}) if x not in models]
    mm = data.metrics.get("models") or {}
    keys = list(METRIC_KEYS) + sorted({k for x in models for k in mm[x] if k not in METRIC_KEYS})
    rows = []
    for k in keys:
        vals = [mm[x].get(k) for x in models]
        best = None
        finite = [v for v in vals if _num(v)]
        if k not in NOT_COMPARED and len(finite) > 1:
            best = min(finite) if k in LOWER_IS_BETTER else max(finite)
        rows.append([k] + [(_f4(v), "best" if best is not None and v == best else "") for v in vals])
    out = "<h2>Test-snapshot metrics</h2>" + _table(["metric", *models], rows)
    out += "<p>Calibrated probabilities; thresholds chosen on validation; bold = best.</p>"
    val = data.metrics.get("validation") or {}
    if val:
        vk = ["brier_raw", "brier_calibrated", "threshold"]
        out += "<h2>Validation (calibration)</h2>" + _table(
            ["model", *vk], [[x] + [_f4(val[x].get(k)) for k in vk] for x in val])
    return out


def _training_section(data: ReportData) -> str:
    tr = data.metrics.get("training") or {}
    ranks = tr.get("ranks") or []
    out = (f"<h2>Training</h2><p>{_e(tr.get('epochs', '?'))} epochs, "
           f"{_e(_rate(tr.get('samples_per_s_total')))} samples/s in total over {len(ranks)} rank(s).</p>")
    if ranks:
        digests = {r.get("weights_digest") for r in ranks}
        out += _table(["rank", "host", "samples/s", "epochs run", "resumed", "weights digest"],
                      [[r.get("rank"), r.get("host"), _rate(r.get("samples_per_s")), r.get("epochs_run"),
                        r.get("resumed"), str(r.get("weights_digest") or "")[:16]] for r in ranks],
                      left=(1, 5))
        if len(digests) > 1:
            out += f"<p class=\"notes\">{_e('ranks finished with different weights: Horovod ranks diverged')}</p>"
    return out


def _risk_section(data: ReportData) -> str:
    out = f"<h2>Risk tiers — score snapshot {_e(data.score_snapshot)}</h2>"
    tiers = data.score_tiers()
    users = sum(tiers.values())
    out += _table(["tier", "users", "share"],
                  [[t, _int(n), f"{n / users:.2%}" if users else "—"] for t, n in tiers.items()]
                  + [["total", _int(users), "100.00%" if users else "—"]])
    wide = data.tiers_by_snapshot()
    if not wide.empty:
        recent = wide.tail(12).iloc[::-1]
        cols = [c for c in wide.columns if c not in ("snapshot_date", "total", "high_share")]
        out += "<p>Recent snapshots (newest first):</p>" + _table(
            ["snapshot", *cols, "total", "high share"],
            [[r["snapshot_date"], *[_int(r[c]) for c in cols], _int(r["total"]),
              f"{r['high_share']:.2%}" if pd.notna(r["high_share"]) else "—"] for _, r in recent.iterrows()])
    return out


def _psi_section(data: ReportData) -> str:
    out = (f"<h2>Input drift (PSI, score snapshot vs training snapshots)</h2><p>Per-user channel totals over the "
           f"whole sequence, log1p, 10 quantile bins from training; flagged above {_e(data.psi_threshold)}.</p>")
    d = data.psi
    if d is None or d.empty:
        return out + "<p>No drift figures.</p>"
    rows, classes = [], []
    for _, r in d.iterrows():
        v = r["psi"]
        drift = _num(v) and v > data.psi_threshold
        rows.append([r["channel"], _f4(v), "⚠ DRIFT" if drift else "ok",
                     *[_int(r[c]) for c in ("n_expected", "n_actual", "n_bins") if c in d.columns]])
        classes.append("drift" if drift else "")
    extra = [h for c, h in (("n_expected", "training users"), ("n_actual", "score users"), ("n_bins", "bins"))
             if c in d.columns]
    flagged = data.drifted_channels()
    summary = (f"<p><b>{_e(len(flagged))} channel(s) drifted:</b> {_e(', '.join(flagged))}</p>" if flagged
               else "<p>No channel above the threshold.</p>")
    return out + summary + _table(["channel", "PSI", "status", *extra], rows, row_classes=classes, left=(0, 2))


def _top_section(data: ReportData) -> str:
    t = data.top_users
    out = f"<h2>Top {_e(len(t))} at-risk users — snapshot {_e(data.score_snapshot)}</h2>"
    if t is None or t.empty:
        return out + "<p>No scored users.</p>"
    rows = []
    for _, r in t.sort_values("risk_rank").iterrows():
        reasons = r.get("top_reasons")
        reasons = "; ".join(map(str, reasons)) if isinstance(reasons, (list, tuple, np.ndarray)) else (reasons or "")
        rows.append([_int(r["risk_rank"]), r["user_id"], _f4(r["churn_probability"]), r.get("risk_tier", ""),
                     _f4(r.get("risk_percentile")), reasons])
    return out + _table(["rank", "user", "churn probability", "tier", "percentile", "top reasons"], rows,
                        left=(1, 3, 5))


def _quality_section(data: ReportData) -> str:
    out = f"<h2>Data quality — build-{_e(data.run_date.isoformat())}</h2>"
    q = data.quarantine
    if q is not None and not q.empty:
        out += "<p>Quarantined rows (Delta quarantine table) by source and reason:</p>" + _table(
            ["source", "reason", "rows"], [[s, r, _int(n)] for s, r, n in zip(q["source"], q["reason"], q["n"])]
            + [["total", "", _int(q["n"].sum())]], left=(0, 1))
    else:
        out += "<p>No quarantined rows for this run.</p>"
    summary = data.ingest_summary
    if summary:
        in_table = q.groupby("source")["n"].sum().to_dict() if q is not None and not q.empty else {}
        rows, classes = [], []
        for src, c in summary.items():
            parts = [c.get(k) for k in ("rows_in", "used", "quarantined", "deduplicated")]
            ok = all(_num(x) for x in parts) and parts[0] == parts[1] + parts[2] + parts[3]
            by = ", ".join(f"{k}: {v}" for k, v in sorted((c.get("by_reason") or {}).items()))
            rows.append([src, *[_int(x) for x in parts], "✓" if ok else "✗ MISMATCH",
                         _int(in_table.get(src, 0)) if q is not None and not q.empty else "—", by])
            classes.append("" if ok else "bad")
        out += ("<p>Ingest accounting (rows_in = used + quarantined + deduplicated; duplicates are also kept in the "
                "quarantine table):</p>" + _table(
                    ["source", "rows in", "used", "quarantined", "deduplicated", "balanced", "quarantine table rows",
                     "by reason"], rows, row_classes=classes, left=(0, 7)))
    return out


def render(data: ReportData) -> str:
    """The complete HTML page (inline CSS, PNGs as data URIs; nothing fetched from anywhere)."""
    parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>Churn report {_e(data.run_date)}</title><style>{CSS}</style></head><body>",
             _header(data)]
    if data.notes:
        parts.append('<div class="notes"><b>Notes</b><ul>' + "".join(f"<li>{_e(n)}</li>" for n in data.notes)
                     + "</ul></div>")
    parts.append(_metrics_section(data))
    curves = _curves(data)
    parts.append("<h2>Model comparison plots</h2>" + ("".join(curves) or "<p>No labelled test scores.</p>"))
    parts.append(_training_section(data) + "".join(_training_plot(data)))
    parts.append(_risk_section(data) + "".join(_risk_plots(data)))
    parts.append(_psi_section(data) + "".join(_psi_plot(data)))
    parts.append(_top_section(data))
    parts.append(_quality_section(data))
    parts.append(f"<p style=\"color:#888;font-size:11px\">Generated "
                 f"{_e(dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat())} by churn_spark.report"
                 "</p></body></html>")
    return "".join(parts)
