"""Model inputs from feature rows: log1p + standardise with statistics of the *training split only*.

The statistics are computed in Spark (no data on the driver, only C + S numbers and two small vocabularies) and
saved with the model, so training ranks, evaluation and scoring all turn the same rows into the same tensors.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Dict, List

import numpy as np
import pandas as pd

from .feature_spec import CATEGORICAL_STATIC, NUMERIC_STATIC

MAX_VOCAB = 30


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

    @property
    def n_static(self) -> int:
        return len(NUMERIC_STATIC) + sum(len(v) + 1 for v in self.vocab.values())

    @property
    def static_names(self) -> List[str]:
        names = list(NUMERIC_STATIC)
        for col in CATEGORICAL_STATIC:
            names += [f"{col}={v}" for v in self.vocab[col]] + [f"{col}=other"]
        return names

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FeatureStats":
        return cls(**json.loads(text))

    # -- tensors ---------------------------------------------------------------------------------------
    def sequence_tensor(self, sequences) -> np.ndarray:
        """Raw flattened sequences (n, T*C) -> standardised log1p tensor (n, T, C) float32."""
        width = self.n_buckets * len(self.channels)
        raw = (np.concatenate([np.asarray(s, dtype=np.float64) for s in sequences]).reshape(len(sequences), width)
               if len(sequences) else np.zeros((0, width)))
        x = np.log1p(np.maximum(raw, 0.0)).reshape(-1, self.n_buckets, len(self.channels))
        return ((x - np.asarray(self.seq_mean)) / np.asarray(self.seq_std)).astype(np.float32)

    def static_tensor(self, pdf: pd.DataFrame) -> np.ndarray:
        num = np.log1p(np.maximum(pdf[NUMERIC_STATIC].to_numpy(dtype=np.float64, na_value=0.0), 0.0))
        parts = [(num - np.asarray(self.static_mean)) / np.asarray(self.static_std)]
        for col in CATEGORICAL_STATIC:
            vocab = self.vocab[col]
            idx = pdf[col].map({v: i for i, v in enumerate(vocab)}).fillna(len(vocab)).to_numpy(dtype=int)
            parts.append(np.eye(len(vocab) + 1)[idx])
        return np.concatenate(parts, axis=1).astype(np.float32)

    def inputs(self, pdf: pd.DataFrame) -> Dict[str, np.ndarray]:
        return {"sequence": self.sequence_tensor(list(pdf["sequence"])), "static": self.static_tensor(pdf)}


def compute_stats(train_df, channels: List[str], n_buckets: int, bucket_days: int) -> FeatureStats:
    """Per-channel mean/std of log1p over all time steps, static mean/std and vocabularies — in Spark."""
    from pyspark.sql import functions as F

    C = len(channels)
    ex = train_df.select(F.posexplode("sequence").alias("pos", "v")).select(
        (F.col("pos") % C).alias("c"), F.log1p(F.greatest(F.col("v"), F.lit(0.0))).alias("v"))
    rows = {r["c"]: r for r in ex.groupBy("c").agg(F.mean("v").alias("m"), F.stddev_pop("v").alias("s")).collect()}
    seq_mean = [float(rows[c]["m"]) if c in rows else 0.0 for c in range(C)]
    seq_std = [max(float(rows[c]["s"] or 0.0), 1e-6) if c in rows else 1.0 for c in range(C)]
    aggs = []
    for c in NUMERIC_STATIC:
        v = F.log1p(F.greatest(F.coalesce(F.col(c), F.lit(0.0)), F.lit(0.0)))
        aggs += [F.mean(v).alias(f"m_{c}"), F.stddev_pop(v).alias(f"s_{c}")]
    st = train_df.agg(*aggs).first()
    vocab = {}
    for col in CATEGORICAL_STATIC:
        top = train_df.groupBy(col).count().orderBy(F.desc("count"), col).limit(MAX_VOCAB).collect()
        vocab[col] = sorted(str(r[col]) for r in top)
    return FeatureStats(
        channels=channels, n_buckets=n_buckets, seq_mean=seq_mean, seq_std=seq_std,
        static_mean=[float(st[f"m_{c}"] or 0.0) for c in NUMERIC_STATIC],
        static_std=[max(float(st[f"s_{c}"] or 0.0), 1e-6) for c in NUMERIC_STATIC],
        vocab=vocab, bucket_days=bucket_days)
