"""Probability calibration fitted on the validation snapshot, stored as plain JSON (no pickles to trust).

Isotonic keeps the ranking and fixes the scale non-parametrically; Platt fits ``sigmoid(a * logit(p) + b)`` and is
the safer choice with little validation data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import List, Optional

import numpy as np

from .metrics import PROB_EPS

PLATT_C = 1e6  # inverse L2 strength: Platt scaling is a plain two-parameter fit, so effectively unregularised


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, PROB_EPS, 1 - PROB_EPS)
    return np.log(p / (1 - p))


@dataclass
class Calibrator:
    method: str = "identity"
    x: List[float] = field(default_factory=list)  # isotonic knots
    y: List[float] = field(default_factory=list)
    a: float = 1.0  # platt
    b: float = 0.0
    # a chosen blend (churn_spark.blend.Blend as a dict) turns the network output and the feature row into the
    # shipped score first; the blend is calibrated itself, so ``method`` is then "identity"
    blend: Optional[dict] = None

    @cached_property
    def _blend(self):
        """The blend built once per loaded bundle, not once per Arrow batch."""
        from .blend import Blend

        return Blend.from_dict(self.blend) if self.blend else None

    def shipped_score(self, p_network: np.ndarray, pdf) -> np.ndarray:
        """The shipped model's (uncalibrated) score of feature rows ``pdf``: the network output, or the blend."""
        return p_network if self._blend is None else self._blend(p_network, pdf)

    @classmethod
    def fit(cls, method: str, p: np.ndarray, y: np.ndarray) -> "Calibrator":
        p, y = np.asarray(p, float), np.asarray(y, float)
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
            return cls("isotonic", x=[float(v) for v in iso.X_thresholds_], y=[float(v) for v in iso.y_thresholds_])
        if method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=PLATT_C).fit(_logit(p).reshape(-1, 1), y)
            return cls("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
        raise ValueError(f"unknown calibration method {method!r} (isotonic | platt)")

    def __call__(self, p) -> np.ndarray:
        p = np.asarray(p, float)
        if self.method == "isotonic":
            return np.interp(p, self.x, self.y)
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(-(self.a * _logit(p) + self.b)))
        return p

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibrator":
        return cls(**d)


def cross_fitted(method: str, p, y, folds: int, seed: int = 0) -> np.ndarray:
    """Calibrated probabilities for every validation row from a calibrator fitted on the *other* folds.

    A calibrator scored on the rows it was fitted on cannot look worse than no calibration; cross-fitting measures
    what calibration does for rows it has not seen (the final calibrator is still fitted on all of validation).
    """
    from sklearn.model_selection import StratifiedKFold

    p, y = np.asarray(p, float), np.asarray(y, float)
    out = np.empty_like(p)
    k = int(min(folds, np.bincount(y.astype(int), minlength=2).min()))
    if k < 2:
        raise ValueError("cross-fitted calibration needs at least 2 positives and 2 negatives")
    for fit_idx, held in StratifiedKFold(k, shuffle=True, random_state=seed).split(p, y):
        out[held] = Calibrator.fit(method, p[fit_idx], y[fit_idx])(p[held])
    return out
