"""Distributed inference: a ``mapInPandas`` that loads the model once per Python worker and scores Arrow batches.

The bundle is shipped as a zip with ``SparkContext.addArchive`` (local mode and every cluster manager) and loaded
on first use in each Python worker; Spark reuses workers (``spark.python.worker.reuse``), so later batches and
tasks hit the in-process cache. Reason codes (optional) are computed in :mod:`churn_spark.reasons`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import pandas as pd

from .bundle import Bundle, bundle_digest, load_bundle
from .reasons import ReasonSettings, reason_codes

_CACHE: Dict[str, Bundle] = {}
LOADS: Dict[str, int] = {}  # bundle reference -> loads in this process (checked by tests and benchmarks)


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


# ---- the pandas UDF ----------------------------------------------------------------------------------------
def make_scorer(ref: str, keep: List[str], reasons: Optional[ReasonSettings] = None):
    """The function given to ``mapInPandas``: iterator of Arrow batches in, scored batches out (plus
    ``top_reasons`` when ``reasons`` is given)."""

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
            if reasons is not None:
                out["top_reasons"] = reason_codes(b, pdf, inputs, reasons)
            done += len(pdf)
            if time.time() - last > 10:  # progress of long partitions, in the executor's log
                last = time.time()
                print(
                    f"churn_spark scorer pid {os.getpid()}: {done} rows, {done / (last - t0):.0f} rows/s",
                    file=sys.stderr,
                    flush=True,
                )
            yield out

    return score


def score_frame(df, ref: str, keep: List[str], reasons: Optional[ReasonSettings] = None):
    """``df`` (feature rows) -> ``keep`` columns + raw_probability, churn_probability [, top_reasons when
    ``reasons`` is given; None = no reasons]."""
    from pyspark.sql import types as T

    fields = [f for f in df.schema.fields if f.name in keep]
    fields += [T.StructField("raw_probability", T.DoubleType()), T.StructField("churn_probability", T.DoubleType())]
    if reasons is not None:
        fields.append(T.StructField("top_reasons", T.ArrayType(T.StringType())))
    schema = T.StructType(fields)
    return df.mapInPandas(make_scorer(ref, keep, reasons), schema)
