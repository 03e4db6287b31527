"""Risk tiers: by share of the snapshot (the default) or by calibrated-probability cut-offs.

Absolute cut-offs only work at one base rate: where 80 % of customers lapse within the horizon, almost everybody
is above 0.5 and the ``high`` tier is useless for a campaign. Share tiers take the top ``high`` share of users by
raw score, then the next ``medium`` share, and so on, whatever the base rate. Users with equal scores always share
a tier (a tier never depends on row order): a user's position is the share of users scored strictly higher.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

LOWEST = "low"


def share_bounds(shares: Dict[str, float]) -> List[Tuple[str, float]]:
    """[(tier, cumulative upper bound)] from the top, e.g. {high: .1, medium: .2} -> [(high, .1), (medium, .3)]."""
    out, total = [], 0.0
    for name, share in shares.items():  # the config's order is the order from the top
        total = round(total + share, 12)  # 0.1 + 0.2 must be 0.3, not 0.30000000000000004
        out.append((name, total))
    if total > 1.0 + 1e-9:
        raise ValueError(f"tier shares add up to {total:.3f} > 1: {shares}")
    return out


def share_above(scores: np.ndarray) -> np.ndarray:
    """For each user, the share of users with a strictly higher score (0 for the top user; ties equal)."""
    s = np.asarray(scores, float)
    if len(s) == 0:
        return s
    sorted_desc = np.sort(s)[::-1]
    higher = np.searchsorted(-sorted_desc, -s, side="left")  # number of scores strictly greater than each s
    return higher / len(s)


def assign_tiers(
    mode: str, raw_score: np.ndarray, probability: np.ndarray, shares: Dict[str, float], cutoffs: Dict[str, float]
) -> np.ndarray:
    """Tier names for one snapshot's users (numpy; the Spark version is :func:`tier_expr`)."""
    n = len(raw_score)
    out = np.full(n, LOWEST, dtype=object)
    if mode == "share":
        q = share_above(raw_score)
        for name, bound in reversed(share_bounds(shares)):
            out[q < bound] = name
    else:
        p = np.asarray(probability, float)
        for name, threshold in sorted(cutoffs.items(), key=lambda kv: kv[1]):
            out[p >= threshold] = name
    return out


def tier_expr(mode: str, shares: Dict[str, float], cutoffs: Dict[str, float], share_above_col, probability_col):
    """The same rule as a Spark column (``share_above_col`` = (rank - 1) / users of the snapshot)."""
    from pyspark.sql import functions as F

    expr = F.lit(LOWEST)
    if mode == "share":
        for name, bound in reversed(share_bounds(shares)):
            expr = F.when(share_above_col < bound, F.lit(name)).otherwise(expr)
    else:
        for name, threshold in sorted(cutoffs.items(), key=lambda kv: kv[1]):
            expr = F.when(probability_col >= threshold, F.lit(name)).otherwise(expr)
    return expr


def realised_by_tier(tiers: np.ndarray, labels: np.ndarray, probability: np.ndarray) -> Dict[str, dict]:
    """Per tier on a labelled snapshot: users, realised churn rate and mean predicted probability."""
    out = {}
    for name in sorted(set(tiers.tolist())):
        m = tiers == name
        out[name] = {
            "users": int(m.sum()),
            "churn_rate": float(np.mean(labels[m])),
            "mean_probability": float(np.mean(probability[m])),
        }
    return out
