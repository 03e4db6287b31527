"""Horovod scaling: the same training data and model on 1 rank and on N ranks (Gloo), in one run.

Reports global samples/s (sum over ranks) and the device each rank trained on. On CPU (the default) each rank gets
one core (TF pinned to 1 thread): on a 2-core machine the ideal ratio for 2 ranks is 2.0; data feeding, allreduce
and Spark's own share of the cores take their part. With ``--gpu`` (``benchmarks/gpu_check.sh``) each rank takes
its own GPU and TF keeps its default threads.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from common import RUN, config, ensure_lake, session


def main(users: int = 3000, epochs: int = 6, batch_size: int = 512, ranks: int = 2, gpu: bool = False) -> dict:
    from churn_spark.distributed import balanced_shards
    from churn_spark.feature_spec import channels_for
    from churn_spark.pipeline import build_sequences
    from churn_spark.preprocess import compute_stats
    from churn_spark.staging import export_split
    from churn_spark.train import features_version, load_splits, run_horovod

    cfg = config(users, f"training.epochs={epochs}", "training.patience=100", f"training.batch_size={batch_size}")
    spark = session(cfg)
    ensure_lake(spark, cfg, users)
    if not Path(cfg.features_path, "_delta_log").is_dir():
        build_sequences(spark, cfg, RUN)
    splits = load_splits(spark, cfg, RUN, features_version(spark, cfg.features_path))
    stats = compute_stats(
        splits["train"], channels_for(list(cfg.sources)), cfg.sequence.n_buckets, cfg.sequence.bucket_days
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-ranks-"))
    files = {s: export_split(splits[s], str(tmp / s), 8) for s in ("train", "validation")}
    out = {"users": users, "epochs": epochs, "batch_size": cfg.training.batch_size}
    for n in (1, ranks):
        shards, rows = {}, {}
        for s in files:
            shards[s], rows[s] = balanced_shards(files[s], n)
        # the same number of samples per epoch in both runs: global batch = batch * ranks
        steps = max(1, sum(rows["train"]) // (cfg.training.batch_size * n))
        args = {
            "training": cfg.training.model_dump(),
            "stats": stats.to_json(),
            "pos_weight": 2.0,
            "train_files": shards["train"],
            "val_files": shards["validation"],
            "steps_per_epoch": steps,
            "validation_steps": max(1, min(rows["validation"]) // cfg.training.batch_size),
            "checkpoint_dir": str(tmp / f"ckpt-{n}"),
            "model_dir": str(tmp / f"model-{n}"),
            "threads": None if gpu else 1,  # a GPU rank keeps TF's own thread pools for feeding
        }
        result = run_horovod(spark, args, n, 1800)
        out[f"ranks_{n}_samples_per_s"] = round(sum(r["samples_per_s"] for r in result), 1)
        out[f"ranks_{n}_train_rows"] = sum(rows["train"])
        out[f"ranks_{n}_devices"] = [r.get("device") for r in result]
    out[f"speedup_{ranks}_vs_1"] = round(out[f"ranks_{ranks}_samples_per_s"] / out["ranks_1_samples_per_s"], 2)
    shutil.rmtree(tmp, ignore_errors=True)
    spark.stop()
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--ranks", type=int, default=2, help="N: compared with 1 rank")
    p.add_argument("--gpu", action="store_true", help="one GPU per rank (benchmarks/gpu_check.sh)")
    a = p.parse_args()
    print(json.dumps(main(a.users, a.epochs, a.batch_size, a.ranks, a.gpu), indent=1))
