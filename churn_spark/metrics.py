"""Classification metrics for churn scores, the same for the deep model and every baseline.

Ranking metrics (ROC-AUC, PR-AUC, top-k precision/recall, lift) say whether the right users are on top of the list;
log loss and Brier say whether the probabilities mean what they say; precision/recall/F1 use a threshold that was
chosen on the validation snapshot, never on the test snapshot.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
from sklearn import metrics as skm


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold that maximises F1 (chosen on validation)."""
    prec, rec, thr = skm.precision_recall_curve(y, p)
    f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
    return float(thr[int(np.argmax(f1))]) if len(thr) else 0.5


def top_share(y: np.ndarray, p: np.ndarray, share: float) -> tuple[float, float]:
    """Precision and recall among the ``share`` highest-scored users."""
    n = max(1, int(round(len(p) * share)))
    top = np.argsort(-p, kind="stable")[:n]
    hits = float(y[top].sum())
    return hits / n, hits / max(float(y.sum()), 1.0)


def classification_report(y, p, threshold: float) -> Dict[str, float]:
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    pred = (p >= threshold).astype(int)
    base = float(y.mean()) if len(y) else float("nan")
    p10, r10 = top_share(y, p, 0.10)
    p20, r20 = top_share(y, p, 0.20)
    two_classes = len(np.unique(y)) == 2
    return {
        "roc_auc": float(skm.roc_auc_score(y, p)) if two_classes else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, p)) if two_classes else float("nan"),
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, p)),
        "threshold": float(threshold),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "precision_top10": p10, "recall_top10": r10,
        "precision_top20": p20, "recall_top20": r20,
        "lift_top10": p10 / base if base > 0 else float("nan"),
        "base_rate": base,
        "n_users": int(len(y)),
    }


# metrics where lower is better (the champion gate flips its comparison for these)
LOWER_IS_BETTER = {"log_loss", "brier"}
