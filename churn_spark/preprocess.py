"""Model inputs from feature rows: log1p + standardise with statistics of the *training split only*.

The statistics are computed in Spark (no data on the driver, only C + S numbers and two small vocabularies) and
saved with the model, so training ranks, evaluation and scoring all turn the same rows into the same tensors.

Inputs the model never saw stay bounded: a channel that was constant in training gets std 1 (not a tiny floor that
would turn one new event into 10^5 standard deviations), every standardised input is clipped to ``+-clip``, and the
``other`` one-hot column of each categorical is trained on a small random share of training rows
(``training.other_category_share``), so a category first seen at scoring time lands on a learned weight.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from .feature_spec import CATEGORICAL_STATIC, FEATURE_STATIC, NUMERIC_STATIC

MAX_VOCAB = 30
MIN_STD = 1e-6  # below this a column is constant in training: it is centred but not scaled (std 1)


def _safe_std(v) -> float:
    v = float(v or 0.0)
    return v if v > MIN_STD else 1.0


@dataclass
class FeatureStats:
    channels: List[str]
    n_buckets: int
    seq_mean: List[float]
    seq_std: List[float]
    static_mean: List[float]
    static_std: List[float]
    vocab: Dict[str, List[str]]
    bucket_days: int = 7
    recent_days: int = 28  # sequence.recent_days the model was trained with (reasons use the same window)
    clip: float = 10.0  # standardised inputs are clipped to +-clip: a channel constant in training cannot explode
    # numeric static inputs, in order: feature-table columns, then the BG/NBD inputs derived from them (bundles
    # written before the rhythm features have none of these fields and keep their six RFM statics)
    numeric_inputs: List[str] = field(default_factory=lambda: list(NUMERIC_STATIC))
    btyd_fit: Optional[Dict] = None  # the BG/NBD fit: rows, repeat share, params (or why it was skipped)
    horizon_days: int = 0  # the horizon of the BG/NBD expected purchases
    long_buckets: int = 0  # the coarse long_sequence input (0: the model has none)
    long_bucket_days: int = 0
    long_mean: List[float] = field(default_factory=list)
    long_std: List[float] = field(default_factory=list)

    @property
    def n_static(self) -> int:
        return len(self.numeric_inputs) + sum(len(v) + 1 for v in self.vocab.values())

    @property
    def static_names(self) -> List[str]:
        names = list(self.numeric_inputs)
        for col in CATEGORICAL_STATIC:
            names += [f"{col}={v}" for v in self.vocab[col]] + [f"{col}=other"]
        return names

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FeatureStats":
        return cls(**json.loads(text))

    # -- tensors ---------------------------------------------------------------------------------------
    def sequence_tensor(self, sequences, long: bool = False) -> np.ndarray:
        """Raw flattened sequences (n, T*C) -> standardised log1p tensor (n, T, C) float32 (``long``: the coarse
        long_sequence, (n, L, C), with its own statistics)."""
        steps = self.long_buckets if long else self.n_buckets
        mean, std = (self.long_mean, self.long_std) if long else (self.seq_mean, self.seq_std)
        width = steps * len(self.channels)
        raw = (
            np.concatenate([np.asarray(s, dtype=np.float64) for s in sequences]).reshape(len(sequences), width)
            if len(sequences)
            else np.zeros((0, width))
        )
        x = np.log1p(np.maximum(raw, 0.0)).reshape(-1, steps, len(self.channels))
        z = (x - np.asarray(mean)) / np.asarray(std)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def static_tensor(self, pdf: pd.DataFrame, as_other: Optional[np.ndarray] = None) -> np.ndarray:
        """Standardised numeric statics + one-hot categoricals; rows flagged in ``as_other`` (training only) get
        the ``other`` column of every categorical, so that column learns a weight."""
        num = np.log1p(np.maximum(self.numeric_values(pdf), 0.0))
        z = (num - np.asarray(self.static_mean)) / np.asarray(self.static_std)
        parts = [np.clip(z, -self.clip, self.clip)]
        for col in CATEGORICAL_STATIC:
            vocab = self.vocab[col]
            idx = pdf[col].map({v: i for i, v in enumerate(vocab)}).fillna(len(vocab)).to_numpy(dtype=int)
            if as_other is not None:
                idx = np.where(as_other, len(vocab), idx)
            parts.append(np.eye(len(vocab) + 1)[idx])
        return np.concatenate(parts, axis=1).astype(np.float32)

    def numeric_values(self, pdf: pd.DataFrame) -> np.ndarray:
        """Raw numeric static inputs (n, len(numeric_inputs)): table columns, then the derived BG/NBD inputs."""
        from .btyd_inputs import BTYD_INPUTS, btyd_values, rfm_columns

        columns = [c for c in self.numeric_inputs if c not in BTYD_INPUTS]
        parts = [pdf[columns].to_numpy(dtype=np.float64, na_value=0.0)]
        if any(c in BTYD_INPUTS for c in self.numeric_inputs):
            rfm = rfm_columns(pdf["purchase_days"], pdf["days_since_first_purchase"], pdf["days_since_last_order"])
            parts.append(btyd_values((self.btyd_fit or {}).get("params"), self.horizon_days, *rfm))
        return np.concatenate(parts, axis=1)

    def inputs(self, pdf: pd.DataFrame, as_other: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        out = {"sequence": self.sequence_tensor(list(pdf["sequence"])), "static": self.static_tensor(pdf, as_other)}
        if self.long_buckets:
            out["long_sequence"] = self.sequence_tensor(list(pdf["long_sequence"]), long=True)
        return out

    def contract(self) -> Dict:
        """The feature contract this model was trained on (compared with the feature table's before scoring)."""
        from .feature_spec import feature_contract

        return feature_contract(
            self.channels, self.n_buckets, self.bucket_days, self.long_buckets, self.long_bucket_days
        )


def compute_stats(
    train_df,
    channels: List[str],
    n_buckets: int,
    bucket_days: int,
    recent_days: int = 28,
    clip: float = 10.0,
    horizon_days: Optional[int] = None,
    long_buckets: int = 0,
    long_bucket_days: int = 0,
) -> FeatureStats:
    """Per-channel mean/std of log1p over all time steps, static mean/std and vocabularies — in Spark.

    With ``horizon_days`` the BG/NBD model is fitted on these (training) rows and its two inputs are added
    (:mod:`churn_spark.btyd_inputs`); the fit's summary is kept in ``btyd_fit``."""
    from pyspark.sql import functions as F

    seq_mean, seq_std = _channel_moments(train_df, "sequence", len(channels))
    long_mean, long_std = _channel_moments(train_df, "long_sequence", len(channels)) if long_buckets else ([], [])
    aggs = []
    for c in FEATURE_STATIC:
        v = F.log1p(F.greatest(F.coalesce(F.col(c), F.lit(0.0)), F.lit(0.0)))
        aggs += [F.mean(v).alias(f"m_{c}"), F.stddev_pop(v).alias(f"s_{c}")]
    st = train_df.agg(*aggs).first()
    vocab = {}
    for col in CATEGORICAL_STATIC:
        top = train_df.groupBy(col).count().orderBy(F.desc("count"), col).limit(MAX_VOCAB).collect()
        vocab[col] = sorted(str(r[col]) for r in top)
    static_mean = [float(st[f"m_{c}"] or 0.0) for c in FEATURE_STATIC]
    static_std = [_safe_std(st[f"s_{c}"]) for c in FEATURE_STATIC]
    numeric, info = list(FEATURE_STATIC), None
    if horizon_days:
        from .btyd_inputs import fit_on_train

        moments, info = fit_on_train(train_df, horizon_days)
        numeric += list(moments)
        static_mean += [m for m, _ in moments.values()]
        static_std += [_safe_std(s) for _, s in moments.values()]
    return FeatureStats(
        channels=channels,
        n_buckets=n_buckets,
        seq_mean=seq_mean,
        seq_std=seq_std,
        static_mean=static_mean,
        static_std=static_std,
        numeric_inputs=numeric,
        btyd_fit=info,
        horizon_days=int(horizon_days or 0),
        long_buckets=long_buckets,
        long_bucket_days=long_bucket_days if long_buckets else 0,
        long_mean=long_mean,
        long_std=long_std,
        vocab=vocab,
        bucket_days=bucket_days,
        recent_days=recent_days,
        clip=clip,
    )


def _channel_moments(train_df, column: str, n_channels: int) -> tuple[List[float], List[float]]:
    """Per-channel mean and std of log1p over every time step of a flat sequence column (Spark aggregation)."""
    from pyspark.sql import functions as F

    ex = train_df.select(F.posexplode(column).alias("pos", "v")).select(
        (F.col("pos") % n_channels).alias("c"), F.log1p(F.greatest(F.col("v"), F.lit(0.0))).alias("v")
    )
    rows = {r["c"]: r for r in ex.groupBy("c").agg(F.mean("v").alias("m"), F.stddev_pop("v").alias("s")).collect()}
    mean = [float(rows[c]["m"]) if c in rows else 0.0 for c in range(n_channels)]
    std = [_safe_std(rows[c]["s"]) if c in rows else 1.0 for c in range(n_channels)]
    return mean, std
