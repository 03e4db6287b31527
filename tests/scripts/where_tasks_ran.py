"""Submitted by tests/test_cluster.py to a real standalone cluster: where did the tasks run, with what?

    where_tasks_ran.py RESULT_JSON N_EXECUTORS

Waits for N executors, runs two slot-holding tasks (so each lands on its own executor) that report host, cwd,
interpreter and where they imported churn_spark from, and dumps that with the session's relevant confs to
RESULT_JSON (that Delta works on the executors, the weekly job the test submits next shows). Any failure (e.g.
churn_spark not importable on an executor) fails the job, which the test reports with the submit log.
"""

import importlib
import json
import os
import socket
import sys
import time

from pyspark import TaskContext
from pyspark.sql import SparkSession

REGISTER_TIMEOUT_S = 120
HOLD_SLOT_S = 2  # long enough that the second task cannot reuse the first task's slot
CONFS = (
    "spark.pyspark.python",
    "spark.task.cpus",
    "spark.submit.pyFiles",
    "spark.dynamicAllocation.enabled",
    "spark.jars",
    "spark.sql.extensions",
    "spark.cores.max",
)


def where(rows):
    n = sum(1 for _ in rows)
    time.sleep(HOLD_SLOT_S)
    ctx = TaskContext.get()
    yield {
        "partition": ctx.partitionId(),
        "rows": n,
        "host": socket.gethostname(),
        "cwd": os.getcwd(),
        "pid": os.getpid(),
        "python": sys.executable,
        "churn_spark": importlib.import_module("churn_spark.config").__file__,
    }


def main(out: str, n_exec: int) -> None:
    spark = SparkSession.builder.getOrCreate()
    sc = spark.sparkContext
    deadline = time.time() + REGISTER_TIMEOUT_S
    while sc._jsc.sc().getExecutorMemoryStatus().size() - 1 < n_exec:  # minus the driver
        if time.time() > deadline:
            raise SystemExit("executors did not register in time")
        time.sleep(0.5)
    tasks = spark.range(0, 1000, 1, 2).rdd.mapPartitions(where).collect()
    conf = dict(sc.getConf().getAll())
    with open(out, "w") as f:
        json.dump(
            {
                "app_id": sc.applicationId,
                "master": sc.master,
                "tasks": tasks,
                "conf": {k: conf.get(k) for k in CONFS},
            },
            f,
            indent=1,
        )
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
