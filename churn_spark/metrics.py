"""Classification metrics for churn scores, the same for the deep model and every baseline.

Ranking metrics (ROC-AUC, PR-AUC, top-k precision/recall, lift) say whether the right users are on top of the list,
so they are computed on the model's *raw* score: isotonic calibration makes plateaus of equal probabilities, and a
ranking metric on those would depend on how ties happen to be ordered. Log loss and Brier say whether the
probabilities mean what they say, so they use the *calibrated* probability. Precision/recall/F1 use a threshold on
the calibrated probability that was chosen on the validation snapshot, never on the test snapshot. No number here
depends on the order of the rows (ties at a top-k cut-off count their expected share).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from sklearn import metrics as skm

# one clip for every probability that goes into a logarithm (log loss, logits of the calibrator and of the reasons)
PROB_EPS = 1e-7

# metrics where lower is better (the champion gate flips its comparison for these)
LOWER_IS_BETTER = {"log_loss", "brier"}
# metrics of the ranking (computed on the raw score) vs of the probability (computed on the calibrated one)
RANKING_METRICS = {"roc_auc", "pr_auc"}


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold that maximises F1 (chosen on validation)."""
    prec, rec, thr = skm.precision_recall_curve(y, p)
    f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
    return float(thr[int(np.argmax(f1))]) if len(thr) else 0.5


def top_share(y: np.ndarray, s: np.ndarray, share: float) -> tuple[float, float]:
    """Precision and recall among the ``share`` highest-scored users, independent of row order.

    Users tied with the last one inside the cut-off count with their expected share: if 3 users tie for the last
    2 places, each contributes 2/3 of its label. Any row order of the same data gives the same numbers.
    """
    y, s = np.asarray(y, float), np.asarray(s, float)
    if len(s) == 0:
        return float("nan"), float("nan")
    n = max(1, int(round(len(s) * share)))
    cut = np.sort(s)[::-1][n - 1]
    above = s > cut
    tied = s == cut
    hits = float(y[above].sum()) + (n - int(above.sum())) * float(y[tied].mean())
    return hits / n, hits / max(float(y.sum()), 1.0)


def classification_report(y, p, threshold: float, score: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Test metrics of calibrated probabilities ``p``; ranking metrics on ``score`` (the raw score; default ``p``)."""
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), PROB_EPS, 1 - PROB_EPS)
    s = p if score is None else np.asarray(score, dtype=float)
    pred = (p >= threshold).astype(int)
    base = float(y.mean()) if len(y) else float("nan")
    p10, r10 = top_share(y, s, 0.10)
    p20, r20 = top_share(y, s, 0.20)
    two_classes = len(np.unique(y)) == 2
    return {
        "roc_auc": float(skm.roc_auc_score(y, s)) if two_classes else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, s)) if two_classes else float("nan"),
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, p)),
        "threshold": float(threshold),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "precision_top10": p10,
        "recall_top10": r10,
        "precision_top20": p20,
        "recall_top20": r20,
        "lift_top10": p10 / base if base > 0 else float("nan"),
        "base_rate": base,
        "n_users": int(len(y)),
    }


def metric_value(name: str, y: np.ndarray, p: np.ndarray, score: np.ndarray) -> float:
    """One gate metric on one sample: ranking metrics on the raw score, probability metrics on ``p``."""
    if name == "roc_auc":
        return float(skm.roc_auc_score(y, score))
    if name == "pr_auc":
        return float(skm.average_precision_score(y, score))
    p = np.clip(p, PROB_EPS, 1 - PROB_EPS)
    if name == "log_loss":
        return float(skm.log_loss(y, p, labels=[0, 1]))
    if name == "brier":
        return float(skm.brier_score_loss(y, p))
    raise ValueError(f"unknown metric {name!r}")


def paired_bootstrap(
    name: str, y, cand_p, cand_s, champ_p, champ_s, n_boot: int, confidence: float, seed: int = 0
) -> tuple[float, float, float]:
    """Improvement of the candidate over the champion on the same rows, oriented so positive = candidate better.

    Returns (observed improvement, lower, upper) of a percentile interval from ``n_boot`` paired resamples (both
    models are measured on the same resampled rows, so row-level noise common to both cancels).
    """
    y = np.asarray(y, float)
    arrays = [np.asarray(a, float) for a in (cand_p, cand_s, champ_p, champ_s)]
    sign = -1.0 if name in LOWER_IS_BETTER else 1.0

    def diff(idx):
        cp, cs, hp, hs = (a[idx] for a in arrays)
        return sign * (metric_value(name, y[idx], cp, cs) - metric_value(name, y[idx], hp, hs))

    observed = diff(np.arange(len(y)))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if name in RANKING_METRICS and len(np.unique(y[idx])) < 2:
            continue
        diffs.append(diff(idx))
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha]) if diffs else (float("nan"), float("nan"))
    return float(observed), float(lo), float(hi)
