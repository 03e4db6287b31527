"""A real Spark standalone cluster: 1 master + 2 workers as separate processes on 127.0.0.1, submitted to with
deploy/submit.sh. A small script shows where tasks run and what they import; the weekly job shows Horovod's two
ranks running on executors of both workers. Needs Java and Maven Central (or a warm ~/.ivy2) for Delta."""

import datetime as dt
import json
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO, WEEKLY_SMALL
from pyspark.sql import functions as F
from reliability.faults import processes_with
from s3_server import SECRET_KEY, s3_server
from standalone_cluster import alive, standalone_cluster

from churn_spark import storage
from churn_spark.generator import LakeSpec, write_lake
from churn_spark.pipeline import STEPS

pytestmark = pytest.mark.slow
RUN = dt.date(2026, 11, 2)
PYTHON = str(REPO / ".venv" / "bin" / "python")
SUBMIT = REPO / "deploy" / "submit.sh"
WHERE_TASKS_RAN = REPO / "tests" / "scripts" / "where_tasks_ran.py"
# both workers' single cores, fixed executors, and no job before every executor registered
CLUSTER_CONFS = [
    "--conf",
    "spark.cores.max=2",
    "--conf",
    "spark.executor.memory=1g",
    "--conf",
    "spark.scheduler.minRegisteredResourcesRatio=1.0",
    "--conf",
    "spark.scheduler.maxRegisteredResourcesWaitingTime=60s",
]


def _submit_env(tmp_path: Path, **extra: str) -> dict:
    """A bare environment: submit.sh must work without SPARK_HOME / PYSPARK_* set; the zip stays out of the repo."""
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "BUILD_DIR": str(tmp_path / "build"),
        "SPARK_SUBMIT_EXTRA": "--conf spark.ui.enabled=false --conf spark.driver.host=127.0.0.1",
        **extra,
    }
    for k in ("SPARK_CONF_DIR", "SPARK_HOME", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):
        env.pop(k, None)
    return env


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _poll(fetch, timeout: float = 30):
    """``fetch()`` until it returns something truthy or ``timeout`` passes; its last result."""
    deadline = time.time() + timeout
    while True:
        got = fetch()
        if got or time.time() > deadline:
            return got
        time.sleep(1)


def _submit_cmd(cluster, *args: str) -> list:
    """deploy/submit.sh against the test cluster, with the venv shipped as is (--python-env local)."""
    return ["bash", str(SUBMIT), "--master", cluster.url, "--python-env", "local", *CLUSTER_CONFS, *args]


def _check_where_tasks_ran(cluster, tmp_path: Path) -> None:
    """A small script on the cluster: its two tasks run on executors of both workers, with the venv's interpreter
    and churn_spark from the shipped zip, under the confs submit.sh sets."""
    result_file = tmp_path / "where.json"
    log = tmp_path / "where.log"
    env = _submit_env(tmp_path, SUBMIT_APP=str(WHERE_TASKS_RAN))
    rc = cluster.submit(_submit_cmd(cluster, str(result_file), "2"), env, tmp_path, log, timeout=420)
    assert rc == 0, f"spark-submit failed (rc {rc})\n{log.read_text()[-6000:]}\n{cluster.log_tails(20)}"
    assert "submit.sh: running: " in log.read_text()  # submit.sh echoes the command it runs

    res = json.loads(result_file.read_text())
    app_id = res["app_id"]
    assert res["master"] == cluster.url
    assert res["conf"]["spark.pyspark.python"] == PYTHON
    assert res["conf"]["spark.task.cpus"] == "1" and res["conf"]["spark.dynamicAllocation.enabled"] == "false"
    assert "churn_spark.zip" in res["conf"]["spark.submit.pyFiles"]
    # client mode: spark-submit resolves --packages itself and hands the driver the jars as spark.jars, which
    # is also what the session factory checks before adding Delta on its own
    assert "io.delta_delta-spark_2.12-" in (res["conf"]["spark.jars"] or ""), res["conf"]

    tasks = res["tasks"]
    assert sorted(t["partition"] for t in tasks) == [0, 1] and sum(t["rows"] for t in tasks) == 1000
    assert all(t["python"] == PYTHON for t in tasks), tasks  # --python-env local: the venv's interpreter
    # --py-files: the executors import churn_spark from the shipped zip, not from the repo checkout
    assert all("churn_spark.zip" in t["churn_spark"] for t in tasks), tasks
    # an executor's cwd is <worker work dir>/<app id>/<executor id>: one task on each worker
    assert all(Path(t["cwd"]).parent.name == app_id for t in tasks), tasks
    task_workers = {Path(t["cwd"]).resolve().parent.parent for t in tasks}
    assert task_workers == {d.resolve() for d in cluster.worker_work_dirs}, tasks

    def executors_per_worker():
        per_worker = []
        for i in range(2):
            w = cluster.worker_json(i)
            per_worker.append([e for e in w["executors"] + w["finishedexecutors"] if e.get("appid") == app_id])
        return per_worker if all(per_worker) else None

    assert _poll(executors_per_worker), f"not both workers ran an executor of {app_id}"
    for d in cluster.worker_work_dirs:
        assert [p for p in (d / app_id).iterdir() if p.is_dir()], f"no executor dir under {d / app_id}"
    done = _poll(lambda: [a for a in cluster.master_json().get("completedapps", []) if a["id"] == app_id])
    assert done and done[0]["state"] == "FINISHED", done


def _kill_rank_1_after_a_checkpoint(root: Path, killed: list) -> None:
    """SIGKILL Horovod rank 1 once rank 0 has checkpointed an epoch to the bucket (seen in the server's files)."""
    deadline = time.time() + 600
    while time.time() < deadline and not killed:
        for state in root.glob("checkpoints/*/state.json"):
            try:
                epoch = json.loads(state.read_text())["epoch"]
            except (OSError, ValueError):
                continue
            if epoch >= 1:
                for pid in processes_with("horovod.spark.task.gloo_exec_fn", "HOROVOD_RANK=1"):
                    os.kill(pid, 9)
                    killed.append(time.time())
        time.sleep(0.1)


def test_weekly_on_a_standalone_cluster_with_work_dir_on_s3_survives_a_lost_rank(spark, tmp_path):
    """First a small script shows where the cluster runs tasks and what they import. Then the weekly job, with no
    shared directory: work_dir is a bucket on a real S3-compatible server, each worker has its own scratch.
    Rank 1 is killed after a checkpoint: the job fails fast with the retry code, and the rerun resumes from the
    checkpoint in the bucket, skips the finished build, reuses the staged training data, and leaves every output in
    the bucket."""
    with s3_server(tmp_path / "s3") as s3:
        name = f"cluster-{uuid.uuid4().hex[:8]}"  # a fresh driver-local MLflow store (keyed by work_dir)
        bucket = s3.make_bucket(name)
        work = f"{bucket}/work"
        root = s3.basedir / name / "work"  # the server's backing files: an independent view
        write_lake(spark, LakeSpec(users=350, weeks=40, end_date=RUN, seed=8, dirty=True), str(tmp_path / "lake"))
        storage.configure(storage.options_from_spark_conf(s3.hadoop_conf()))
        storage.upload_dir(str(tmp_path / "lake"), f"{work}/lake")
        # the survivor's Gloo collective gives up after 60 s instead of min(training.timeout_s, 300)
        env = _submit_env(tmp_path, HOROVOD_GLOO_TIMEOUT_SECONDS="60")
        logs = [tmp_path / "first.log", tmp_path / "second.log"]
        with standalone_cluster(
            n_workers=2, cores_per_worker=1, memory="3g", work_dir=tmp_path / "cluster", python=PYTHON
        ) as cluster:
            master_port = int(cluster.url.rsplit(":", 1)[1])
            _check_where_tasks_ran(cluster, tmp_path)
            sets = [
                f"work_dir={work}",
                "spark.conf.spark.sql.shuffle.partitions=2",  # one task per executor and stage
                *[x for x in WEEKLY_SMALL if not x.startswith(("training.epochs", "training.gbt_max_iter"))],
                "training.epochs=5",  # killed once epoch 2 is checkpointed (state epoch 1), the rerun trains 3-5
                "training.patience=5",
                "training.gbt_max_iter=3",
                "training.timeout_s=300",
                *s3.overrides(),
            ]
            cmd = _submit_cmd(
                cluster,
                "weekly",
                "--config",
                str(REPO / "conf" / "local.yaml"),
                "--run-date",
                RUN.isoformat(),
                *[x for s in sets for x in ("--set", s)],
            )
            killed: list = []
            threading.Thread(target=_kill_rank_1_after_a_checkpoint, args=(root, killed), daemon=True).start()
            rc = cluster.submit(cmd, env, tmp_path, logs[0], timeout=900)
            first = logs[0].read_text()
            assert killed, f"{first[-6000:]}\n{cluster.log_tails(20)}"
            assert time.time() - killed[0] < 150  # failed at the Gloo timeout: did not hang until the watchdog
            assert rc == 3 and "rerun" in first, f"rc {rc}\n{first[-6000:]}"
            assert (root / "tables/features/_delta_log").is_dir()  # the completed step stayed

            rc = cluster.submit(cmd, env, tmp_path, logs[1], timeout=900)
            second = logs[1].read_text()
            assert rc == 0, f"weekly rerun failed (rc {rc})\n{second[-8000:]}\n{cluster.log_tails(20)}"
            assert "step build_sequences for 2026-11-02 already done" in second
            assert "reusing the training data staged in s3a://" in second  # the first attempt's shards and stats
            worker_dirs = {d.resolve() for d in cluster.worker_work_dirs}
            pids = cluster.pids()
            assert len(pids) >= 3  # master + 2 workers
        _poll(lambda: not any(alive(p) for p in pids), timeout=15)
        assert not [p for p in pids if alive(p)], "cluster processes survived the context manager"
        assert not _port_open(master_port), "the master still listens"

        run_dir = root / "runs" / RUN.isoformat()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        ranks = metrics["training"]["ranks"]
        assert [r["rank"] for r in ranks] == [0, 1]
        assert all(r["resumed"] for r in ranks)  # from the checkpoint in the bucket
        assert metrics["training"]["staged"] == "reused"
        assert not list((root / "staging").rglob("*.parquet"))  # deleted once the model was registered
        # each rank ran under an executor whose working dir is <worker work dir>/<app id>/<executor id>
        assert {Path(r["executor_cwd"]).resolve().parent.parent for r in ranks} == worker_dirs, ranks
        assert len({r["executor_id"] for r in ranks}) == 2
        assert ranks[0]["weights_digest"] == ranks[1]["weights_digest"]
        runlog = json.loads((run_dir / "runlog.json").read_text())
        assert list(runlog["steps"]) == list(STEPS)
        for f in ("report.html", "test_scores.csv"):
            assert (run_dir / f).is_file(), f
        for table in ("features", "churn_risk", "quarantine"):
            assert (root / "tables" / table / "_delta_log").is_dir(), table
        assert any(p.name == "manifest.json" for p in (root / "mlflow" / "artifacts").rglob("*"))
        assert list((root / "checkpoints").rglob("weights.h5"))
        risk = spark.read.format("delta").load(str(root / "tables" / "churn_risk"))
        assert risk.where(F.col("snapshot_date") == F.lit(RUN)).count() == runlog["steps"]["score"]["users"] > 50

        # the SQLite tracking store stays on the driver, and the log says where
        scratch = Path(storage.scratch_dir(work))
        assert (scratch / "mlflow" / "mlflow.db").is_file()
        assert str(scratch / "mlflow" / "mlflow.db") in second
        assert not (tmp_path / "s3a:").exists() and not (REPO / "s3a:").exists()
        # the secret key is in none of the outputs
        for text in (first, second):
            assert SECRET_KEY not in text
        for f in [*s3.objects(), *(p for p in scratch.rglob("*") if p.is_file())]:
            assert SECRET_KEY.encode() not in f.read_bytes(), f
        shutil.rmtree(scratch, ignore_errors=True)
