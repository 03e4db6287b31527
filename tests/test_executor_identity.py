"""distributed.executor_identity without Spark: a process whose command line looks like an executor (or driver)
JVM starts a Python child, which must find that ancestor's id and working directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHILD = "import json; from churn_spark.distributed import executor_identity; print(json.dumps(executor_identity()))"
# The fake JVM: argv[0] is "java" (Popen's executable= keeps the real interpreter). Python then looks for its
# standard library next to the java on PATH, so it sticks to builtins (os, sys): fork, run CHILD with the venv's
# Python, pass its exit code on.
FAKE_JVM = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.argv[1], [sys.argv[1], '-c', sys.argv[2]])\n"
    "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))"
)


def _identity_under(cwd, *jvm_args: str) -> dict:
    out = subprocess.run(
        ["java", "-c", FAKE_JVM, sys.executable, CHILD, *jvm_args],
        executable=sys.executable,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize(
    "jvm_args, executor_id",
    [
        (["org.apache.spark.executor.CoarseGrainedExecutorBackend", "--driver-url", "x", "--executor-id", "7"], "7"),
        (["org.apache.spark.deploy.SparkSubmit", "--master", "local[2]"], "driver"),
    ],
)
def test_finds_the_jvm_ancestor(tmp_path, jvm_args, executor_id):
    got = _identity_under(tmp_path, *jvm_args)
    assert got == {"executor_id": executor_id, "executor_cwd": str(tmp_path.resolve())}


def test_unknown_without_a_spark_jvm_ancestor(tmp_path):
    assert _identity_under(tmp_path, "org.example.NotSpark") == {"executor_id": "unknown", "executor_cwd": ""}
