"""Distributed inference: a ``mapInPandas`` that loads the model once per Python worker and scores Arrow batches.

The bundle is shipped as a zip with ``SparkContext.addArchive`` (local mode and every cluster manager) and loaded
on first use in each Python worker; Spark reuses workers (``spark.python.worker.reuse``), so later batches and
tasks hit the in-process cache. With a remote ``work_dir`` (no shared mount, and the executors reach the object
store themselves) the driver writes the zip under the staging URI instead, and each worker downloads it once into
a local temp dir keyed by its content-addressed name. Reason codes (optional) are computed in
:mod:`churn_spark.reasons`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import pandas as pd

from . import storage
from .bundle import Bundle, load_bundle, local_copy, manifest_digest
from .feature_spec import MODEL_INPUT_COLUMNS
from .reasons import ReasonSettings, reason_codes

_CACHE: Dict[str, Bundle] = {}
LOADS: Dict[str, int] = {}  # bundle reference -> loads in this process (checked by tests and benchmarks)


def ship_model(spark, model_dir: str, staging_root: str) -> str:
    """Verify the bundle, zip it under a content-addressed name and ship it; returns a worker reference.

    Local ``staging_root``: the zip is ``addArchive``-ed — Spark unpacks it on every executor (local mode included),
    so the same reference works on YARN, Kubernetes, standalone and local; directories cannot be shipped with
    ``addFile`` outside local mode. Remote ``staging_root``: the zip is written there and the reference is its URI
    (the workers download it; ``spark`` is not used).
    """
    local = local_copy(model_dir)  # refuses a corrupt bundle before any task starts (downloads a remote one)
    digest = manifest_digest(json.loads(Path(local, "manifest.json").read_text()))
    name = f"model-{digest[:16]}"
    if not storage.is_local(staging_root):
        archive_uri = storage.join(staging_root, f"{name}.zip")
        if not storage.is_file(archive_uri):
            with tempfile.TemporaryDirectory(prefix="churn-ship-") as tmp:
                made = shutil.make_archive(str(Path(tmp, name)), "zip", root_dir=local)
                storage.write_bytes(archive_uri, Path(made).read_bytes())
        return archive_uri
    root = Path(storage.local_path(staging_root))
    archive = root / f"{name}.zip"
    if not archive.exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = shutil.make_archive(str(root / f".{name}.{os.getpid()}"), "zip", root_dir=local)
        os.replace(tmp, archive)
    if name not in _SHIPPED:
        spark.sparkContext.addArchive(str(archive.resolve()))
        _SHIPPED.add(name)
    return f"sparkfiles:{archive.name}"


_SHIPPED: set = set()


def resolve(ref: str) -> str:
    """The local bundle directory of a worker reference."""
    if ref.startswith("sparkfiles:"):
        from pyspark import SparkFiles

        return SparkFiles.get(ref.split(":", 1)[1])
    if not storage.is_local(ref):
        return _fetch_archive(ref)
    return ref


def _fetch_archive(uri: str) -> str:
    """Download and unpack a shipped zip once per machine (temp dir, keyed by its content-addressed name); a
    concurrent worker that loses the race to put it in place uses the winner's copy."""
    target = Path(tempfile.gettempdir(), "churn-spark", "ship", storage.name(uri).removesuffix(".zip"))
    if (target / "manifest.json").is_file():
        return str(target)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        with zipfile.ZipFile(io.BytesIO(storage.read_bytes(uri))) as z:
            z.extractall(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # already in place
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def get_bundle(ref: str) -> Bundle:
    """Once per Python worker process: later calls return the cached bundle (checksums verified on load)."""
    if ref not in _CACHE:
        if ref.startswith("sparkfiles:") or not storage.is_local(ref):  # in a Spark Python worker: one TF thread
            from .model import quiet_tensorflow

            quiet_tensorflow(threads=int(os.environ.get("CHURN_SPARK_TF_THREADS", "1")))
        _CACHE[ref] = load_bundle(resolve(ref))
        LOADS[ref] = LOADS.get(ref, 0) + 1
    return _CACHE[ref]


def raw_probability(b: Bundle, inputs: Dict[str, np.ndarray]) -> np.ndarray:
    if len(inputs["static"]) == 0:
        return np.zeros(0)
    return np.asarray(b.model.predict_on_batch(inputs), dtype=np.float64).reshape(-1)


def probabilities(b: Bundle, pdf: pd.DataFrame, inputs: Dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(raw score, calibrated churn probability) of feature rows: the network's output — or, when the bundle ships
    a blend (:mod:`churn_spark.blend`), the blend of it with ``lr_rfm`` — then the calibrator."""
    score = b.calibrator.shipped_score(raw_probability(b, inputs), pdf)
    return score, (np.clip(b.calibrator(score), 0.0, 1.0) if len(score) else score)


# ---- the pandas UDF ----------------------------------------------------------------------------------------
def make_scorer(ref: str, keep: List[str], reasons: Optional[ReasonSettings] = None):
    """The function given to ``mapInPandas``: iterator of Arrow batches in, scored batches out (plus
    ``top_reasons`` when ``reasons`` is given). The driver's storage settings travel in the closure (a remote
    reference is downloaded in the worker); they are applied there, never printed."""
    storage_options = storage.options()

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import sys
        import time

        storage.configure(storage_options)
        b = get_bundle(ref)
        done, t0, last = 0, time.time(), time.time()
        for pdf in batches:
            inputs = b.stats.inputs(pdf)
            out = pdf[keep].copy()
            out["raw_probability"], out["churn_probability"] = probabilities(b, pdf, inputs)
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
    sent = [c for c in df.columns if c in keep or c in MODEL_INPUT_COLUMNS]  # nothing else crosses into Python
    return df.select(*sent).mapInPandas(make_scorer(ref, keep, reasons), schema)
