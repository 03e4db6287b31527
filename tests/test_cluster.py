"""The weekly job on a real Spark standalone cluster: 1 master + 2 workers as separate processes on 127.0.0.1,
submitted with deploy/submit.sh. Horovod's two ranks must run on executors of both workers."""
import datetime as dt
import json
import os
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from churn_spark.generator import LakeSpec, write_lake
from conftest import REPO, make_config
from standalone_cluster import standalone_cluster

pytestmark = pytest.mark.slow
RUN = dt.date(2026, 11, 2)


def test_weekly_job_on_a_standalone_cluster(spark, tmp_path):
    work = tmp_path / "work"
    cfg = make_config(work)
    write_lake(spark, LakeSpec(users=600, weeks=40, end_date=RUN, seed=8), cfg.lake_dir)
    python = str(REPO / ".venv" / "bin" / "python")
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "BUILD_DIR": str(tmp_path / "build"),
           "SPARK_SUBMIT_EXTRA": "--conf spark.ui.enabled=false --conf spark.driver.host=127.0.0.1"}
    for k in ("SPARK_CONF_DIR", "SPARK_HOME", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):
        env.pop(k, None)
    log = tmp_path / "submit.log"
    with standalone_cluster(n_workers=2, cores_per_worker=1, memory="3g", work_dir=tmp_path / "cluster",
                            python=python) as cluster:
        cmd = ["bash", str(REPO / "deploy" / "submit.sh"), "--master", cluster.url, "--python-env", "local",
               "--conf", "spark.cores.max=2", "--conf", "spark.executor.memory=1g",
               "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
               "--conf", "spark.scheduler.maxRegisteredResourcesWaitingTime=60s",
               "weekly", "--config", str(REPO / "conf" / "local.yaml"), "--run-date", RUN.isoformat(),
               "--set", f"work_dir={work}", "--set", "spark.conf.spark.sql.shuffle.partitions=4",
               "--set", "training.epochs=2", "--set", "training.gbt_max_iter=5", "--set", "snapshots.n_labelled=3"]
        rc = cluster.submit(cmd, env, tmp_path, log, timeout=900)
        assert rc == 0, f"weekly job failed (rc {rc})\n{log.read_text()[-8000:]}\n{cluster.log_tails(20)}"
        worker_dirs = {d.resolve() for d in cluster.worker_work_dirs}

    metrics = json.loads((work / "runs" / RUN.isoformat() / "metrics.json").read_text())
    ranks = metrics["training"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    # each rank ran under an executor whose working dir is <worker work dir>/<app id>/<executor id>
    assert {Path(r["executor_cwd"]).resolve().parent.parent for r in ranks} == worker_dirs, ranks
    assert len({r["executor_id"] for r in ranks}) == 2
    assert ranks[0]["weights_digest"] == ranks[1]["weights_digest"]
    runlog = json.loads((work / "runs" / RUN.isoformat() / "runlog.json").read_text())
    assert list(runlog["steps"]) == ["build_sequences", "train", "score", "report"]
    risk = spark.read.format("delta").load(str(work / "tables" / "churn_risk"))
    assert risk.where(F.col("snapshot_date") == F.lit(RUN)).count() == runlog["steps"]["score"]["users"] > 50
