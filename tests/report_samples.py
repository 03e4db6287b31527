"""Hand-built report data for the report tests: a ReportData with every section filled, the flat numbers a page
should show, and the metrics.json keys added later (scored_by, the bootstrap gate, share tiers). No Spark."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

from churn_spark.report import METRIC_KEYS
from churn_spark.report_data import MODELS, ReportData

RUN = dt.date(2026, 11, 2)
SNAPSHOTS = [RUN - dt.timedelta(days=28 * i) for i in range(6)][::-1]  # oldest .. RUN


# ---- test helpers (what the report shows, flat; the histogram as gather computes it) ---------------------------
def histogram_counts(probabilities, n_bins: int = 20) -> pd.DataFrame:
    """The score histogram exactly as gather computes it in Spark: ``bin = min(floor(p * n), n - 1)``."""
    p = np.asarray(list(probabilities), dtype=float)
    idx = np.clip(np.floor(p * n_bins).astype(int), 0, n_bins - 1)
    return pd.DataFrame({"bin": np.arange(n_bins), "n": np.bincount(idx, minlength=n_bins)[:n_bins]})


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def numbers(data: ReportData) -> dict:
    """Flat {key: number} of what the page shows, e.g. ``deep.roc_auc``, ``tier.high``, ``users_scored``."""
    out: dict = {}
    m = data.metrics
    for section, prefix in (("models", ""), ("validation", "validation.")):
        for name, d in (m.get(section) or {}).items():
            out.update({f"{prefix}{name}.{k}": v for k, v in d.items() if _finite(v)})
    gate = data.gate()
    out["gate.promoted"] = int(gate.promoted)
    out.update(
        {f"gate.{k}": getattr(gate, k) for k in ("candidate", "champion", "margin") if getattr(gate, k) is not None}
    )
    tiers = data.score_tiers()
    out.update({f"tier.{t}": n for t, n in tiers.items()})
    out["users_scored"] = sum(tiers.values())
    out["test.n_rows"] = len(data.test_scores)
    out["histogram.total"] = int(data.histogram["n"].sum()) if not data.histogram.empty else 0
    out["top_users.n"] = len(data.top_users)
    if not data.psi.empty:
        out.update({f"psi.{c}": float(v) for c, v in zip(data.psi["channel"], data.psi["psi"])})
    out["psi.flagged"] = len(data.drifted_channels())
    q = data.quarantine
    out["quarantine.total"] = int(q["n"].sum()) if not q.empty else 0
    return out


def sample_metrics(rng: np.random.Generator) -> dict:
    models = {}
    for m in MODELS:
        d = {k: float(rng.uniform(0.05, 0.95)) for k in METRIC_KEYS}
        d["lift_top10"] = float(rng.uniform(1.5, 4.0))
        d["n_users"] = 2000
        models[m] = d
    return {
        "run_date": RUN.isoformat(),
        "run_id": "abc123mlflowrun",
        "model_name": "churn-spark-cnn-rnn",
        "model_version": "3",
        "features_version": 5,
        "snapshots": {
            "train": ["2026-06-11", "2026-07-09", "2026-08-06"],
            "validation": ["2026-09-03"],
            "test": ["2026-10-03"],
            "score": [RUN.isoformat()],
        },
        "models": models,
        "validation": {
            m: {
                "brier_raw": float(rng.uniform(0.1, 0.3)),
                "brier_calibrated": float(rng.uniform(0.1, 0.2)),
                "threshold": float(rng.uniform(0.2, 0.6)),
            }
            for m in MODELS
        },
        "gate": {
            "metric": "pr_auc",
            "margin": 0.0,
            "candidate": models["deep"]["pr_auc"],
            "champion": 0.41,
            "champion_version": "2",
            "promoted": True,
            "reason": "beats champion <by a margin> & more",
        },
        "training": {
            "ranks": [
                {
                    "rank": 0,
                    "host": "node-a",
                    "samples_per_s": 1510.5,
                    "epochs_run": 8,
                    "resumed": False,
                    "weights_digest": "d1" * 32,
                },
                {
                    "rank": 1,
                    "host": "node-b",
                    "samples_per_s": 1488.25,
                    "epochs_run": 8,
                    "resumed": False,
                    "weights_digest": "d1" * 32,
                },
            ],
            "samples_per_s_total": 2998.75,
            "epochs": 8,
            "history": {"loss": list(np.linspace(0.7, 0.4, 8)), "val_loss": list(np.linspace(0.72, 0.45, 8))},
        },
    }


def make_data(seed: int = 3, n: int = 2000) -> ReportData:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    scores = {"user_id": [f"u{i:05d}" for i in range(n)], "label": y}
    for m, strength in zip(MODELS, (2.0, 1.2, 1.6)):
        logit = strength * (y - 0.5) + rng.normal(0, 1, n)
        raw = 1 / (1 + np.exp(-logit))
        scores[m] = raw
        scores[f"{m}_calibrated"] = np.clip(raw * 0.8, 0, 1)
    tier_rows = []
    for i, s in enumerate(SNAPSHOTS):
        for t, base in (("high", 300), ("medium", 700), ("low", 3000)):
            tier_rows.append((s, t, base + 17 * i + int(rng.integers(0, 50))))
    probs = rng.beta(2, 5, 4000)
    top = pd.DataFrame(
        {
            "risk_rank": range(1, 11),
            "user_id": [f"top-user-{i}" for i in range(1, 11)],
            "churn_probability": np.sort(rng.uniform(0.8, 0.99, 10))[::-1],
            "risk_tier": "high",
            "risk_percentile": np.linspace(1.0, 0.998, 10),
            "top_reasons": [[f"spend_trend_{i}", "days_since_last_order < 30 & rising"] for i in range(1, 11)],
        }
    )
    psi_df = pd.DataFrame(
        {
            "channel": ["orders", "spend", "views", "active_days"],
            "psi": [0.0123, 0.0871, 0.4567, 0.2],
            "n_expected": [9000] * 4,
            "n_actual": [3100] * 4,
            "n_bins": [10, 10, 8, 10],
        }
    )
    quarantine = pd.DataFrame(
        {
            "source": ["events", "orders", "orders"],
            "reason": ["unknown_event_type", "exact_duplicate", "negative_amount"],
            "n": [12, 5, 7],
        }
    )
    ingest = {
        "orders": {
            "rows_in": 10012,
            "used": 10000,
            "quarantined": 7,
            "deduplicated": 5,
            "by_reason": {"negative_amount": 7, "exact_duplicate": 5},
        },
        "events": {
            "rows_in": 50012,
            "used": 50000,
            "quarantined": 12,
            "deduplicated": 1,
            "by_reason": {"unknown_event_type": 12},
        },
    }  # deliberately unbalanced
    return ReportData(
        run_date=RUN,
        metrics=sample_metrics(rng),
        test_scores=pd.DataFrame(scores),
        tier_counts=pd.DataFrame(tier_rows, columns=["snapshot_date", "risk_tier", "n"]),
        histogram=histogram_counts(probs),
        top_users=top,
        scoring={
            "rows": 4000,
            "model_names": ["churn-spark-cnn-rnn"],
            "model_versions": ["3"],
            "run_ids": ["score-run-1"],
            "scored_at": dt.datetime(2026, 11, 2, 6, 0),
            "feature_table_version": 5,
        },
        tier_thresholds={"high": 0.5, "medium": 0.25},
        psi=psi_df,
        psi_threshold=0.2,
        quarantine=quarantine,
        ingest_summary=ingest,
        notes=["synthetic <data> for tests"],
    )


def with_new_keys(d: ReportData) -> ReportData:
    """The metrics.json keys added with the bootstrap gate, share tiers and cross-fitted calibration."""
    m = d.metrics
    champ = dict(m["models"]["deep"], roc_auc=0.6543, pr_auc=0.4321)
    m["scored_by"] = {"model_version": "2", "role": "champion", "test_metrics": champ}
    m["gate"].update(
        promoted=False,
        comparable=True,
        interval=[-0.0123, 0.0456],
        confidence=0.95,
        champion_metrics=champ,
        improvement=0.0167,
        reason="improvement +0.0167 on pr_auc, 95% interval [-0.0123, +0.0456] does not clear 0.0",
    )
    m["tiers"] = {
        "mode": "share",
        "test": {
            "low": {"users": 1400, "churn_rate": 0.1, "mean_probability": 0.1234},
            "high": {"users": 200, "churn_rate": 0.615, "mean_probability": 0.5678},
            "medium": {"users": 400, "churn_rate": 0.3, "mean_probability": 0.31},
        },
    }
    for v in m["validation"].values():
        v["brier_calibrated_cv"] = v.pop("brier_calibrated") + 0.5
    d.top_users = d.top_users.assign(raw_score=np.linspace(3.5, 2.5, len(d.top_users)))
    return d
