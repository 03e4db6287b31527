"""A run lock that works wherever Delta works (local disk or object storage): one row per lock in a Delta table.

Two ``weekly`` runs over the same ``work_dir`` at once (an overlapping schedule, a manual rerun) would race on the
same tables. Taking the lock is a Delta ``MERGE`` that inserts the lock row, or takes it over when it is released
or stale; Delta's optimistic concurrency lets exactly one of two concurrent MERGEs commit. The winner refreshes a
heartbeat while it runs; a lock whose heartbeat is older than ``lock.stale_after_s`` (a crashed driver) is taken
over. The loser fails at once with :class:`RunLocked` naming the owner (exit code 3: retry later).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from .errors import Transient
from .logs import LOG

SCHEMA = "name string, owner string, host string, pid long, acquired_at double, heartbeat_at double, released boolean"


class RunLocked(RuntimeError, Transient):
    """Another run holds the lock (exit 3: retry later)."""


def _table(spark, path: str):
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        try:
            spark.createDataFrame([], SCHEMA).write.format("delta").mode("append").save(path)
        except Exception as e:  # two first runs creating it at once: the other one's table is just as good
            if not DeltaTable.isDeltaTable(spark, path):
                raise
            LOG.debug("lock table created concurrently: %s", type(e).__name__)
    return DeltaTable.forPath(spark, path)


def _holder(spark, path: str, name: str):
    from pyspark.sql import functions as F

    return spark.read.format("delta").load(path).where(F.col("name") == name).first()


def acquire(spark, path: str, name: str, stale_after_s: float) -> str:
    """Take lock ``name``; returns the owner token. Raises :class:`RunLocked` when another live run holds it."""
    from delta import exceptions as dx
    from pyspark.sql import functions as F

    owner = uuid.uuid4().hex
    now = time.time()
    row = spark.createDataFrame([(name, owner, socket.gethostname(), os.getpid(), now, now, False)], SCHEMA)
    table = _table(spark, path)
    takeable = F.col("t.released") | (F.col("t.heartbeat_at") < F.lit(now - stale_after_s))
    try:
        (
            table.alias("t")
            .merge(row.alias("s"), "t.name = s.name")
            .whenMatchedUpdateAll(condition=takeable)
            .whenNotMatchedInsertAll()
            .execute()
        )
    except (
        dx.ConcurrentAppendException,
        dx.ConcurrentWriteException,
        dx.ConcurrentDeleteReadException,
        dx.ConcurrentTransactionException,
    ) as e:
        raise RunLocked(_busy_message(_holder(spark, path, name), path, f"lost a concurrent race ({type(e).__name__})"))
    held = _holder(spark, path, name)
    if held is None or held["owner"] != owner:
        raise RunLocked(_busy_message(held, path, "held"))
    LOG.info("run lock %s taken (owner %s on %s pid %d) in %s", name, owner[:8], row.first()["host"], os.getpid(), path)
    return owner


def _busy_message(held, path: str, why: str) -> str:
    if held is None:
        return f"run lock in {path} {why}; retry later"
    age = time.time() - held["heartbeat_at"]
    return (
        f"another run holds the lock '{held['name']}' ({why}): owner {held['owner'][:8]} on host {held['host']} "
        f"pid {held['pid']}, last heartbeat {age:.0f}s ago; retry when it has finished (lock table {path})"
    )


def heartbeat(spark, path: str, name: str, owner: str) -> None:
    from pyspark.sql import functions as F

    _table(spark, path).update(
        (F.col("name") == name) & (F.col("owner") == owner), {"heartbeat_at": F.lit(time.time())}
    )


def release(spark, path: str, name: str, owner: str) -> None:
    from pyspark.sql import functions as F

    _table(spark, path).update((F.col("name") == name) & (F.col("owner") == owner), {"released": F.lit(True)})


@contextmanager
def held(spark, path: str, name: str, stale_after_s: float, heartbeat_s: float) -> Iterator[str]:
    """``with held(...)``: the lock for the block, with a heartbeat thread; released on exit (also on errors)."""
    owner = acquire(spark, path, name, stale_after_s)
    stop = threading.Event()

    def beat():
        while not stop.wait(heartbeat_s):
            try:
                heartbeat(spark, path, name, owner)
            except Exception as e:  # a missed beat only matters after stale_after_s; the job itself goes on
                LOG.warning("run lock heartbeat failed: %s", str(e).splitlines()[0][:200])

    t = threading.Thread(target=beat, name="run-lock-heartbeat", daemon=True)
    t.start()
    try:
        yield owner
    finally:
        stop.set()
        t.join(timeout=heartbeat_s + 5)
        release(spark, path, name, owner)
