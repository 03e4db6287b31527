"""Weekly run report: one self-contained HTML file (inline CSS, base64 PNGs) that can be mailed or archived.

Why this module: it is the report's entry point and the only place that decides what the page says. The work is
split by concern: :mod:`churn_spark.report_data` gathers the run's files and small Delta aggregates into a
:class:`~churn_spark.report_data.ReportData`, :mod:`churn_spark.report_plots` draws the figures, and the page
layout is the Jinja2 template ``templates/report.html.j2``. Here the data is turned into display text (rounding,
which model is best, which rows are flagged) and the template is filled; nothing here touches Spark.
"""

from __future__ import annotations

import datetime as dt
import pkgutil
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from . import report_plots as plots
from . import storage
from .metrics import LOWER_IS_BETTER
from .report_action import action_section, outcomes_section
from .report_data import HIST_BINS, MODELS, ReportData, gather, is_number
from .report_format import f4 as _f4
from .report_format import integer as _int
from .report_format import pct as _pct
from .report_format import reasons_text as _reasons_text
from .report_format import table as _table
from .report_format import timings_table
from .run_metrics import shipped_metrics

__all__ = ["render", "write_report", "gather", "ReportData"]

METRIC_KEYS = (
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "threshold",
    "precision",
    "recall",
    "f1",
    "precision_top10",
    "recall_top10",
    "precision_top20",
    "recall_top20",
    "lift_top10",
    "base_rate",
    "n_users",
)
NOT_COMPARED = {"threshold", "base_rate", "n_users", "roc_auc_gain_vs_lr_rfm_lo", "roc_auc_gain_vs_lr_rfm_hi"}
METRICS_NOTE = (
    "Ranking metrics (roc_auc, pr_auc, top-k precision/recall, lift) are computed on the raw score; "
    "probability metrics (log_loss, brier) and precision/recall/F1 on the calibrated probability, at a "
    "threshold chosen on validation. roc_auc_gain_vs_lr_rfm: ROC-AUC minus the logistic regression's on the same "
    "test rows, with its paired-bootstrap 95% interval (_lo, _hi); an interval above 0 means the model beats the "
    "linear baseline on this data, one that straddles 0 means it does not earn its cost. Bold = best."
)
TEMPLATE = "templates/report.html.j2"


def _metric_keys(*dicts: Optional[Dict[str, Any]]) -> List[str]:
    present = {k for d in dicts if d for k in d}
    return [k for k in METRIC_KEYS if k in present] + sorted(present - set(METRIC_KEYS))


def _best_marked(values: Sequence[Any], key: str) -> List[Any]:
    finite = [v for v in values if is_number(v)]
    best = None
    if key not in NOT_COMPARED and len(finite) > 1:
        best = min(finite) if key in LOWER_IS_BETTER else max(finite)
    return [(_f4(v), "best" if best is not None and v == best else "") for v in values]


# ---------------------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------------------
def _header(data: ReportData) -> Dict[str, Any]:
    m, gate, sc = data.metrics, data.gate(), data.scoring or {}
    name = m.get("model_name", "?")
    rows = [
        ("Run date", data.run_date),
        ("Model", f"{name} version {m.get('model_version', '?')}"),
        ("MLflow run id", m.get("run_id", "?")),
        ("Feature table version", m.get("features_version", "?")),
        (
            "Gate",
            f"{gate.metric or '?'}: candidate {_f4(gate.candidate)} vs champion {_f4(gate.champion)} "
            f"(version {gate.champion_version or '—'}, margin {_f4(gate.margin)}) — {gate.reason}",
        ),
        ("Snapshots", "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in (m.get("snapshots") or {}).items())),
    ]
    if sc:
        rows.append(
            (
                "Score snapshot scored by",
                f"{', '.join(map(str, sc.get('model_names') or []))} version(s) "
                f"{', '.join(map(str, sc.get('model_versions') or [])) or '—'} at {sc.get('scored_at')} "
                f"(feature table version {sc.get('feature_table_version')}, scoring run "
                f"{', '.join(map(str, sc.get('run_ids') or [])) or '—'})",
            )
        )
    sb = data.scored_by()
    comparison = None
    if sb is None:
        text = "Which model version scored this week is not recorded (no scored_by in metrics.json)."
    else:
        role = {"champion": "the champion", "candidate": "this run's candidate"}.get(sb.role, "a registered version")
        text = f"This week was scored by {name} version {sb.model_version} ({role})."
        if sb.model_version != data.candidate_version:
            cand = shipped_metrics(m)
            if sb.test_metrics:
                comparison = _table(
                    ["metric", f"candidate v{data.candidate_version or '?'}", f"scoring model v{sb.model_version}"],
                    [
                        [k, *_best_marked([cand.get(k), sb.test_metrics.get(k)], k)]
                        for k in _metric_keys(cand, sb.test_metrics)
                    ],
                )
            else:
                text += " Its test metrics are not in metrics.json, so it cannot be compared with the candidate."
    return {"meta": _table(["item", "value"], rows, css="meta"), "scored_by": text, "comparison": comparison}


def _metrics(data: ReportData) -> Dict[str, Any]:
    mm = data.metrics.get("models") or {}
    models = [x for x in MODELS if x in mm] + [x for x in mm if x not in MODELS]
    rows = [[k, *_best_marked([mm[x].get(k) for x in models], k)] for k in _metric_keys(*mm.values())]
    out: Dict[str, Any] = {"table": _table(["metric", *models], rows), "note": METRICS_NOTE, "validation": None}
    val = data.metrics.get("validation") or {}
    if val:
        cross_fitted = any("brier_calibrated_cv" in v for v in val.values())
        key = "brier_calibrated_cv" if cross_fitted else "brier_calibrated"
        label = "brier calibrated (cross-fitted)" if cross_fitted else "brier calibrated"
        out["validation"] = _table(
            ["model", "brier raw", label, "threshold"],
            [[x, _f4(v.get("brier_raw")), _f4(v.get(key)), _f4(v.get("threshold"))] for x, v in val.items()],
        )
    return out


def _gate(data: ReportData) -> Dict[str, Any]:
    g = data.gate()
    improvement = g.improvement
    if improvement is None and g.candidate is not None and g.champion is not None:
        improvement = (g.champion - g.candidate) if g.metric in LOWER_IS_BETTER else (g.candidate - g.champion)
    conf = f"{g.confidence:.0%} " if g.confidence is not None else ""
    interval = f"[{g.interval[0]:+.4f}, {g.interval[1]:+.4f}]" if g.interval else "—"
    comparable = {True: "yes", False: "no (different feature contract)", None: "—"}[g.comparable]
    rows = [
        ("metric", g.metric or "—"),
        (f"candidate v{data.candidate_version or '?'}", _f4(g.candidate)),
        (f"champion v{g.champion_version}" if g.champion_version else "champion", _f4(g.champion)),
        ("improvement (positive = candidate better)", f"{improvement:+.4f}" if improvement is not None else "—"),
        (f"{conf}bootstrap interval of the improvement", interval),
        ("margin", _f4(g.margin)),
        ("comparable", comparable),
        ("test rows compared", _int(g.rows) if g.rows is not None else "—"),
    ]
    return {
        "promoted": g.promoted,
        "reason": g.reason,
        "decision": "PROMOTED" if g.promoted else "NOT PROMOTED",
        "table": _table(["gate", "value"], rows, css="meta"),
    }


def _curves(data: ReportData) -> List[plots.Image]:
    df = data.test_scores
    if df is None or df.empty or "label" not in df:
        return []
    df = df[df["label"].notna()]
    if df["label"].nunique() < 2:
        return []
    y = df["label"].to_numpy(dtype=float)
    # ranking curves on the raw score (as the ranking metrics); the calibrated column only if the raw one is missing
    scores = {
        m: df[c].to_numpy(dtype=float)
        for m in MODELS
        for c in [next((c for c in (m, f"{m}_calibrated") if c in df.columns), None)]
        if c
    }
    out = plots.ranking_curves(y, scores) if scores else []
    probs = {
        label: df[c].to_numpy(dtype=float)
        for c, label in (("deep", "deep raw"), ("deep_calibrated", "deep calibrated"))
        if c in df.columns
    }
    if probs:
        out.append(plots.reliability(y, probs))
    return out


def _training(data: ReportData) -> Dict[str, Any]:
    tr = data.metrics.get("training") or {}
    ranks, hist = tr.get("ranks") or [], tr.get("history") or {}
    total = tr.get("samples_per_s_total")
    rate = f"{float(total):,.1f}" if is_number(total) else "—"
    out: Dict[str, Any] = {
        "summary": f"{tr.get('epochs', '?')} epochs, {rate} samples/s in total over " f"{len(ranks)} rank(s).",
        "table": None,
        "diverged": False,
        "images": [plots.training(hist, ranks)] if hist or ranks else [],
    }
    if ranks:
        out["table"] = _table(
            ["rank", "host", "samples/s", "epochs run", "resumed", "weights digest"],
            [
                [
                    r.get("rank"),
                    r.get("host"),
                    f"{float(r['samples_per_s']):,.1f}" if is_number(r.get("samples_per_s")) else "—",
                    r.get("epochs_run"),
                    r.get("resumed"),
                    str(r.get("weights_digest") or "")[:16],
                ]
                for r in ranks
            ],
            left=(1, 5),
        )
        out["diverged"] = len({r.get("weights_digest") for r in ranks}) > 1
    return out


def _risk(data: ReportData) -> Dict[str, Any]:
    tiers = data.score_tiers()
    users = sum(tiers.values())
    cuts = ", ".join(f"{k} {v:g}" for k, v in sorted(data.tier_thresholds.items(), key=lambda kv: kv[1]))
    mode = (
        (
            f"Tiers by share of the snapshot, from the top ({cuts})."
            if data.tier_mode == "share"
            else f"Tiers by calibrated-probability cut-off ({cuts})."
        )
        if cuts
        else ""
    )
    out: Dict[str, Any] = {
        "mode": mode,
        "recent": None,
        "outcomes": None,
        "outcomes_mode": "",
        "images": [],
        "tiers": _table(
            ["tier", "users", "share"],
            [[t, _int(n), f"{n / users:.2%}" if users else "—"] for t, n in tiers.items()]
            + [["total", _int(users), "100.00%" if users else "—"]],
        ),
    }
    wide = data.tiers_by_snapshot()
    if not wide.empty:
        cols = [c for c in wide.columns if c not in ("snapshot_date", "total", "high_share")]
        out["recent"] = _table(
            ["snapshot", *cols, "total", "high share"],
            [
                [
                    r["snapshot_date"],
                    *[_int(r[c]) for c in cols],
                    _int(r["total"]),
                    _pct(r["high_share"]) if pd.notna(r["high_share"]) else "—",
                ]
                for _, r in wide.tail(12).iloc[::-1].iterrows()
            ],
        )
        out["images"].append(plots.tiers(data.score_snapshot, tiers, wide))
    oc = data.tier_outcomes()
    if not oc.empty:
        out["outcomes"] = _table(
            ["tier", "test users", "realised churn rate", "mean predicted probability"],
            [
                [r["tier"], _int(r["users"]), _pct(r["churn_rate"]), _f4(r["mean_probability"])]
                for _, r in oc.iterrows()
            ],
        )
        out["outcomes_mode"] = {
            "share": "Tiers assigned by share of the test snapshot.",
            "probability": "Tiers assigned by calibrated-probability cut-off.",
        }.get(data.tier_outcome_mode or "", "")
    h = data.histogram
    if h is not None and not h.empty and h["n"].sum() > 0:
        cutoffs = data.tier_thresholds if data.tier_mode == "probability" else None  # shares are not probabilities
        out["images"].append(plots.histogram(data.score_snapshot, h, HIST_BINS, cutoffs))
    return out


def _psi(data: ReportData) -> Dict[str, Any]:
    d = data.psi
    out: Dict[str, Any] = {
        "threshold": data.psi_threshold,
        "table": None,
        "flagged": data.drifted_channels(),
        "images": [],
    }
    if d is None or d.empty:
        return out
    flagged = set(out["flagged"])
    extra = [
        (c, h)
        for c, h in (("n_expected", "training users"), ("n_actual", "score users"), ("n_bins", "bins"))
        if c in d.columns
    ]
    rows = [
        [
            r["channel"],
            _f4(r["psi"]),
            "⚠ DRIFT" if str(r["channel"]) in flagged else "ok",
            *[_int(r[c]) for c, _ in extra],
        ]
        for _, r in d.iterrows()
    ]
    out["table"] = _table(
        ["channel", "PSI", "status", *[h for _, h in extra]],
        rows,
        left=(0, 2),
        row_classes=["drift" if str(c) in flagged else "" for c in d["channel"]],
    )
    out["images"] = [plots.psi_bars(d, data.psi_threshold)]
    return out


def _top(data: ReportData) -> Dict[str, Any]:
    t = data.top_users
    if t is None or t.empty:
        return {"n": 0, "table": None}
    raw = "raw_score" in t.columns
    rows = []
    for _, r in t.sort_values("risk_rank", kind="stable").iterrows():
        reasons = _reasons_text(r.get("top_reasons"))
        rows.append(
            [
                _int(r["risk_rank"]),
                r["user_id"],
                _f4(r["churn_probability"]),
                *([_f4(r["raw_score"])] if raw else []),
                r.get("risk_tier", ""),
                _f4(r.get("risk_percentile")),
                reasons,
            ]
        )
    headers = [
        "rank",
        "user",
        "churn probability",
        *(["raw score"] if raw else []),
        "tier",
        "percentile",
        "top reasons",
    ]
    return {"n": len(t), "table": _table(headers, rows, left=(1, len(headers) - 3, len(headers) - 1))}


def _quality(data: ReportData) -> Dict[str, Any]:
    q = data.quarantine
    has_q = q is not None and not q.empty
    out: Dict[str, Any] = {"quarantine": None, "ingest": None}
    if has_q:
        out["quarantine"] = _table(
            ["source", "reason", "rows"],
            [[s, r, _int(n)] for s, r, n in zip(q["source"], q["reason"], q["n"])]
            + [["total", "", _int(q["n"].sum())]],
            left=(0, 1),
        )
    if data.ingest_summary:
        in_table = q.groupby("source")["n"].sum().to_dict() if has_q else {}
        rows, classes = [], []
        for src, c in data.ingest_summary.items():
            parts = [c.get(k) for k in ("rows_in", "used", "quarantined", "deduplicated")]
            ok = all(is_number(x) for x in parts) and parts[0] == parts[1] + parts[2] + parts[3]
            by = ", ".join(f"{k}: {v}" for k, v in sorted((c.get("by_reason") or {}).items()))
            rows.append(
                [
                    src,
                    *[_int(x) for x in parts],
                    "✓" if ok else "✗ MISMATCH",
                    _int(in_table.get(src, 0)) if has_q else "—",
                    by,
                ]
            )
            classes.append("" if ok else "bad")
        out["ingest"] = _table(
            [
                "source",
                "rows in",
                "used",
                "quarantined",
                "deduplicated",
                "balanced",
                "quarantine table rows",
                "by reason",
            ],
            rows,
            row_classes=classes,
            left=(0, 7),
        )
    return out


# ---------------------------------------------------------------------------------------------------------
def _template():
    """The page template, read through the module loader so it is found in a source tree, an installed package
    and the zipped package shipped with ``--py-files`` alike (churn_spark is a namespace package, which
    ``importlib.resources`` and ``jinja2.PackageLoader`` cannot read from a zip on Python 3.11)."""
    import jinja2

    source = pkgutil.get_data(__name__, TEMPLATE)
    if source is None:
        raise FileNotFoundError(f"{TEMPLATE} not found next to {__name__}")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(source.decode("utf-8"))


def render(data: ReportData) -> str:
    """The complete HTML page (inline CSS, PNGs as data URIs; nothing fetched from anywhere)."""
    generated = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    return _template().render(
        run_date=data.run_date,
        score_snapshot=data.score_snapshot,
        notes=data.notes,
        generated=generated,
        header=_header(data),
        metrics=_metrics(data),
        gate=_gate(data),
        curves=_curves(data),
        training=_training(data),
        risk=_risk(data),
        psi=_psi(data),
        top=_top(data),
        action=action_section(data),
        outcomes=outcomes_section(data),
        quality=_quality(data),
        timings=timings_table(data.timings),
    )


def write_report(spark, cfg, run_date: dt.date, ingest_summary: Optional[dict] = None) -> str:
    """Gather, render and write ``<work_dir>/runs/<run_date>/report.html`` (atomically); returns the path."""
    data = gather(spark, cfg, run_date, ingest_summary=ingest_summary)
    out = cfg.path("runs", run_date.isoformat(), "report.html")
    storage.write_text(out, render(data))
    return out
