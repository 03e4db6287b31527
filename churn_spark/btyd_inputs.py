"""Buy-till-you-die inputs of the network: BG/NBD P(alive) and expected purchases in the horizon, per feature row.

Why: on sparse purchase histories the bucket sequence is mostly zeros, while a BG/NBD model turns the three numbers
it needs (repeat purchase days, recency, age) into the two quantities a retention team actually reasons with. They
are *model inputs*, not feature-table columns: the parameters are fitted at training time on the train split only
(rows of the train snapshots, whose histories all end before validation's snapshot), stored in the bundle's
``stats.json`` and applied to every row in the ranks, in evaluation and in the scoring UDF from the row's rhythm
columns — so training and scoring compute them the same way and a validation or test label never reaches the fit.

From a feature row (times in days): ``x = purchase_days - 1``, ``T = days_since_first_purchase``,
``t_x = T - days_since_last_order``. Every eligible row has a purchase before its snapshot, so ``T >= 1``.
When the fit fails (too few repeat buyers: the model is not identified) the inputs are the fixed values
P(alive) = 1 and expected purchases = 0 for every row — constant inputs the network cannot learn anything from —
and the run records why.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from .btyd import BGNBDParams, BTYDFitError, expected_purchases, fit_bgnbd, prob_alive
from .logs import LOG

BTYD_INPUTS = ["btyd_p_alive", "btyd_expected_purchases"]
PENALIZER = 1e-4  # a light pull towards 1 keeps a near-degenerate population from running off to the bounds


def rfm_columns(purchase_days, days_since_first, days_since_last) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BG/NBD ``(x, t_x, T)`` from the feature table's rhythm columns (missing values count as 0)."""
    n = np.nan_to_num(np.asarray(purchase_days, dtype=np.float64))
    T = np.nan_to_num(np.asarray(days_since_first, dtype=np.float64))
    since_last = np.nan_to_num(np.asarray(days_since_last, dtype=np.float64))
    x = np.maximum(n - 1.0, 0.0)
    T = np.maximum(T, 1.0)
    t_x = np.clip(T - since_last, 0.0, T)
    return x, t_x, T


def btyd_values(params: Optional[dict], horizon_days: int, x, t_x, T) -> np.ndarray:
    """(n, 2) array of [P(alive), expected purchases in the next ``horizon_days``]; fixed values without params."""
    x = np.asarray(x, dtype=np.float64)
    if not params:
        return np.column_stack([np.ones_like(x), np.zeros_like(x)])
    p = BGNBDParams(**params)
    return np.column_stack([prob_alive(p, x, t_x, T), expected_purchases(p, horizon_days, x, t_x, T)])


def fit_on_train(train_df, horizon_days: int) -> Tuple[Dict[str, Tuple[float, float]], Dict]:
    """Fit BG/NBD on the train split; returns ({input: (log1p mean, log1p std)}, fit info with ``params`` or
    ``skipped``).

    Only the distinct ``(x, t_x, T)`` rows and their counts come to the driver (a few thousand numbers even for
    millions of customers), so the fit and the inputs' standardisation statistics are exact and cheap."""
    from pyspark.sql import functions as F

    rows = (
        train_df.groupBy("purchase_days", "days_since_first_purchase", "days_since_last_order")
        .agg(F.count("*").alias("n"))
        .toPandas()
    )
    x, t_x, T = rfm_columns(rows["purchase_days"], rows["days_since_first_purchase"], rows["days_since_last_order"])
    w = rows["n"].to_numpy(dtype=np.float64)
    info: Dict = {"rows": int(w.sum()), "distinct": int(len(w)), "repeat_share": float(w[x > 0].sum() / w.sum())}
    try:
        fitted = fit_bgnbd(x, t_x, T, weights=w, penalizer=PENALIZER)
        params: Optional[dict] = {k: float(v) for k, v in fitted.__dict__.items()}
        info["params"] = params
    except (BTYDFitError, ValueError) as e:
        params = None
        info["skipped"] = str(e)
        LOG.warning("BG/NBD inputs fixed (P(alive)=1, expected=0): %s", e)
    values = np.log1p(np.maximum(btyd_values(params, horizon_days, x, t_x, T), 0.0))
    mean = values.T @ w / w.sum()
    std = np.sqrt(((values - mean) ** 2).T @ w / w.sum())
    return {name: (float(mean[i]), float(std[i])) for i, name in enumerate(BTYD_INPUTS)}, info
