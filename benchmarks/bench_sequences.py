"""Spark sequence builder vs the single-process pandas reference, on the same validated rows, in one run.

The reference is written for clarity (it is the correctness oracle), so the ratio mostly shows the cost of a naive
one-process implementation; Spark's absolute rows/s is the figure to watch as the lake grows.
"""

from __future__ import annotations

import argparse
import json

from common import RUN, config, ensure_lake, session, timed


def main(users: int = 1000) -> dict:
    from churn_spark.lake import ingest
    from churn_spark.reference import build_reference
    from churn_spark.sequences import build_from_config, plan_for

    cfg = config(users)
    spark = session(cfg)
    ensure_lake(spark, cfg, users)
    res = ingest(spark, cfg, "bench", RUN)
    pdfs = {k: v.toPandas() for k, v in res.tables.items()}
    rows_in = sum(len(v) for v in pdfs.values())
    spark_tables = {k: spark.createDataFrame(v).cache() for k, v in pdfs.items()}
    for v in spark_tables.values():
        v.count()
    build_from_config(spark, cfg, spark_tables, RUN).count()  # warm-up (JIT, codegen)
    n_spark, t_spark = timed(lambda: build_from_config(spark, cfg, spark_tables, RUN).count())
    ref_in = dict(pdfs)
    ref_in["users"] = ref_in["users"].rename(columns={"ts": "signup_ts"})
    ref_in["orders"] = ref_in["orders"].drop(columns=["order_id"], errors="ignore")
    s = cfg.sequence
    ref, t_ref = timed(
        build_reference,
        ref_in,
        plan_for(cfg, RUN),
        n_buckets=s.n_buckets,
        bucket_days=s.bucket_days,
        lookback_days=cfg.lookback_days,
        horizon_days=cfg.snapshots.horizon_days,
        as_of=RUN,
    )
    out = {
        "users": users,
        "input_rows": rows_in,
        "feature_rows": n_spark,
        "reference_rows": len(ref),
        "spark_s": round(t_spark, 2),
        "pandas_reference_s": round(t_ref, 2),
        "spark_rows_per_s": round(rows_in / t_spark),
        "reference_rows_per_s": round(rows_in / t_ref),
        "speedup_spark_vs_reference": round(t_ref / t_spark, 2),
    }
    spark.stop()
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=1000)
    print(json.dumps(main(p.parse_args().users), indent=1))
