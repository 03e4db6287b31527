"""Distributed inference: a ``mapInPandas`` that loads the model once per Python worker and scores Arrow batches.

The bundle is shipped as a zip with ``SparkContext.addArchive`` (local mode and every cluster manager) and loaded
on first use in each Python worker; Spark reuses workers (``spark.python.worker.reuse``), so later batches and
tasks hit the in-process cache. Reasons are the model's own gradient x input attributions, summed per channel and
time window (and per static feature), turned into short codes.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
import pandas as pd

from .bundle import Bundle, bundle_digest, load_bundle

_CACHE: Dict[str, Bundle] = {}
LOADS: Dict[str, int] = {}  # bundle reference -> loads in this process (checked by tests and benchmarks)
RECENT_DAYS = 28


def ship_model(spark, model_dir: str, staging_root: str) -> str:
    """Verify the bundle, zip it under a content-addressed name and ``addArchive`` it; returns a worker reference.

    Spark unpacks the archive on every executor (local mode included), so the same reference works on YARN,
    Kubernetes, standalone and local; directories cannot be shipped with ``addFile`` outside local mode.
    """
    digest = bundle_digest(model_dir)  # refuses a corrupt bundle before any task starts
    name = f"model-{digest[:16]}"
    archive = Path(staging_root, f"{name}.zip")
    if not archive.exists():
        Path(staging_root).mkdir(parents=True, exist_ok=True)
        tmp = shutil.make_archive(str(Path(staging_root, f".{name}.{os.getpid()}")), "zip", root_dir=model_dir)
        os.replace(tmp, archive)
    if name not in _SHIPPED:
        spark.sparkContext.addArchive(str(archive.resolve()))
        _SHIPPED.add(name)
    return f"sparkfiles:{archive.name}"


_SHIPPED: set = set()


def resolve(ref: str) -> str:
    if ref.startswith("sparkfiles:"):
        from pyspark import SparkFiles

        return SparkFiles.get(ref.split(":", 1)[1])
    return ref


def get_bundle(ref: str) -> Bundle:
    """Once per Python worker process: later calls return the cached bundle."""
    if ref not in _CACHE:
        if ref.startswith("sparkfiles:"):  # inside a Spark Python worker: one TF thread per task slot
            from .model import quiet_tensorflow

            quiet_tensorflow(threads=int(os.environ.get("CHURN_SPARK_TF_THREADS", "1")))
        _CACHE[ref] = load_bundle(resolve(ref))
        LOADS[ref] = LOADS.get(ref, 0) + 1
    return _CACHE[ref]


def raw_probability(b: Bundle, inputs: Dict[str, np.ndarray]) -> np.ndarray:
    if len(inputs["static"]) == 0:
        return np.zeros(0)
    return np.asarray(b.model.predict_on_batch(inputs), dtype=np.float64).reshape(-1)


# ---- reasons -----------------------------------------------------------------------------------------------
def attributions(b: Bundle, inputs: Dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Gradient x input of the churn logit w.r.t. the standardised inputs: (n,T,C) and (n,S)."""
    import tensorflow as tf

    seq = tf.convert_to_tensor(inputs["sequence"])
    st = tf.convert_to_tensor(inputs["static"])
    with tf.GradientTape() as tape:
        tape.watch([seq, st])
        p = tf.clip_by_value(b.model({"sequence": seq, "static": st}, training=False), 1e-6, 1 - 1e-6)
        logit = tf.math.log(p / (1 - p))
    g_seq, g_st = tape.gradient(logit, [seq, st])
    return (g_seq * seq).numpy(), (g_st * st).numpy()


def reason_codes(b: Bundle, inputs: Dict[str, np.ndarray], raw_sequences: np.ndarray, top: int = 3) -> List[List[str]]:
    """Up to ``top`` codes per user for the groups that push the churn logit up the most."""
    from .feature_spec import NUMERIC_STATIC

    a_seq, a_st = attributions(b, inputs)
    stats = b.stats
    n, T, C = a_seq.shape
    bucket_days = stats.bucket_days
    R = max(1, min(T - 1, RECENT_DAYS // bucket_days)) if T > 1 else 1
    raw = raw_sequences.reshape(n, T, C)
    recent_raw, earlier_raw = raw[:, T - R:, :].mean(axis=1), raw[:, :T - R, :].mean(axis=1) if T > R else raw[:, :0, :].sum(axis=1)
    groups, names = [], []
    win = f"last_{R * bucket_days // 7}w" if bucket_days % 7 == 0 else f"last_{R * bucket_days}d"
    for c, ch in enumerate(stats.channels):
        groups.append(a_seq[:, T - R:, c].sum(axis=1))
        names.append(("recent", ch))
        groups.append(a_seq[:, :T - R, c].sum(axis=1))
        names.append(("earlier", ch))
    for j, f in enumerate(NUMERIC_STATIC):
        groups.append(a_st[:, j])
        names.append(("static", f))
    # one-hot profile columns are left out: against an all-zero baseline they say nothing actionable
    scores = np.stack(groups, axis=1)  # (n, G)
    order = np.argsort(-scores, axis=1, kind="stable")
    out: List[List[str]] = []
    for i in range(n):
        codes: List[str] = []
        for g in order[i]:
            if scores[i, g] <= 0 or len(codes) >= top:
                break
            kind, what = names[g]
            if kind in ("recent", "earlier"):
                c = stats.channels.index(what)
                if what == "rating_mean" and kind == "recent" and 0 < recent_raw[i, c] <= 2.5:
                    code = "bad_review"
                elif kind == "recent":
                    code = f"{what}_{'down' if recent_raw[i, c] < earlier_raw[i, c] else 'up'}_{win}"
                else:
                    code = f"{what}_{'low' if inputs['sequence'][i, :T - R, c].mean() < 0 else 'high'}_before_{win}"
            else:
                code = f"{what}_{'high' if inputs['static'][i, NUMERIC_STATIC.index(what)] > 0 else 'low'}"
            if code not in codes:
                codes.append(code)
        out.append(codes)
    return out


# ---- the pandas UDF ----------------------------------------------------------------------------------------
def make_scorer(ref: str, keep: List[str], with_reasons: bool):
    """The function given to ``mapInPandas``: iterator of Arrow batches in, scored batches out."""

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import sys
        import time

        b = get_bundle(ref)
        done, t0, last = 0, time.time(), time.time()
        for pdf in batches:
            inputs = b.stats.inputs(pdf)
            p_raw = raw_probability(b, inputs)
            out = pdf[keep].copy()
            out["raw_probability"] = p_raw
            out["churn_probability"] = np.clip(b.calibrator(p_raw), 0.0, 1.0) if len(p_raw) else p_raw
            if with_reasons:
                raw = np.stack([np.asarray(s, float) for s in pdf["sequence"]]) if len(pdf) else np.zeros((0, 1))
                out["top_reasons"] = reason_codes(b, inputs, raw) if len(pdf) else []
            done += len(pdf)
            if time.time() - last > 10:  # progress of long partitions, in the executor's log
                last = time.time()
                print(f"churn_spark scorer pid {os.getpid()}: {done} rows, {done / (last - t0):.0f} rows/s",
                      file=sys.stderr, flush=True)
            yield out

    return score


def score_frame(df, ref: str, keep: List[str], with_reasons: bool = False):
    """``df`` (feature rows) -> ``keep`` columns + raw_probability, churn_probability [, top_reasons]."""
    from pyspark.sql import types as T

    fields = [f for f in df.schema.fields if f.name in keep]
    schema = T.StructType(fields + [T.StructField("raw_probability", T.DoubleType()),
                                    T.StructField("churn_probability", T.DoubleType())]
                          + ([T.StructField("top_reasons", T.ArrayType(T.StringType()))] if with_reasons else []))
    return df.mapInPandas(make_scorer(ref, keep, with_reasons), schema)
