"""Training run: temporal splits, Horovod-on-Spark training of the CNN+RNN, baselines, calibration, MLflow, gate.

Temporal protocol: train on the older labelled snapshots, early-stop on the validation snapshot, report on the
test snapshot (the latest labelled one, never seen in training; the snapshot plan keeps their label windows
disjoint). Every model — deep and baselines — is calibrated on validation and measured on the same test rows; the
champion is re-scored on those rows too before the gate decides (``gate``). Too little labelled data is a refusal.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import registry, search, storage
from .bundle import local_copy, verify_bundle
from .calibration import Calibrator
from .config import Config
from .delta_util import latest_version
from .errors import BadInput, Transient
from .evaluation import evaluate_models
from .feature_spec import channels_for
from .logs import LOG, step
from .mlflow_model import save_pyfunc
from .predict import ship_model
from .run_metrics import write_metrics
from .sequences import plan_for
from .staging import discard, stage

SPLITS = ("train", "validation", "test")
# Horovod bounds inside training.timeout_s: a Gloo collective that waits longer than this means a lost peer, and
# ranks that have not all started by then will not start (both fail the step instead of hanging it)
GLOO_TIMEOUT_CAP_S = 300
START_TIMEOUT_CAP_S = 600


class TrainingError(RuntimeError):
    """Training failed (a lost rank or a timeout: worth a retry; see NotEnoughData for bad input)."""


class NotEnoughData(TrainingError, BadInput):
    """Too little labelled data, or snapshots missing from the feature table: a clear refusal (exit 2)."""


class RanksFailed(TrainingError, Transient):
    """A Horovod rank failed or the run timed out: a rerun resumes from the rank-0 checkpoint (exit 3)."""


@dataclass
class TrainResult:
    run_id: str
    model_version: str
    metrics: dict
    model_dir: str
    ranks: List[dict] = field(default_factory=list)


# training settings that do not change the network's weights (a checkpoint stays valid when only these change)
_NOT_WEIGHTS = {
    "timeout_s",
    "gbt_max_iter",
    "gbt_max_depth",
    "calibration",
    "max_eval_rows",
    "min_users_per_split",
    "min_positives_per_split",
    "min_negatives_per_split",
    "calibration_folds",
    "blend",
    "search",
}


def weights_key(training: dict) -> str:
    """Short digest of the settings the weights depend on: a checkpoint is only reused by the same settings."""
    relevant = {k: v for k, v in sorted(training.items()) if k not in _NOT_WEIGHTS}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:10]


def check_enough_data(counts: Dict[str, dict], t) -> None:
    """Refuse to train (clear error, exit 2) when any split has too few users, positives or negatives."""
    problems = []
    for split in SPLITS:
        c = counts.get(split, {"users": 0, "positives": 0})
        neg = c["users"] - c["positives"]
        for what, have, need, key in (
            ("labelled users", c["users"], t.min_users_per_split, "min_users_per_split"),
            ("churners", c["positives"], t.min_positives_per_split, "min_positives_per_split"),
            ("non-churners", neg, t.min_negatives_per_split, "min_negatives_per_split"),
        ):
            if have < need:
                problems.append(f"{split} has {have} {what} < training.{key}={need}")
    if problems:
        raise NotEnoughData(
            "too little labelled data to train and evaluate a model: "
            + "; ".join(problems)
            + " (a longer history, a shorter horizon or smaller minimums in the config)"
        )


def load_splits(spark: SparkSession, cfg: Config, run_date: dt.date, version: int) -> Dict[str, DataFrame]:
    """The run's labelled snapshots from the feature table (at ``version``), split by the run's own plan."""
    return _splits_and_counts(spark, cfg, run_date, version)[0]


def _splits_and_counts(spark: SparkSession, cfg: Config, run_date: dt.date, version: int):
    """The splits and, from the same single job that checks every planned snapshot is there, each split's users
    and positives."""
    plan = {d: s for d, s in plan_for(cfg, run_date).items() if s != "score"}
    feats = spark.read.format("delta").option("versionAsOf", version).load(cfg.features_path)
    split = F.create_map(*[x for d, s in plan.items() for x in (F.lit(d), F.lit(s))])
    df = feats.where(F.col("snapshot_date").isin(list(plan))).withColumn("split", split[F.col("snapshot_date")])
    found = {
        r["snapshot_date"]: (int(r["n"]), int(r["positives"] or 0))
        for r in df.groupBy("snapshot_date").agg(F.count("*").alias("n"), F.sum("label").alias("positives")).collect()
    }
    missing = sorted(set(plan) - set(found))
    if missing:
        raise NotEnoughData(
            f"feature table {cfg.features_path} (version {version}) has no rows for snapshots "
            f"{[d.isoformat() for d in missing]}: run build_sequences for {run_date} first"
        )
    counts = {
        s: {
            "users": sum(n for d, (n, _) in found.items() if plan[d] == s),
            "positives": sum(p for d, (_, p) in found.items() if plan[d] == s),
        }
        for s in SPLITS
    }
    return {s: df.where(F.col("split") == s) for s in SPLITS}, counts


def run_horovod(spark: SparkSession, args: dict, num_proc: int, timeout_s: int) -> List[dict]:
    """``horovod.spark.run`` with a hard bound: a lost rank fails the job instead of hanging it.

    ``args`` carries the storage settings (secrets): it goes to the ranks only, never into a log or MLflow."""
    import os

    import horovod.spark

    from .distributed import clear_rank_errors, rank_errors, rank_main

    env = dict(os.environ)
    env.setdefault("HOROVOD_GLOO_TIMEOUT_SECONDS", str(min(timeout_s, GLOO_TIMEOUT_CAP_S)))
    timed_out = threading.Event()

    def watchdog():  # horovod must run on the main thread, so the bound is enforced from here
        timed_out.set()
        LOG.error("training exceeded training.timeout_s=%ss: cancelling the Horovod Spark job", timeout_s)
        spark.sparkContext.cancelAllJobs()

    err_dir = storage.join(args["checkpoint_dir"], "errors")
    clear_rank_errors(args["checkpoint_dir"])
    timer = threading.Timer(timeout_s, watchdog)
    timer.daemon = True
    timer.start()
    try:
        results = horovod.spark.run(
            rank_main,
            args=(args,),
            num_proc=num_proc,
            use_gloo=True,
            env=env,
            start_timeout=min(timeout_s, START_TIMEOUT_CAP_S),
            verbose=0,
        )
    except Exception as e:
        if timed_out.is_set():
            raise RanksFailed(
                f"Horovod training did not finish within training.timeout_s={timeout_s}s "
                f"(a rank or worker was lost?); rerun to resume from the rank-0 checkpoint"
            ) from e
        errors = rank_errors(args["checkpoint_dir"])
        raise RanksFailed(
            f"Horovod training failed on {num_proc} ranks: {errors or str(e).splitlines()[0]}; "
            f"rerun to resume from the rank-0 checkpoint (tracebacks in {err_dir})"
        ) from e
    finally:
        timer.cancel()
    return sorted(results, key=lambda r: r["rank"])


def train(spark: SparkSession, cfg: Config, run_date: dt.date, version: Optional[int] = None) -> TrainResult:
    """The whole training run for ``run_date``; returns the MLflow run and the registered (challenger) version."""
    import mlflow

    from .bundle import set_calibrator

    version = latest_version(spark, cfg.features_path) if version is None else version
    key = f"{run_date.isoformat()}-fv{version}"
    t = cfg.training
    channels = channels_for(list(cfg.sources))
    T = cfg.sequence.n_buckets
    with step("training data", run_date=run_date, features_version=version) as info:
        splits, counts = _splits_and_counts(spark, cfg, run_date, version)
        for df in splits.values():  # read by statistics, export, three models' scoring and the baselines' iterations
            df.persist(StorageLevel.MEMORY_AND_DISK)
        info.update(counts=counts)
        check_enough_data(counts, t)
        staged = stage(cfg, run_date, version, splits)
        stats, shards, rows = staged.stats, staged.shards, staged.rows
        info.update(btyd=stats.btyd_fit, staged=staged.how)
        pos_rate = counts["train"]["positives"] / counts["train"]["users"]
        if min(rows["train"]) == 0 or min(rows["validation"]) == 0:
            raise NotEnoughData(f"not enough data for {t.num_proc} ranks: rows per rank {rows}")
        info.update(train_rows=sum(rows["train"]), validation_rows=sum(rows["validation"]), pos_rate=round(pos_rate, 4))
    from .distributed import STORAGE_ARG

    done = []
    for trial in search.trials(t):  # trial 0 = the configured settings; more only with training.search
        ti = trial.settings
        trial.model_dir = cfg.path("models", "runs", key if trial.index == 0 else f"{key}-t{trial.index}")
        args = {
            "training": ti.model_dump(),
            "stats": stats.to_json(),
            "pos_weight": float((1 - pos_rate) / max(pos_rate, 1e-6) if ti.class_weight else 1.0),
            "train_files": shards["train"],
            "val_files": shards["validation"],
            "steps_per_epoch": max(1, min(rows["train"]) // ti.batch_size),
            "validation_steps": max(1, min(rows["validation"]) // ti.batch_size),
            "checkpoint_dir": storage.absolute(cfg.path("checkpoints", f"{key}-w{weights_key(ti.model_dump())}")),
            "model_dir": storage.absolute(trial.model_dir),
            "threads": 1,
            STORAGE_ARG: storage.options(),  # secrets: applied in the ranks, never logged
        }
        with step("horovod training", trial=trial.index, ranks=t.num_proc, steps=args["steps_per_epoch"]) as info:
            trial.ranks = run_horovod(spark, args, t.num_proc, t.timeout_s)
            info.update(
                epochs=trial.ranks[0]["initial_epoch"] + trial.ranks[0]["epochs_run"],
                resumed=trial.ranks[0]["resumed"],
                samples_per_s=[round(r["samples_per_s"], 1) for r in trial.ranks],
            )
        if t.search:
            with step("search trial validation", trial=trial.index, overrides=trial.overrides) as info:
                search.validate(spark, cfg, trial, splits["validation"])
                info.update(trial.quality)
        done.append(trial)
    chosen = search.best(done)
    model_dir, ranks = chosen.model_dir, chosen.ranks
    ref = chosen.ref or ship_model(spark, model_dir, cfg.path("tmp", "ship"))  # uncalibrated bundle for evaluation
    with step("evaluation"):
        ev = evaluate_models(cfg, splits, ref, channels, chosen.validation_scores)
    shipped = ev["shipped"]  # the calibrated network, or its blend with lr_rfm when that won on validation
    digest = set_calibrator(
        model_dir,
        ev["calibrators"]["deep"] if shipped == "deep" else Calibrator(blend=ev["blend_model"].to_dict()),
        {
            "threshold": ev["validation"][shipped]["threshold"],
            "run_date": run_date.isoformat(),
            "features_version": version,
            "shipped_model": shipped,
        },
    )
    trained_with = verify_bundle(model_dir)["info"].get("training", t.model_dump())

    plan = plan_for(cfg, run_date)
    metrics = {
        "run_date": run_date.isoformat(),
        "features_version": version,
        "model_name": cfg.registry.model_name,
        "snapshots": {s: [d.isoformat() for d, x in sorted(plan.items()) if x == s] for s in (*SPLITS, "score")},
        "models": ev["models"],
        "shipped_model": shipped,
        "model_selection": {
            "blend": ev.get("blend"),
            "btyd": stats.btyd_fit,
            "search": search.summary(done, chosen) if t.search else None,
        },
        "validation": ev["validation"],
        "tiers": ev["tiers"],
        "snapshot_plan_rule": "test = R-H, validation = R-2H, train = R-3H - j*step: label windows do not overlap",
        "training": {
            "ranks": [
                {
                    k: r[k]
                    for k in (
                        "rank",
                        "host",
                        "executor_id",
                        "executor_cwd",
                        "samples_per_s",
                        "epochs_run",
                        "resumed",
                        "weights_digest",
                    )
                }
                for r in ranks
            ],
            "samples_per_s_total": float(sum(r["samples_per_s"] for r in ranks)),
            "epochs": ranks[0]["initial_epoch"] + ranks[0]["epochs_run"],
            "history": ranks[0]["history"],
            "staged": staged.how,
        },
    }
    run_dir = cfg.path("runs", run_date.isoformat())
    # MLflow logs artifacts from local files: a remote run dir is written locally first, then uploaded
    local_run = Path(
        storage.local_path(run_dir) if storage.is_local(run_dir) else storage.scratch_dir(cfg.work_dir, "runs", key)
    )
    local_run.mkdir(parents=True, exist_ok=True)
    with step("mlflow"):
        exp = registry.experiment_id(cfg)
        with mlflow.start_run(experiment_id=exp, run_name=f"weekly-{run_date}") as run:
            mlflow.log_params({f"training.{k}": v for k, v in trained_with.items()})  # what the weights saw
            mlflow.log_params(
                {
                    "run_date": run_date.isoformat(),
                    "features_version": version,
                    "sequence.n_buckets": T,
                    "sequence.bucket_days": cfg.sequence.bucket_days,
                    "channels": ",".join(channels),
                    "snapshots.horizon_days": cfg.snapshots.horizon_days,
                    "shipped_model": shipped,
                }
            )
            for name, m in ev["models"].items():
                mlflow.log_metrics({f"{name}_test_{k}": float(v) for k, v in m.items() if _finite(v)})
            for name, m in ev["validation"].items():
                mlflow.log_metrics({f"{name}_val_{k}": float(v) for k, v in m.items()})
            for r in ranks:
                mlflow.log_metric(f"samples_per_s_rank{r['rank']}", float(r["samples_per_s"]))
            for i, loss in enumerate(ranks[0]["history"].get("val_loss", [])):
                mlflow.log_metric("val_loss", loss, step=i)
            mlflow.set_tag("features_table", storage.absolute(cfg.features_path))
            if t.search:
                search.log_trials(done, chosen, exp)
            pyfunc_dir = save_pyfunc(  # a real MLflow Model, no pickle (built from a verified local copy)
                local_copy(model_dir), str(Path(storage.scratch_dir(cfg.work_dir, "tmp", "pyfunc"), key))
            )
            mlflow.log_artifacts(pyfunc_dir, registry.ARTIFACT_PATH)
            metrics["run_id"] = run.info.run_id
            version_id = registry.register(
                cfg,
                run.info.run_id,
                tags={"run_date": run_date.isoformat(), "bundle_digest": digest, "features_version": str(version)},
            )
            metrics["model_version"] = version_id
            mlflow.set_tags({"model_version": version_id})
            ev["test_scores"].to_csv(local_run / "test_scores.csv", index=False)
            metrics = write_metrics(local_run / "metrics.json", metrics)  # validated against the shared schema
            if not storage.is_local(run_dir):
                for name in ("test_scores.csv", "metrics.json"):  # metrics last: readers look for it
                    storage.write_bytes(storage.join(run_dir, name), (local_run / name).read_bytes())
            mlflow.log_artifact(str(local_run / "metrics.json"))
            mlflow.log_artifact(str(local_run / "test_scores.csv"))
    LOG.info(
        "trained challenger version %s (ships %s): test %s=%.4f, lr_rfm %.4f, gbt %.4f",
        metrics["model_version"],
        shipped,
        cfg.registry.gate_metric,
        ev["models"][shipped][cfg.registry.gate_metric],
        ev["models"]["lr_rfm"][cfg.registry.gate_metric],
        ev["models"]["gbt"][cfg.registry.gate_metric],
    )
    for df in splits.values():
        df.unpersist()
    discard(staged)
    return TrainResult(
        run_id=metrics["run_id"],
        model_version=metrics["model_version"],
        metrics=metrics,
        model_dir=model_dir,
        ranks=ranks,
    )


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
