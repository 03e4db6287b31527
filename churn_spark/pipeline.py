"""The weekly pipeline and its steps: build_sequences -> train (with gate) -> score -> report.

Each step records what it produced (Delta versions, MLflow run id, model version, report path) in
``<work_dir>/runs/<run_date>/runlog.json``. A rerun of the same date skips steps whose outputs are recorded and
still present; ``force=True`` redoes them, idempotently (same partitions replaced, no duplicates).
"""
from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Callable, Dict, Optional

from pyspark.sql import SparkSession

from .config import Config
from .logs import LOG, step

STEPS = ("build_sequences", "train", "score", "report")


class StepFailed(RuntimeError):
    pass


class RunLog:
    """JSON record of a run date's completed steps (written atomically after each step)."""

    def __init__(self, cfg: Config, run_date: dt.date):
        self.path = Path(cfg.path("runs", run_date.isoformat(), "runlog.json"))
        self.data: Dict = json.loads(self.path.read_text()) if self.path.is_file() else {"steps": {}}

    def done(self, name: str) -> Optional[dict]:
        return self.data["steps"].get(name)

    def record(self, name: str, outputs: dict) -> None:
        self.data["steps"][name] = outputs
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)

    def forget(self, name: str) -> None:
        self.data["steps"].pop(name, None)


def build_sequences(spark: SparkSession, cfg: Config, run_date: dt.date) -> dict:
    """Ingest + validate the lake, quarantine bad rows, write the run's snapshot partitions of the feature table."""
    from . import lake, sequences

    run_id = f"build-{run_date.isoformat()}"
    clock = cfg.clock or run_date
    with step("build_sequences", run_date=run_date) as info:
        res = lake.ingest(spark, cfg, run_id, clock)
        plan = sequences.plan_for(cfg, run_date)
        feats = sequences.build_from_config(spark, cfg, res.tables, run_date)
        version = sequences.write_features(feats, cfg.features_path, list(plan), res.lineage)
        quarantined = lake.write_quarantine(res, cfg.quarantine_path, run_id)
        res.release()
        info.update(features_version=version, quarantined=quarantined)
    return {"features_version": version, "inputs": res.lineage, "ingest": res.summary(),
            "snapshots": {d.isoformat(): s for d, s in sorted(plan.items())}}


def train_step(spark: SparkSession, cfg: Config, run_date: dt.date, features_version: Optional[int] = None) -> dict:
    from .train import train

    r = train(spark, cfg, run_date, features_version)
    return {"mlflow_run_id": r.run_id, "model_version": r.model_version, "promoted": r.promoted,
            "metrics_json": cfg.path("runs", run_date.isoformat(), "metrics.json")}


def score_step(spark: SparkSession, cfg: Config, run_date: dt.date, model_version: Optional[str] = None) -> dict:
    from .score import score

    r = score(spark, cfg, snapshot=run_date, model_version=model_version, run_id=f"weekly-{run_date.isoformat()}")
    return {"snapshot": r.snapshot.isoformat(), "users": r.users, "tiers": r.tiers,
            "risk_table_version": r.table_version, "model_version": r.model_version,
            "users_per_s": round(r.users_per_s, 1)}


def report_step(spark: SparkSession, cfg: Config, run_date: dt.date, ingest_summary: Optional[dict] = None) -> dict:
    from .report import write_report

    return {"report": write_report(spark, cfg, run_date, ingest_summary=ingest_summary)}


def _still_there(cfg: Config, name: str, outputs: dict) -> bool:
    if name == "build_sequences":
        return Path(cfg.features_path, "_delta_log").is_dir()
    if name == "score":
        return Path(cfg.risk_table_path, "_delta_log").is_dir()
    if name == "report":
        return Path(outputs.get("report", "")).is_file()
    return True


def weekly(spark: SparkSession, cfg: Config, run_date: dt.date, force: bool = False) -> dict:
    """Run every step for ``run_date``; completed steps of an earlier attempt are skipped unless ``force``."""
    log = RunLog(cfg, run_date)
    runners: Dict[str, Callable[[], dict]] = {
        "build_sequences": lambda: build_sequences(spark, cfg, run_date),
        "train": lambda: train_step(spark, cfg, run_date, log.done("build_sequences")["features_version"]),
        "score": lambda: score_step(spark, cfg, run_date),
        "report": lambda: report_step(spark, cfg, run_date, (log.done("build_sequences") or {}).get("ingest")),
    }
    for name in STEPS:
        previous = log.done(name)
        if previous and not force and _still_there(cfg, name, previous):
            LOG.info("step %s for %s already done: %s (use --force to redo)", name, run_date, _short(previous))
            continue
        try:
            log.record(name, runners[name]())
        except Exception as e:
            raise StepFailed(f"weekly run {run_date}: step '{name}' failed: {str(e).splitlines()[0] if str(e) else e!r}"
                             f" (completed steps are kept in {log.path}; rerun to continue)") from e
    return log.data


def _short(d: dict) -> dict:
    return {k: v for k, v in d.items() if not isinstance(v, dict)}
