"""Small Delta helpers shared by every writer and reader: the latest version, and the version of *our* commit.

Reading ``history(1)`` right after a write returns whichever commit is newest, which under concurrency can be
another writer's. Every project write therefore carries a unique ``write_id`` in its commit's ``userMetadata`` and
:func:`write_version` finds that commit in the log.
"""

from __future__ import annotations

import json
import uuid
from typing import Optional


class CommitNotFound(RuntimeError):
    pass


def latest_version(spark, path: str) -> int:
    """The newest committed version of the Delta table at ``path``."""
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def new_write_id() -> str:
    return uuid.uuid4().hex


def commit_metadata(write_id: str, **fields) -> str:
    """The ``userMetadata`` string of a project commit: JSON with the write id and any lineage fields."""
    return json.dumps({"write_id": write_id, **fields}, sort_keys=True, default=str)


def write_version(spark, path: str, write_id: str, search: int = 200) -> int:
    """The version of the commit carrying ``write_id`` (searching the newest ``search`` commits)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    hist = DeltaTable.forPath(spark, path).history(search).where(F.col("userMetadata").contains(write_id))
    row = hist.select("version").orderBy(F.desc("version")).first()
    if row is None:
        raise CommitNotFound(f"no commit with write_id {write_id} among the last {search} commits of {path}")
    return int(row[0])


def commit_user_metadata(spark, path: str, version: int) -> Optional[dict]:
    """The parsed ``userMetadata`` of one commit (None when absent or not JSON)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    row = DeltaTable.forPath(spark, path).history().where(F.col("version") == version).select("userMetadata").first()
    if row is None or not row[0]:
        return None
    try:
        return json.loads(row[0])
    except ValueError:
        return None


def replace_partitions(df, path: str, predicate: str, partition_by: str = "snapshot_date", **meta) -> int:
    """Overwrite the rows of ``path`` matching ``predicate`` (``replaceWhere``) with ``df`` in one commit, carrying
    ``meta`` in its userMetadata; returns the version of that commit."""
    write_id = new_write_id()
    (
        df.write.format("delta")
        .mode("overwrite")
        .partitionBy(partition_by)
        .option("replaceWhere", predicate)
        .option("userMetadata", commit_metadata(write_id, **meta))
        .save(path)
    )
    return write_version(df.sparkSession, path, write_id)
