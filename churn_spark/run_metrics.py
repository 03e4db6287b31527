"""The schema of a run's ``metrics.json``, shared by the side that writes it and every side that reads it.

Why a module of its own: training writes the file, validation adds its verdict, and the report, the SQL endpoint's
``model_metrics``, drift and monitoring read it back. A pydantic model here is the one definition of its keys and
types: :func:`write_metrics` refuses to write a file that does not match, and :func:`read_metrics` refuses (with the
file and the key named) to use one that does not, instead of a ``KeyError`` pages later in a report. Keys added over
time are optional, so files of older runs still read.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import storage

Number = Optional[Union[int, float]]  # counts stay ints; NaN / inf are written as null (strict JSON)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RankStats(_Model):
    rank: int
    host: Optional[str] = None
    executor_id: Optional[str] = None
    executor_cwd: Optional[str] = None
    samples_per_s: Number = None
    epochs_run: Optional[int] = None
    resumed: Optional[bool] = None
    weights_digest: Optional[str] = None


class TrainingStats(_Model):
    ranks: List[RankStats] = Field(default_factory=list)
    samples_per_s_total: Number = None
    epochs: Optional[int] = None
    history: Dict[str, List[Number]] = Field(default_factory=dict)
    staged: Optional[str] = None  # the ranks' data: "written" by this run, or "reused" from an earlier attempt


class ScoredBy(_Model):
    """Which model version scored the run's week (the champion when the candidate was not promoted)."""

    model_version: Optional[str] = None
    role: str = "unknown"
    test_metrics: Optional[Dict[str, Number]] = None


class Verdict(BaseModel):
    """The validation step's decision (see :mod:`churn_spark.promotion`); further keys are kept as they are."""

    model_config = ConfigDict(extra="allow")
    metric: Optional[str] = None
    promoted: Optional[bool] = None  # unknown until the validate step decided
    reason: str = ""
    champion_version: Optional[str] = None
    comparable: Optional[bool] = None
    interval: Optional[List[Number]] = None
    improvement: Number = None
    champion_metrics: Optional[Dict[str, Number]] = None

    @field_validator("champion_version", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return None if v is None else str(v)


class RunMetrics(_Model):
    run_date: dt.date
    features_version: Optional[int] = None
    model_name: Optional[str] = None
    snapshots: Dict[str, List[dt.date]] = Field(default_factory=dict)
    models: Dict[str, Dict[str, Number]] = Field(default_factory=dict)  # test metrics per model
    shipped_model: str = "deep"  # the entry of ``models`` whose probabilities the bundle produces (deep | blend)
    model_selection: Dict[str, Any] = Field(default_factory=dict)  # blend decision, BG/NBD fit, search trials
    validation: Dict[str, Dict[str, Number]] = Field(default_factory=dict)
    tiers: Dict[str, Any] = Field(default_factory=dict)  # mode, and realised churn per tier on test
    snapshot_plan_rule: Optional[str] = None
    training: TrainingStats = Field(default_factory=TrainingStats)
    run_id: Optional[str] = None
    model_version: Optional[str] = None
    gate: Optional[Verdict] = None
    scored_by: Optional[ScoredBy] = None

    @field_validator("model_version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        return None if v is None else str(v)


class MetricsFileError(ValueError):
    """A metrics.json that does not match :class:`RunMetrics` (names the file and the keys)."""


def _finite(o: Any) -> Any:
    """Numpy scalars as Python values, NaN and infinities as null, recursively (json.dumps would write the
    non-standard ``NaN``)."""
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def validate(metrics: Union[dict, RunMetrics], where: str = "metrics.json") -> RunMetrics:
    if isinstance(metrics, RunMetrics):
        return metrics
    try:
        return RunMetrics.model_validate(_finite(metrics))
    except ValidationError as e:
        raise MetricsFileError(f"{where} does not match the metrics schema (churn_spark/run_metrics.py): {e}") from e


def write_metrics(path: Union[str, Path], metrics: Union[dict, RunMetrics]) -> dict:
    """Validate and write atomically (temp file + rename locally, one PUT on an object store); returns the written
    content as a dict."""
    path = str(path)
    m = validate(metrics, path)
    content = m.model_dump(mode="json", exclude_none=False)
    storage.write_text(path, json.dumps(content, indent=1))
    return content


def metrics_files(runs_dir: str) -> List[str]:
    """The ``<run>/metrics.json`` of every run directory under ``runs_dir``, in run-name order: one listing plus one
    lookup per run, so it works the same on a local disk and on an object store (no glob)."""
    candidates = (storage.join(d, "metrics.json") for d in storage.ls(str(runs_dir)))
    return [f for f in candidates if storage.is_file(f)]


def read_metrics(path: Union[str, Path]) -> dict:
    """The validated content of a metrics.json, as plain JSON values (dates as ISO strings)."""
    path = str(path)
    try:
        raw = json.loads(storage.read_text(path))
    except json.JSONDecodeError as e:
        raise MetricsFileError(f"{path} is not valid JSON: {e}") from e
    return validate(raw, str(path)).model_dump(mode="json")


def shipped_metrics(metrics: dict) -> dict:
    """Test metrics of the model a run shipped (the network, or its blend), ``{}`` when absent."""
    models = metrics.get("models") or {}
    return models.get(metrics.get("shipped_model") or "deep") or {}
