"""The weekly pipeline and its steps: build_sequences -> train -> validate (promotion) -> score -> monitor -> report.

Each step records what it produced (Delta versions, MLflow run id, model version, report path) in
``<work_dir>/runs/<run_date>/runlog.json``. A rerun of the same date skips steps whose outputs are recorded and
still present; ``force=True`` redoes them, idempotently (same partitions replaced, no duplicates).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Callable, Dict, Optional

from pyspark.sql import SparkSession

from . import storage
from .config import Config
from .logs import LOG, step, timed

STEPS = ("build_sequences", "train", "validate", "score", "monitor", "report")


def build_run_id(run_date: dt.date) -> str:
    """The quarantine ``run_id`` of a run date's build step (the report looks its rows up by it)."""
    return f"build-{run_date.isoformat()}"


class StepFailed(RuntimeError):
    pass


class RunLog:
    """JSON record of a run date's completed steps (written atomically after each step)."""

    def __init__(self, cfg: Config, run_date: dt.date):
        self.path = cfg.path("runs", run_date.isoformat(), "runlog.json")
        self.data: Dict = json.loads(storage.read_text(self.path)) if storage.is_file(self.path) else {"steps": {}}

    def done(self, name: str) -> Optional[dict]:
        return self.data["steps"].get(name)

    def record(self, name: str, outputs: dict) -> None:
        self.data["steps"][name] = outputs
        storage.write_text(self.path, json.dumps(self.data, indent=1, default=str))


def build_sequences(spark: SparkSession, cfg: Config, run_date: dt.date) -> dict:
    """Ingest + validate the lake, quarantine bad rows, write the run's snapshot partitions of the feature table."""
    from . import lake, privacy, sequences
    from .feature_spec import describe_plan

    run_id = build_run_id(run_date)
    clock = cfg.clock or run_date
    plan = sequences.plan_for(cfg, run_date)
    plan_lines = describe_plan(plan, cfg.snapshots.horizon_days)
    LOG.info(
        "snapshot plan for %s (label windows of different splits never overlap):\n  %s",
        run_date,
        "\n  ".join(plan_lines),
    )
    with step("build_sequences", run_date=run_date) as info:
        res = lake.ingest(spark, cfg, run_id, clock)
        feats = sequences.build_from_config(spark, cfg, res.tables, run_date)
        version = sequences.write_features(feats, cfg.features_path, list(plan), res.lineage, cfg.feature_contract)
        if cfg.privacy.hash_quarantine_user_ids:
            res.quarantine = privacy.pseudonymise_quarantine(res.quarantine, cfg)
        quarantined = lake.write_quarantine(res, cfg.quarantine_path, run_id)
        res.release()
        retention = privacy.apply_quarantine_retention(spark, cfg)
        info.update(features_version=version, quarantined=quarantined)
    return {
        "features_version": version,
        "inputs": res.lineage,
        "ingest": res.summary(),
        "quarantine_retention": retention,
        "snapshots": {d.isoformat(): s for d, s in sorted(plan.items())},
        "snapshot_plan": plan_lines,
    }


def train_step(spark: SparkSession, cfg: Config, run_date: dt.date, features_version: Optional[int] = None) -> dict:
    from .train import train

    r = train(spark, cfg, run_date, features_version)
    return {
        "mlflow_run_id": r.run_id,
        "model_version": r.model_version,
        "metrics_json": cfg.path("runs", run_date.isoformat(), "metrics.json"),
    }


def validate_step(spark: SparkSession, cfg: Config, run_date: dt.date, version: Optional[str] = None) -> dict:
    """Challenger vs champion; moves the champion alias only when the challenger is better beyond noise."""
    from .promotion import validate

    v = validate(spark, cfg, run_date, version)
    return {
        "challenger_version": v["challenger_version"],
        "promoted": bool(v["promoted"]),
        "mode": v["mode"],
        "comparable": v.get("comparable"),
        "interval": v.get("interval"),
        "reason": v.get("reason", ""),
    }


def score_step(spark: SparkSession, cfg: Config, run_date: dt.date, model_version: Optional[str] = None) -> dict:
    from .score import score

    r = score(spark, cfg, snapshot=run_date, model_version=model_version, run_id=f"weekly-{run_date.isoformat()}")
    return {
        "snapshot": r.snapshot.isoformat(),
        "users": r.users,
        "tiers": r.tiers,
        "risk_table_version": r.table_version,
        "model_version": r.model_version,
        "users_per_s": round(r.users_per_s, 1),
        "actions": r.actions,
    }


def monitor_step(spark: SparkSession, cfg: Config, run_date: dt.date) -> dict:
    """Realised outcomes of matured snapshots (``model_performance``) and this snapshot's PSI rows (``drift``)."""
    from .drift_table import write_drift
    from .monitoring import update_model_performance

    return {
        "model_performance": update_model_performance(spark, cfg, run_date),
        "drift": write_drift(spark, cfg, run_date),
    }


def report_step(spark: SparkSession, cfg: Config, run_date: dt.date, ingest_summary: Optional[dict] = None) -> dict:
    from .report import write_report

    return {"report": write_report(spark, cfg, run_date, ingest_summary=ingest_summary)}


def _still_there(cfg: Config, name: str, outputs: dict) -> bool:
    if name == "build_sequences":
        return storage.is_dir(storage.join(cfg.features_path, "_delta_log"))
    if name == "score":
        return storage.is_dir(storage.join(cfg.risk_table_path, "_delta_log"))
    if name == "report":
        return bool(outputs.get("report")) and storage.is_file(outputs["report"])
    if name == "monitor":
        return storage.is_dir(cfg.path("tables", "drift", "_delta_log"))
    return True


def weekly(spark: SparkSession, cfg: Config, run_date: dt.date, force: bool = False) -> dict:
    """Run every step for ``run_date`` under the work_dir's run lock (a second concurrent run exits at once with
    exit code 3); completed steps of an earlier attempt are skipped unless ``force``."""
    from .run_lock import held

    with held(spark, cfg.lock_table_path, "weekly", cfg.lock.stale_after_s, cfg.lock.heartbeat_s):
        return _weekly(spark, cfg, run_date, force)


def _weekly(spark: SparkSession, cfg: Config, run_date: dt.date, force: bool) -> dict:
    log = RunLog(cfg, run_date)
    runners: Dict[str, Callable[[], dict]] = {
        "build_sequences": lambda: build_sequences(spark, cfg, run_date),
        "train": lambda: train_step(spark, cfg, run_date, log.done("build_sequences")["features_version"]),
        "validate": lambda: validate_step(spark, cfg, run_date, log.done("train")["model_version"]),
        "score": lambda: score_step(spark, cfg, run_date),
        "monitor": lambda: monitor_step(spark, cfg, run_date),
        "report": lambda: report_step(spark, cfg, run_date, (log.done("build_sequences") or {}).get("ingest")),
    }
    for name in STEPS:
        previous = log.done(name)
        if previous and not force and _still_there(cfg, name, previous):
            LOG.info("step %s for %s already done: %s (use --force to redo)", name, run_date, _short(previous))
            continue
        t0 = time.time()
        try:
            with timed() as parts:
                out = runners[name]()
            log.record(name, {**out, "timings": {"seconds": round(time.time() - t0, 2), "parts": parts}})
        except Exception as e:
            raise StepFailed(
                f"weekly run {run_date}: step '{name}' failed: {str(e).splitlines()[0] if str(e) else e!r}"
                f" (completed steps are kept in {log.path}; rerun to continue)"
            ) from e
    return log.data


def _short(d: dict) -> dict:
    return {k: v for k, v in d.items() if not isinstance(v, dict)}
