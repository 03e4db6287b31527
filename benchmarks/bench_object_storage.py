"""The weekly job with work_dir on local disk vs on a loopback S3-compatible server (S3Proxy), in one run.

    .venv/bin/python benchmarks/bench_object_storage.py [--users 6000]

Both runs are ``churn-spark weekly`` processes on the same generated lake (written once, uploaded to the bucket as
files), the local profile, the same settings; the ratio is what object storage costs on one box (the loopback
server is fast, so on a real store the network adds to it). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, RUN, config, ensure_lake, session

sys.path.insert(0, str(REPO / "tests"))
from s3_server import s3_server  # noqa: E402 - the same server the tests use

CLI = str(Path(sys.executable).parent / "churn-spark")


def weekly(work_dir: str, extra: list) -> float:
    sets = [f"work_dir={work_dir}", "spark.log_level=ERROR", *extra]
    cmd = [CLI, "weekly", "--config", str(REPO / "conf" / "local.yaml"), "--run-date", RUN.isoformat()]
    cmd += [x for s in sets for x in ("--set", s)]
    t0 = time.perf_counter()
    done = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYSPARK_PYTHON": sys.executable}
    )
    if done.returncode != 0:
        sys.exit(f"weekly on {work_dir} failed (rc {done.returncode}):\n{done.stderr[-4000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=6000)
    users = ap.parse_args().users
    from churn_spark import storage

    cfg = config(users)
    spark = session(cfg)
    ensure_lake(spark, cfg, users)
    spark.stop()
    tmp = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    try:
        local_work = tmp / "local-work"
        shutil.copytree(cfg.lake_dir, local_work / "lake")
        local_s = weekly(str(local_work), [])
        with s3_server(tmp) as s3:
            bucket = s3.make_bucket("bench")
            storage.configure(storage.options_from_spark_conf(s3.hadoop_conf()))
            storage.upload_dir(cfg.lake_dir, f"{bucket}/work/lake")
            s3_s = weekly(f"{bucket}/work", s3.overrides())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        json.dumps(
            {
                "users": users,
                "weekly_local_s": round(local_s, 1),
                "weekly_s3_loopback_s": round(s3_s, 1),
                "s3_over_local": round(s3_s / local_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
