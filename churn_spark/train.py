"""Training run: temporal splits, Horovod-on-Spark training of the CNN+RNN, baselines, calibration, MLflow, gate.

Temporal protocol: train on the older labelled snapshots, early-stop on the validation snapshot, report on the
test snapshot (the latest labelled one, never seen in training). Every model — deep and baselines — is calibrated
on validation and measured on the same test rows; the champion is re-scored on those rows too before the gate
decides.
"""
from __future__ import annotations

import datetime as dt
import glob
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import registry
from .baselines import fit_baselines, predict_baseline
from .calibration import Calibrator
from .config import Config
from .feature_spec import CATEGORICAL_STATIC, NUMERIC_STATIC, channels_for
from .logs import LOG, step
from .metrics import LOWER_IS_BETTER, best_f1_threshold, classification_report
from .predict import score_frame, ship_model
from .preprocess import compute_stats
from .sequences import plan_for

SPLITS = ("train", "validation", "test")


class TrainingError(RuntimeError):
    pass


@dataclass
class TrainResult:
    run_id: str
    model_version: str
    promoted: bool
    metrics: dict
    model_dir: str
    ranks: List[dict] = field(default_factory=list)


def features_version(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def load_splits(spark: SparkSession, cfg: Config, run_date: dt.date, version: int) -> Dict[str, DataFrame]:
    """The run's labelled snapshots from the feature table (at ``version``), split by the run's own plan."""
    plan = {d: s for d, s in plan_for(cfg, run_date).items() if s != "score"}
    feats = spark.read.format("delta").option("versionAsOf", version).load(cfg.features_path)
    split = F.create_map(*[x for d, s in plan.items() for x in (F.lit(d), F.lit(s))])
    df = feats.where(F.col("snapshot_date").isin(list(plan))).withColumn("split", split[F.col("snapshot_date")])
    found = {r["snapshot_date"]: r["n"] for r in df.groupBy("snapshot_date").agg(F.count("*").alias("n")).collect()}
    missing = sorted(set(plan) - set(found))
    if missing:
        raise TrainingError(f"feature table {cfg.features_path} (version {version}) has no rows for snapshots "
                            f"{[d.isoformat() for d in missing]}: run build_sequences for {run_date} first")
    return {s: df.where(F.col("split") == s) for s in SPLITS}


def export_split(df: DataFrame, path: str, n_files: int) -> List[str]:
    cols = ["user_id", "label", "sequence", *NUMERIC_STATIC, *CATEGORICAL_STATIC]
    df.select(*cols).repartition(n_files).write.mode("overwrite").parquet(path)
    files = sorted(glob.glob(str(Path(path).resolve() / "part-*.parquet")))
    return files


def run_horovod(spark: SparkSession, args: dict, num_proc: int, timeout_s: int) -> List[dict]:
    """``horovod.spark.run`` with a hard bound: a lost rank fails the job instead of hanging it."""
    import os

    import horovod.spark

    from .distributed import rank_main

    env = dict(os.environ)
    env.setdefault("HOROVOD_GLOO_TIMEOUT_SECONDS", str(min(timeout_s, 300)))
    timed_out = threading.Event()

    def watchdog():  # horovod must run on the main thread, so the bound is enforced from here
        timed_out.set()
        LOG.error("training exceeded training.timeout_s=%ss: cancelling the Horovod Spark job", timeout_s)
        spark.sparkContext.cancelAllJobs()

    err_dir = Path(args["checkpoint_dir"], "errors")
    for old in err_dir.glob("rank-*.txt"):
        old.unlink()
    timer = threading.Timer(timeout_s, watchdog)
    timer.daemon = True
    timer.start()
    try:
        results = horovod.spark.run(rank_main, args=(args,), num_proc=num_proc, use_gloo=True, env=env,
                                    start_timeout=min(timeout_s, 600), verbose=0)
    except Exception as e:
        if timed_out.is_set():
            raise TrainingError(f"Horovod training did not finish within training.timeout_s={timeout_s}s "
                                f"(a rank or worker was lost?); rerun to resume from the rank-0 checkpoint") from e
        rank_errors = {p.stem: p.read_text().strip().splitlines()[-1] for p in sorted(err_dir.glob("rank-*.txt"))}
        raise TrainingError(f"Horovod training failed on {num_proc} ranks: {rank_errors or str(e).splitlines()[0]}; "
                            f"rerun to resume from the rank-0 checkpoint (tracebacks in {err_dir})") from e
    finally:
        timer.cancel()
    return sorted(results, key=lambda r: r["rank"])


def _collect_scores(df: DataFrame, cap: int) -> pd.DataFrame:
    """Bounded, deterministic (user-ordered) sample of (label, probabilities) for metrics on the driver."""
    return df.orderBy("user_id").limit(cap).toPandas()


def evaluate_models(spark, cfg: Config, splits: Dict[str, DataFrame], ref: str, channels: List[str]) -> dict:
    """Deep model + baselines on validation and test: calibrated on validation, measured on test."""
    t = cfg.training
    with step("baselines"):
        baselines = fit_baselines(splits["train"], channels, cfg.sequence.n_buckets, t.gbt_max_iter,
                                  t.gbt_max_depth, t.seed)
    frames = {}
    for split in ("validation", "test"):
        deep = score_frame(splits[split], ref, ["user_id", "label"]).select(
            "user_id", "label", F.col("raw_probability").alias("deep"))
        for name, m in baselines.items():
            b = predict_baseline(m, splits[split], channels, cfg.sequence.n_buckets).select(
                "user_id", F.col("probability").alias(name))
            deep = deep.join(b, "user_id")
        frames[split] = _collect_scores(deep, t.max_eval_rows)
    val, test = frames["validation"], frames["test"]
    out: dict = {"models": {}, "validation": {}, "calibrators": {}}
    for name in ["deep", *baselines]:
        cal = Calibrator.fit(t.calibration, val[name].to_numpy(), val["label"].to_numpy())
        pv = cal(val[name].to_numpy())
        thr = best_f1_threshold(val["label"].to_numpy(), pv)
        out["models"][name] = classification_report(test["label"].to_numpy(), cal(test[name].to_numpy()), thr)
        out["validation"][name] = {
            "brier_raw": float(np.mean((val[name] - val["label"]) ** 2)),
            "brier_calibrated": float(np.mean((pv - val["label"]) ** 2)),
            "threshold": thr,
        }
        out["calibrators"][name] = cal
        test[f"{name}_calibrated"] = cal(test[name].to_numpy())
    out["test_scores"] = test
    return out


def gate(spark, cfg: Config, candidate_metric: float, test_df: DataFrame) -> dict:
    """Champion/challenger: the candidate must beat the champion on the same test rows by ``gate_margin``."""
    metric, margin = cfg.registry.gate_metric, cfg.registry.gate_margin
    champ = registry.champion(cfg)
    decision = {"metric": metric, "margin": margin, "candidate": candidate_metric, "champion_version": None,
                "champion": None, "promoted": True}
    if champ is None:
        decision["reason"] = "no champion yet"
        return decision
    champ_dir, version = registry.download_version(cfg, champ.version)
    ref = ship_model(spark, champ_dir, cfg.path("tmp", "ship"))
    scored = _collect_scores(score_frame(test_df, ref, ["user_id", "label"]), cfg.training.max_eval_rows)
    from .bundle import verify_bundle

    thr = float(verify_bundle(champ_dir)["info"].get("threshold", 0.5))  # the manifest holds it: no model load
    champ_metric = classification_report(scored["label"].to_numpy(), scored["churn_probability"].to_numpy(), thr)[metric]
    better = (candidate_metric < champ_metric - margin) if metric in LOWER_IS_BETTER else \
        (candidate_metric > champ_metric + margin)
    decision.update(champion_version=version, champion=champ_metric, promoted=bool(better),
                    reason="beats champion" if better else "does not beat champion by the margin")
    return decision


def train(spark: SparkSession, cfg: Config, run_date: dt.date, version: Optional[int] = None,
          gate_enabled: bool = True) -> TrainResult:
    """The whole training run for ``run_date``; returns the MLflow run, registered version and gate decision."""
    import mlflow

    from .bundle import set_calibrator

    version = features_version(spark, cfg.features_path) if version is None else version
    key = f"{run_date.isoformat()}-fv{version}"
    t = cfg.training
    channels = channels_for(list(cfg.sources))
    T = cfg.sequence.n_buckets
    with step("training data", run_date=run_date, features_version=version) as info:
        splits = load_splits(spark, cfg, run_date, version)
        for df in splits.values():  # read by statistics, export, three models' scoring and the baselines' iterations
            df.persist(StorageLevel.MEMORY_AND_DISK)
        stats = compute_stats(splits["train"], channels, T, cfg.sequence.bucket_days)
        pos_rate = splits["train"].agg(F.mean("label")).first()[0]
        staging = cfg.path("staging", key)
        files = {s: export_split(splits[s], f"{staging}/{s}", max(t.num_proc * (4 if s == "train" else 1), 2))
                 for s in ("train", "validation")}
        from .distributed import assign_shards, shard_rows

        shards = {s: assign_shards(files[s], t.num_proc) for s in files}
        rows = {s: [shard_rows(x) for x in shards[s]] for s in shards}
        if min(rows["train"]) == 0 or min(rows["validation"]) == 0:
            raise TrainingError(f"not enough data for {t.num_proc} ranks: rows per rank {rows}")
        info.update(train_rows=sum(rows["train"]), validation_rows=sum(rows["validation"]), pos_rate=round(pos_rate, 4))
    pos_weight = (1 - pos_rate) / max(pos_rate, 1e-6) if t.class_weight else 1.0
    model_dir = cfg.path("models", "runs", key)
    args = {
        "training": t.model_dump(), "stats": stats.to_json(), "pos_weight": float(pos_weight),
        "train_files": shards["train"], "val_files": shards["validation"],
        "steps_per_epoch": max(1, min(rows["train"]) // t.batch_size),
        "validation_steps": max(1, min(rows["validation"]) // t.batch_size),
        "checkpoint_dir": str(Path(cfg.path("checkpoints", key)).resolve()),
        "model_dir": str(Path(model_dir).resolve()), "threads": 1,
    }
    with step("horovod training", ranks=t.num_proc, steps_per_epoch=args["steps_per_epoch"]) as info:
        ranks = run_horovod(spark, args, t.num_proc, t.timeout_s)
        info.update(epochs=ranks[0]["initial_epoch"] + ranks[0]["epochs_run"], resumed=ranks[0]["resumed"],
                    samples_per_s=[round(r["samples_per_s"], 1) for r in ranks])
    ref = ship_model(spark, model_dir, cfg.path("tmp", "ship"))  # uncalibrated bundle for evaluation
    with step("evaluation"):
        ev = evaluate_models(spark, cfg, splits, ref, channels)
    deep_thr = ev["validation"]["deep"]["threshold"]
    set_calibrator(model_dir, ev["calibrators"]["deep"], {"threshold": deep_thr, "run_date": run_date.isoformat(),
                                                          "features_version": version})
    candidate = ev["models"]["deep"][cfg.registry.gate_metric]
    decision = gate(spark, cfg, candidate, splits["test"]) if gate_enabled else {"promoted": False, "reason": "gate off"}

    plan = plan_for(cfg, run_date)
    metrics = {
        "run_date": run_date.isoformat(), "features_version": version, "model_name": cfg.registry.model_name,
        "snapshots": {s: [d.isoformat() for d, x in sorted(plan.items()) if x == s] for s in (*SPLITS, "score")},
        "models": ev["models"], "validation": ev["validation"], "gate": decision,
        "training": {"ranks": [{k: r[k] for k in ("rank", "host", "executor_id", "executor_cwd", "samples_per_s", "epochs_run",
                                                   "resumed", "weights_digest")} for r in ranks],
                     "samples_per_s_total": float(sum(r["samples_per_s"] for r in ranks)),
                     "epochs": ranks[0]["initial_epoch"] + ranks[0]["epochs_run"],
                     "history": ranks[0]["history"]},
    }
    run_dir = Path(cfg.path("runs", run_date.isoformat()))
    run_dir.mkdir(parents=True, exist_ok=True)
    with step("mlflow"):
        exp = registry.experiment_id(cfg)
        with mlflow.start_run(experiment_id=exp, run_name=f"weekly-{run_date}") as run:
            mlflow.log_params({f"training.{k}": v for k, v in t.model_dump().items()})
            mlflow.log_params({"run_date": run_date.isoformat(), "features_version": version,
                               "sequence.n_buckets": T, "sequence.bucket_days": cfg.sequence.bucket_days,
                               "channels": ",".join(channels), "snapshots.horizon_days": cfg.snapshots.horizon_days})
            for name, m in ev["models"].items():
                mlflow.log_metrics({f"{name}_test_{k}": float(v) for k, v in m.items() if _finite(v)})
            for name, m in ev["validation"].items():
                mlflow.log_metrics({f"{name}_val_{k}": float(v) for k, v in m.items()})
            for r in ranks:
                mlflow.log_metric(f"samples_per_s_rank{r['rank']}", float(r["samples_per_s"]))
            for i, loss in enumerate(ranks[0]["history"].get("val_loss", [])):
                mlflow.log_metric("val_loss", loss, step=i)
            mlflow.set_tag("features_table", str(Path(cfg.features_path).resolve()))
            mlflow.log_artifacts(model_dir, registry.ARTIFACT_PATH)
            metrics["run_id"] = run.info.run_id
            version_id = registry.register(cfg, run.info.run_id, tags={"run_date": run_date.isoformat()})
            metrics["model_version"] = version_id
            if decision.get("promoted"):
                registry.promote(cfg, version_id)
            mlflow.log_metrics({"gate_promoted": float(bool(decision.get("promoted")))})
            mlflow.set_tags({"gate_reason": decision.get("reason", ""), "model_version": version_id})
            ev["test_scores"].to_csv(run_dir / "test_scores.csv", index=False)
            (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=_json_default))
            mlflow.log_artifact(str(run_dir / "metrics.json"))
            mlflow.log_artifact(str(run_dir / "test_scores.csv"))
    LOG.info("trained version %s (promoted=%s): deep test %s=%.4f, lr_rfm %.4f, gbt %.4f", metrics["model_version"],
             decision.get("promoted"), cfg.registry.gate_metric, candidate,
             ev["models"]["lr_rfm"][cfg.registry.gate_metric], ev["models"]["gbt"][cfg.registry.gate_metric])
    for df in splits.values():
        df.unpersist()
    return TrainResult(run_id=metrics["run_id"], model_version=metrics["model_version"],
                       promoted=bool(decision.get("promoted")), metrics=metrics, model_dir=model_dir, ranks=ranks)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (dt.date, dt.datetime)):
        return o.isoformat()
    return str(o)


