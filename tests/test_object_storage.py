"""A bad ``work_dir`` on object storage: a real S3-compatible server (S3Proxy, filesystem backend) on 127.0.0.1,
jobs run as ``churn-spark`` processes exactly as a scheduler starts them. The server's backing directory is the
independent view of what the job wrote (nothing, here). The whole weekly job on S3, with a rank lost mid-training,
is ``tests/test_cluster.py`` (on a standalone cluster)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from s3_server import SECRET_KEY

RUN = dt.date(2026, 11, 2)
CLI = str(Path(sys.executable).parent / "churn-spark")


def _run(args: list, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.update(SPARK_LOCAL_IP="127.0.0.1")
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


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
