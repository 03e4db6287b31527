"""The report's figures: small matplotlib functions that each return one PNG (base64) with its caption.

Why a module of its own: plotting code is long, visual and rarely wrong in ways a test sees, so it stays out of
the data gathering and the HTML. Every function takes plain pandas/python values and draws on its own
:class:`~matplotlib.figure.Figure` with an Agg canvas: no pyplot state, no global backend switch, safe to call in a
driver that also runs Spark. Curves are thinned to a few thousand points so the page stays small.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

DPI = 80
MAX_CURVE_POINTS = 2000
COLORS = {
    "deep": "#1f77b4",
    "lr_rfm": "#ff7f0e",
    "gbt": "#2ca02c",
    "high": "#d62728",
    "medium": "#ff7f0e",
    "low": "#2ca02c",
}


@dataclass(frozen=True)
class Image:
    caption: str
    png_base64: str


def gains_table(y, score, points: int = 100) -> pd.DataFrame:
    """Cumulative gains and lift: share of churners caught in the top ``share_users`` of users by score."""
    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    n, pos = len(y), float(np.sum(y))
    if n == 0 or pos == 0:
        return pd.DataFrame(columns=["share_users", "share_positives", "lift"])
    cum = np.cumsum(y[np.argsort(-score, kind="stable")])
    share = np.arange(1, points + 1) / points
    k = np.maximum(np.ceil(share * n).astype(int), 1)
    caught = cum[k - 1] / pos
    return pd.DataFrame({"share_users": share, "share_positives": caught, "lift": caught / (k / n)})


def _figure(w: float = 4.6, h: float = 3.2, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)  # Agg canvas on this figure only
    return fig, fig.subplots(1, ncols)


def _png(fig, caption: str) -> Image:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return Image(caption, base64.b64encode(buf.getvalue()).decode("ascii"))


def _thin(*arrays: np.ndarray, n: int = MAX_CURVE_POINTS):
    size = len(arrays[0])
    if size <= n:
        return arrays
    idx = np.unique(np.linspace(0, size - 1, n).round().astype(int))
    return tuple(a[idx] for a in arrays)


def _finish(*axes, legend: bool = True, grid_axis: str = "both") -> None:
    for ax in axes:
        if legend:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis=grid_axis)


def ranking_curves(y: np.ndarray, scores: Dict[str, np.ndarray]) -> List[Image]:
    """ROC, precision-recall, cumulative gains and lift of each model's raw score (the ranking metrics' input)."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    fig_roc, ax_roc = _figure()
    fig_pr, ax_pr = _figure()
    fig_g, (ax_g, ax_l) = _figure(8.4, 3.2, ncols=2)
    for m, s in scores.items():
        color = COLORS.get(m)
        fpr, tpr, _ = roc_curve(y, s)
        ax_roc.plot(*_thin(fpr, tpr), color=color, lw=1.5, label=f"{m} (AUC {auc(fpr, tpr):.3f})")
        prec, rec, _ = precision_recall_curve(y, s)
        ax_pr.plot(*_thin(rec, prec), color=color, lw=1.5, label=m)
        g = gains_table(y, s)
        ax_g.plot(np.r_[0, g["share_users"]], np.r_[0, g["share_positives"]], color=color, lw=1.5, label=m)
        ax_l.plot(g["share_users"], g["lift"], color=color, lw=1.5, label=m)
    ax_roc.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test, raw score)")
    base = float(np.mean(y))
    ax_pr.axhline(base, ls=":", color="grey", lw=1, label=f"base rate {base:.3f}")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall (test, raw score)", ylim=(0, 1.02))
    ax_g.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax_g.set(xlabel="share of users contacted (by score)", ylabel="share of churners caught", title="Cumulative gains")
    ax_l.axhline(1, ls=":", color="grey", lw=1)
    ax_l.set(xlabel="share of users contacted (by score)", ylabel="lift", title="Lift")
    _finish(ax_roc, ax_pr, ax_g, ax_l)
    return [
        _png(fig_roc, "ROC curves on the test snapshot"),
        _png(fig_pr, "Precision-recall curves on the test snapshot"),
        _png(fig_g, "Cumulative gains and lift on the test snapshot"),
    ]


def _calibration(ax, curves, ylabel: str, title: str) -> None:
    """Mean predicted probability against the observed rate, one line per (label, predicted, observed), with the
    diagonal of perfect calibration."""
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfect")
    for (label, predicted, observed), style in zip(curves, ("o--", "s-", "^-", "v-")):
        ax.plot(predicted, observed, style, ms=4, lw=1.3, label=label)
    ax.set(xlabel="mean predicted probability", ylabel=ylabel, title=title, xlim=(0, 1), ylim=(0, 1))


def reliability(y: np.ndarray, probabilities: Dict[str, np.ndarray], n_bins: int = 10) -> Image:
    """Reliability diagram (sklearn ``calibration_curve``, equal-width bins, empty bins dropped), one line each."""
    from sklearn.calibration import calibration_curve

    fig, ax = _figure()
    curves = []
    for label, p in probabilities.items():
        observed, predicted = calibration_curve(y, np.clip(p, 0, 1), n_bins=n_bins, strategy="uniform")
        curves.append((label, predicted, observed))
    _calibration(ax, curves, "observed churn rate", f"Reliability (deep, {n_bins} bins)")
    _finish(ax)
    return _png(fig, "Calibration of the deep model: raw vs calibrated")


def realised(performance: pd.DataFrame, deciles: Sequence[dict], snapshot) -> Image:
    """Realised ROC-AUC per matured snapshot and model version (with the test ROC-AUC dashed), and the newest
    matured snapshot's calibration by score decile (mean predicted vs realised churn rate)."""
    fig, (a1, a2) = _figure(9.2, 3.2, ncols=2)
    allrows = performance[performance["group"] == "all"]
    for version, g in allrows.groupby("model_version"):
        g = g.sort_values("snapshot_date")
        line = a1.plot(g["snapshot_date"], g["roc_auc"].astype(float), "o-", ms=4, label=f"v{version} realised")
        a1.plot(
            g["snapshot_date"],
            g["test_roc_auc"].astype(float),
            "--",
            color=line[0].get_color(),
            lw=1,
            label=f"v{version} test",
        )
    a1.set(xlabel="snapshot", ylabel="ROC-AUC", title="Realised vs test ROC-AUC")
    a1.tick_params(axis="x", labelrotation=30)
    pred = [d["mean_predicted"] for d in deciles]
    real = [d["realised_rate"] for d in deciles]
    _calibration(a2, [("score deciles", pred, real)], "realised churn rate", f"Calibration, {snapshot}")
    _finish(a1, a2)
    return _png(fig, f"Did the warnings come true? Realised ROC-AUC over time; calibration of snapshot {snapshot}")


def training(history: Dict[str, Sequence[float]], ranks: Sequence[dict]) -> Image:
    """Loss per epoch and samples/s per Horovod rank."""
    fig, (ax_h, ax_r) = _figure(8.4, 3.0, ncols=2)
    for key, style in (("loss", "-o"), ("val_loss", "-s")):
        vals = history.get(key) or []
        if vals:
            ax_h.plot(range(1, len(vals) + 1), vals, style, ms=3, lw=1.3, label=key)
    ax_h.set(xlabel="epoch", ylabel="loss", title="Training loss")
    _finish(ax_h, legend=bool(history))
    if ranks:
        ax_r.bar(
            [str(r.get("rank")) for r in ranks],
            [float(r.get("samples_per_s") or 0) for r in ranks],
            color=COLORS["deep"],
        )
    ax_r.set(xlabel="Horovod rank", ylabel="samples/s", title="Throughput per rank")
    _finish(ax_r, legend=False, grid_axis="y")
    return _png(fig, "Training loss per epoch and samples/s per rank")


def tiers(snapshot, tier_users: Dict[str, int], wide: pd.DataFrame) -> Image:
    """Users per tier of the score snapshot, and the high-risk share over the scored snapshots."""
    fig, (ax_t, ax_s) = _figure(8.4, 3.0, ncols=2)
    names = list(tier_users)
    ax_t.bar(names, [tier_users[t] for t in names], color=[COLORS.get(t, "grey") for t in names])
    ax_t.set(title=f"Risk tiers, snapshot {snapshot}", ylabel="users")
    _finish(ax_t, legend=False, grid_axis="y")
    ax_s.plot(pd.to_datetime(wide["snapshot_date"]), wide["high_share"] * 100, "-o", ms=3, color=COLORS["high"])
    ax_s.set(title="High-risk share per snapshot", ylabel="% of scored users")
    ax_s.tick_params(axis="x", labelrotation=30, labelsize=8)
    _finish(ax_s, legend=False)
    return _png(fig, "Risk tiers of the score snapshot and high-risk share over snapshots")


def histogram(snapshot, bins: pd.DataFrame, n_bins: int, cutoffs: Optional[Dict[str, float]] = None) -> Image:
    """Histogram of churn probabilities from precomputed bin counts; dashed lines at probability cut-offs."""
    fig, ax = _figure(5.6, 3.0)
    ax.bar(
        bins["bin"].to_numpy(dtype=float) / n_bins,
        bins["n"].to_numpy(dtype=float),
        width=1 / n_bins,
        align="edge",
        color=COLORS["deep"],
        edgecolor="white",
    )
    for name, thr in sorted((cutoffs or {}).items(), key=lambda kv: kv[1]):
        ax.axvline(thr, ls="--", lw=1, color=COLORS.get(name, "grey"), label=f"{name} ≥ {thr:g}")
    ax.set(xlim=(0, 1), xlabel="churn probability", ylabel="users", title=f"Score distribution, snapshot {snapshot}")
    _finish(ax, legend=bool(cutoffs), grid_axis="y")
    return _png(fig, f"Distribution of churn probabilities ({n_bins} bins)")


def psi_bars(psi: pd.DataFrame, threshold: float) -> Image:
    """PSI per channel, bars above the threshold in red."""
    fig, ax = _figure(5.6, 0.6 + 0.28 * len(psi))
    vals = psi["psi"].astype(float).fillna(0).to_numpy()
    ax.barh(
        list(psi["channel"].astype(str)),
        vals,
        color=[COLORS["high"] if v > threshold else COLORS["deep"] for v in vals],
    )
    ax.axvline(threshold, ls="--", color="grey", lw=1)
    ax.invert_yaxis()
    ax.set(xlabel="PSI (score vs training snapshots)", title="Input drift per channel")
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig, "PSI per channel; dashed line = threshold")
