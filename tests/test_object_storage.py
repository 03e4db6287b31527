"""The weekly job with ``work_dir`` on object storage: a real S3-compatible server (S3Proxy, filesystem backend) on
127.0.0.1, ``work_dir=s3a://…``, jobs run as ``churn-spark`` processes exactly as a scheduler starts them.

The server's backing directory (one folder per bucket, one file per object) is the independent view of what the job
wrote: the assertions read it, not the job's own storage layer.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO, WEEKLY_SMALL
from reliability.faults import processes_with
from s3_server import SECRET_KEY

from churn_spark import storage
from churn_spark.generator import LakeSpec, write_lake
from churn_spark.pipeline import STEPS

RUN = dt.date(2026, 11, 2)
CLI = str(Path(sys.executable).parent / "churn-spark")


def _run(args: list, timeout: float = 900, killer=None, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.update(SPARK_LOCAL_IP="127.0.0.1", **(env_extra or {}))
    proc = subprocess.Popen([CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    if killer:
        threading.Thread(target=killer, daemon=True).start()
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _common(work_dir: str, s3, secret: str | None = None) -> list:
    sets = [f"work_dir={work_dir}", *s3.overrides(secret)]
    return ["--config", str(REPO / "conf" / "local.yaml"), *[x for s in sets for x in ("--set", s)]]


@pytest.mark.parametrize(
    "case, code, words",
    [
        ("missing bucket", 2, ["does not exist"]),
        ("wrong credentials", 2, ["cannot be used"]),
        ("unreachable endpoint", 3, ["cannot be used"]),
    ],
)
def test_a_bad_location_fails_in_seconds_naming_the_uri_and_key(s3, case, code, words):
    bucket = s3.make_bucket("bad-input")
    work, secret, extra = f"{bucket}/work", None, []
    if case == "missing bucket":
        work = "s3a://no-such-bucket/work"
    elif case == "wrong credentials":
        secret = "not-the-secret"
    else:
        extra = ["--set", "spark.conf.spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:9"]  # nothing listens there
    t0 = time.time()
    done = _run(["build-sequences", *_common(work, s3, secret), *extra, "--run-date", RUN.isoformat()], timeout=120)
    took = time.time() - t0
    assert done.returncode == code, done.stderr[-3000:]
    assert "key 'work_dir'" in done.stderr and work in done.stderr, done.stderr[-3000:]
    assert all(w in done.stderr for w in words), done.stderr[-3000:]
    assert took < 30, took  # no JVM started, bounded retries
    assert not list((s3.basedir / "bad-input").rglob("*"))  # nothing partial
    assert SECRET_KEY not in done.stdout + done.stderr


@pytest.mark.slow
def test_weekly_on_s3_survives_a_lost_rank_and_leaves_everything_in_the_bucket(spark, s3, tmp_path):
    name = f"churn-e2e-{uuid.uuid4().hex[:8]}"  # the driver-local MLflow store is keyed by work_dir: a new one
    bucket, root = s3.make_bucket(name), s3.basedir / name
    # the lake: written by the suite's Spark and uploaded as plain files (a Delta table is its files)
    write_lake(spark, LakeSpec(users=400, weeks=40, end_date=RUN, seed=5, dirty=True), str(tmp_path / "lake"))
    storage.configure(storage.options_from_spark_conf(s3.hadoop_conf()))
    storage.upload_dir(str(tmp_path / "lake"), f"{bucket}/work/lake")
    work = f"{bucket}/work"
    small = [x for s in WEEKLY_SMALL if not s.startswith("training.epochs") for x in ("--set", s)]
    args = ["weekly", *_common(work, s3), *small, "--run-date", RUN.isoformat()]
    args += ["--set", "training.epochs=8", "--set", "training.patience=8", "--set", "training.timeout_s=300"]
    # the survivor's Gloo collective gives up after 60 s instead of min(timeout_s, 300): the lost peer is noticed by
    # Gloo, not by the training.timeout_s watchdog (which bounds the whole training of both runs, so it stays 300 s)
    gloo = {"HOROVOD_GLOO_TIMEOUT_SECONDS": "60"}

    killed = []

    def kill_rank_1_after_a_checkpoint():
        deadline = time.time() + 600
        while time.time() < deadline and not killed:
            for state in root.glob("work/checkpoints/*/state.json"):
                try:
                    epoch = json.loads(state.read_text())["epoch"]
                except (OSError, ValueError):
                    continue
                if epoch >= 1:
                    for pid in processes_with("horovod.spark.task.gloo_exec_fn", "HOROVOD_RANK=1"):
                        os.kill(pid, 9)
                        killed.append(time.time())
            time.sleep(0.1)

    first = _run(args, killer=kill_rank_1_after_a_checkpoint, env_extra=gloo)
    assert killed, first.stderr[-4000:]
    assert time.time() - killed[0] < 150  # failed at the Gloo timeout: did not hang until the watchdog
    assert first.returncode == 3 and "rerun" in first.stderr, first.stderr[-4000:]
    assert (root / "work/tables/features/_delta_log").is_dir()  # the completed step stayed

    second = _run(args, env_extra=gloo)
    assert second.returncode == 0, second.stderr[-6000:]
    assert "step build_sequences for 2026-11-02 already done" in second.stderr

    run_dir = root / "work" / "runs" / RUN.isoformat()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(r["resumed"] for r in metrics["training"]["ranks"])  # from the checkpoint in the bucket
    assert metrics["training"]["ranks"][0]["weights_digest"] == metrics["training"]["ranks"][1]["weights_digest"]
    runlog = json.loads((run_dir / "runlog.json").read_text())
    assert list(runlog["steps"]) == list(STEPS)
    for f in ("report.html", "test_scores.csv"):
        assert (run_dir / f).is_file(), f
    for table in ("features", "churn_risk", "quarantine"):
        assert (root / "work" / "tables" / table / "_delta_log").is_dir(), table
    assert any(p.name == "manifest.json" for p in (root / "work" / "mlflow" / "artifacts").rglob("*"))
    assert list((root / "work" / "checkpoints").rglob("weights.h5"))
    risk = spark.read.format("delta").load(str(root / "work" / "tables" / "churn_risk"))
    assert risk.where(f"snapshot_date = '{RUN}'").count() == runlog["steps"]["score"]["users"] > 50

    # the SQLite tracking store stays on the driver, and the log says where
    scratch = Path(storage.scratch_dir(work))
    assert (scratch / "mlflow" / "mlflow.db").is_file()
    assert str(scratch / "mlflow" / "mlflow.db") in second.stderr
    assert not (REPO / "s3a:").exists()
    # the secret key is in none of the outputs
    for text in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert SECRET_KEY not in text
    for f in [*s3.objects(), *(p for p in scratch.rglob("*") if p.is_file())]:
        assert SECRET_KEY.encode() not in f.read_bytes(), f
    shutil.rmtree(scratch, ignore_errors=True)
