"""A calibrated blend of the CNN+RNN with the ``lr_rfm`` baseline, fitted on validation, shipped only if it wins there.

Why: on sparse purchase histories a linear model on recency/frequency/monetary is hard to beat, and the network and
the linear model make different mistakes. A two-input logistic regression on ``logit(p_network)`` and
``logit(p_lr_rfm)`` (stacking) fitted on the validation snapshot is calibrated by construction and can only use the
baseline where it adds something. It is chosen over the calibrated network alone only when its *cross-fitted*
validation log loss is lower (every validation row scored by a blend fitted on the other folds, like the
calibration quality in :mod:`churn_spark.evaluation`), so a blend that merely fits validation noise is not shipped;
test rows never take part in the choice. The network stays the core of every shipped model.

To ship it, the fitted ``lr_rfm`` pipeline (scaler + logistic regression) is exported as plain numbers
(:class:`LinearRFM`) and applied in numpy inside the scoring UDF to the same aggregates Spark computed
(:func:`churn_spark.feature_spec.aggregate_spec` defines them once for both).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from .calibration import PLATT_C, _logit, cross_fitted
from .feature_spec import aggregate_spec
from .metrics import metric_value
from .preprocess import raw_matrix


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    return metric_value("log_loss", np.asarray(y, float), np.asarray(p, float), np.asarray(p, float))


@dataclass
class LinearRFM:
    """The fitted ``lr_rfm`` pipeline as numbers: standardise the aggregates, then a logistic regression."""

    channels: List[str]
    n_buckets: int
    recent_buckets: int
    mean: List[float]
    std: List[float]
    coef: List[float]
    intercept: float

    @classmethod
    def from_pipeline(cls, model, channels: List[str], n_buckets: int, recent_buckets: int) -> "LinearRFM":
        """From the Spark PipelineModel of :func:`churn_spark.baselines.fit_baselines` (assembler, scaler, LR)."""
        scaler, lr = model.stages[1], model.stages[2]
        return cls(
            channels=list(channels),
            n_buckets=int(n_buckets),
            recent_buckets=int(recent_buckets),
            mean=[float(v) for v in scaler.mean.toArray()],
            std=[float(v) for v in scaler.std.toArray()],
            coef=[float(v) for v in lr.coefficients.toArray()],
            intercept=float(lr.intercept),
        )

    def aggregates(self, pdf: pd.DataFrame) -> np.ndarray:
        spec = aggregate_spec(self.channels, self.n_buckets, self.recent_buckets)
        seq = None
        cols = []
        for _, source, positions in spec:
            if positions:
                if seq is None:
                    seq = raw_matrix(pdf["sequence"], self.n_buckets * len(self.channels))
                cols.append(np.log1p(seq[:, positions].sum(axis=1, dtype=np.float64)))
            else:
                cols.append(np.log1p(np.maximum(pdf[source].to_numpy(dtype=np.float64, na_value=0.0), 0.0)))
        return np.column_stack(cols)

    def probability(self, pdf: pd.DataFrame) -> np.ndarray:
        if len(pdf) == 0:
            return np.zeros(0)
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        z = np.where(std > 0, (self.aggregates(pdf) - mean) / np.where(std > 0, std, 1.0), 0.0)  # Spark: 0 if std 0
        return _sigmoid(z @ np.asarray(self.coef) + self.intercept)


def _stack(p_network, p_lr) -> np.ndarray:
    return np.column_stack([_logit(np.asarray(p_network, float)), _logit(np.asarray(p_lr, float))])


def _fit_stack(x: np.ndarray, y: np.ndarray) -> Tuple[float, List[float]]:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=PLATT_C).fit(x, y)
    return float(lr.intercept_[0]), [float(v) for v in lr.coef_[0]]


@dataclass
class Blend:
    """``sigmoid(intercept + w_network * logit(p_network) + w_lr * logit(p_lr_rfm))``."""

    intercept: float
    weights: List[float]
    lr_rfm: LinearRFM

    def combine(self, p_network, p_lr) -> np.ndarray:
        return _sigmoid(self.intercept + _stack(p_network, p_lr) @ np.asarray(self.weights))

    def __call__(self, p_network: np.ndarray, pdf: pd.DataFrame) -> np.ndarray:
        """The shipped probability of feature rows ``pdf`` whose raw network output is ``p_network``."""
        return self.combine(p_network, self.lr_rfm.probability(pdf)) if len(pdf) else np.zeros(0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Blend":
        return cls(intercept=d["intercept"], weights=list(d["weights"]), lr_rfm=LinearRFM(**d["lr_rfm"]))


def choose_blend(
    p_network: np.ndarray, p_lr: np.ndarray, y: np.ndarray, *, calibration: str, folds: int, seed: int
) -> Tuple[bool, Dict[str, float], Tuple[float, List[float]]]:
    """Decide on validation whether the blend beats the calibrated network: (chosen, evidence, fitted stack).

    Both candidates are cross-fitted on the same stratified folds; the blend is chosen only when its cross-fitted
    log loss is strictly lower and the network's weight in it is positive. The returned stack (intercept, weights)
    is fitted on all validation rows."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y, float)
    x = _stack(p_network, p_lr)
    network_cv = cross_fitted(calibration, p_network, y, folds, seed)
    k = int(min(folds, np.bincount(y.astype(int), minlength=2).min()))
    blend_cv = np.empty_like(y)
    for fit_idx, held in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        b, w = _fit_stack(x[fit_idx], y[fit_idx])
        blend_cv[held] = _sigmoid(b + x[held] @ np.asarray(w))
    evidence = {"network_log_loss_cv": log_loss(y, network_cv), "blend_log_loss_cv": log_loss(y, blend_cv)}
    intercept, weights = _fit_stack(x, y)
    # the network must pull the same way in the blend: its reason codes (attributions of the network) then still
    # name facts that raised the shipped score, and the network stays the core of the shipped model
    chosen = evidence["blend_log_loss_cv"] < evidence["network_log_loss_cv"] and weights[0] > 0
    return bool(chosen), evidence, (intercept, weights)
