"""Privacy: erase a customer everywhere (``churn-spark forget``), quarantine retention and pseudonymised quarantine.

Why a module of its own: erasure has to reach every copy the project made of a customer's data - Delta tables
(current *and* older versions), Parquet exports for training, CSV score dumps, rendered reports - and leave a proof
that it happened which itself holds no personal data. Getting any one of those wrong leaves the id on disk, so the
whole procedure and its own verification live together here:

1. Every Delta table under ``<work_dir>/tables`` (and, with ``include_sources``, the Delta lake sources): rows whose
   ``user_id`` is one of the ids, and quarantine rows whose raw row holds one of them (or its hash) are deleted with
   a Delta MERGE from a small DataFrame of the ids. A MERGE, not ``DELETE WHERE user_id IN ('...')``: Delta writes a
   DELETE's predicate, literals included, into the transaction log, which would keep the id forever.
2. VACUUM every table with ``privacy.vacuum_retention_hours`` (0 = the files of older versions go at once).
3. Older commits' file statistics (min/max ``user_id`` per file) in ``_delta_log`` can still name the id. A table
   whose directory still holds an id after VACUUM gets a fresh history: its current rows are rewritten as version 0
   (keeping partitioning and the feature contract) and the old directory is removed (on an object store, where a
   directory cannot be renamed, the old prefix is deleted and the new table copied into place).
4. Files outside Delta tables: Parquet files lose the rows of the ids (their Hadoop ``.crc`` sidecars are removed),
   CSV files with a ``user_id`` column lose those rows, text files (HTML reports, JSON) get the id replaced by
   ``[erased]`` (:mod:`churn_spark.privacy_files`). Files are listed, read and rewritten through
   :mod:`churn_spark.storage`, so ``work_dir`` may be an object store (``s3a://…``).
5. A scan of every file under ``work_dir`` (Parquet decoded, other files as bytes) lists any file still holding an
   id; the erasure log (``<work_dir>/privacy/erasure_log.jsonl``) records salted hashes, time, counts per table and
   file, and that list - never the id.

Run ``forget`` between weekly runs: VACUUM with a short retention removes files a concurrent writer may still need.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
from typing import List, Optional

from . import storage
from .privacy_files import (  # noqa: F401 (the file side of erasure, re-exported: privacy.scan, ...)
    ERASED,
    TEXT_SUFFIXES,
    _under,
    delta_tables,
    erase_files,
    files_under,
    id_pattern,
    parquet_hits,
    redact_text,
    rewrite_csv,
    rewrite_parquet,
    scan,
)

ERASURE_LOG = ("privacy", "erasure_log.jsonl")
SALT_FILE = ("privacy", "hash_salt")
TOKEN_SPLIT = r'["{}\[\],:;|\s\t]+'  # how a raw (JSON or CSV) quarantined row is cut into candidate ids


# ---------------------------------------------------------------------------------------------------------
# hashing
# ---------------------------------------------------------------------------------------------------------
def salt(cfg) -> str:
    """The installation's hashing salt (created once, mode 0600). Keep it: without it the erasure log cannot be
    checked against an id, and quarantine hashes change."""
    p = cfg.path(*SALT_FILE)
    if not storage.is_file(p):
        if storage.is_uri(p):  # an object store has no file modes: the bucket's access policy protects it
            storage.write_text(p, secrets.token_hex(32))
        else:
            os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    return storage.read_text(p).strip()


def user_hash(user_id: str, salt_value: str) -> str:
    """Salted SHA-256 of a (trimmed) user id, hex: what the erasure log and a pseudonymised quarantine store."""
    return hashlib.sha256(f"{salt_value}:{str(user_id).strip()}".encode()).hexdigest()


def read_ids(file: Optional[str] = None, user: Optional[str] = None) -> List[str]:
    """Ids from ``--users FILE`` (one per line; blank lines and ``#`` comments ignored) and/or ``--user ID``."""
    ids = [user.strip()] if user and user.strip() else []
    if file:
        ids += [ln.strip() for ln in storage.read_text(file).splitlines() if ln.strip() and not ln.startswith("#")]
    if not ids:
        raise ValueError("forget: no user id given (--user ID or --users FILE)")
    return sorted(set(ids))


# ---------------------------------------------------------------------------------------------------------
# quarantine: pseudonymised rows and retention
# ---------------------------------------------------------------------------------------------------------
def pseudonymise_quarantine(df, cfg):
    """Quarantine rows with the source's user-id field of the raw JSON row replaced by its salted hash; a raw row
    that is not JSON (a malformed CSV line) is withheld and only its hash kept."""
    from pyspark.sql import functions as F

    s = F.lit(salt(cfg))
    m = F.from_json(F.col("raw_row"), "map<string,string>")
    uid_field = F.lit(None).cast("string")
    for name, src in cfg.sources.items():
        uid_field = F.when(F.col("source") == name, F.lit(src.columns.get("user_id", "user_id"))).otherwise(uid_field)
    hashed = F.transform_values(
        m,
        lambda k, v: F.when(
            (k == uid_field) & v.isNotNull(), F.sha2(F.concat(s, F.lit(":"), F.trim(v)), 256)
        ).otherwise(v),
    )
    withheld = F.to_json(
        F.create_map(F.lit("withheld_raw_row_sha256"), F.sha2(F.concat(s, F.lit(":"), F.col("raw_row")), 256))
    )
    return df.withColumn("raw_row", F.when(m.isNotNull(), F.to_json(hashed)).otherwise(withheld))


def apply_quarantine_retention(spark, cfg, now: Optional[dt.datetime] = None) -> dict:
    """Delete quarantine ``run_id`` partitions whose newest row is older than ``quarantine_retention_days``, then
    VACUUM with Delta's default retention (safe next to concurrent runs: the files go 7 days later)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    path = cfg.quarantine_path
    if not DeltaTable.isDeltaTable(spark, path):
        return {"deleted_runs": [], "rows": 0}
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    cutoff = now - dt.timedelta(days=cfg.privacy.quarantine_retention_days)
    q = spark.read.format("delta").load(path)
    runs = q.groupBy("run_id").agg(F.max("quarantined_at").alias("t"), F.count(F.lit(1)).alias("n")).collect()
    old = sorted(r["run_id"] for r in runs if r["t"] is not None and r["t"] < cutoff)
    if old:
        DeltaTable.forPath(spark, path).delete(F.col("run_id").isin(old))
        DeltaTable.forPath(spark, path).vacuum()
    return {
        "deleted_runs": old,
        "rows": int(sum(r["n"] for r in runs if r["run_id"] in old)),
        "cutoff": cutoff.isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------------------------
# Delta tables
# ---------------------------------------------------------------------------------------------------------
def _ids_frame(spark, ids: List[str], salt_value: str):
    return spark.createDataFrame([(i, user_hash(i, salt_value)) for i in ids], "user_id string, user_hash string")


def _match_condition(columns: List[str]):
    """MERGE condition of a target table against the ids frame ``s``: by ``user_id``, or inside ``raw_row``."""
    from pyspark.sql import functions as F

    conds = []
    if "user_id" in columns:
        conds.append(F.trim(F.col("t.user_id").cast("string")) == F.col("s.user_id"))
    if "raw_row" in columns:
        tokens = F.split(F.col("t.raw_row"), TOKEN_SPLIT)
        conds += [
            F.array_contains(tokens, F.col("s.user_id")),
            F.array_contains(tokens, F.col("s.user_hash")),
            F.col("t.raw_row").contains(F.concat(F.lit('"'), F.col("s.user_id"), F.lit('"'))),
        ]
    if not conds:
        return None
    out = conds[0]
    for c in conds[1:]:
        out = out | c
    return out


def delete_rows(spark, path: str, ids_df) -> int:
    """MERGE-delete the ids' rows from one Delta table (no commit when none match); returns rows deleted."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    table = DeltaTable.forPath(spark, path)
    target = table.toDF()
    cond = _match_condition(target.columns)
    if cond is None:
        return 0
    n = target.alias("t").join(F.broadcast(ids_df.alias("s")), cond, "left_semi").count()
    if n:
        table.alias("t").merge(F.broadcast(ids_df.alias("s")), cond).whenMatchedDelete().execute()
    return int(n)


def vacuum(spark, path: str, hours: int) -> None:
    """VACUUM one table; Delta refuses a retention under 7 days unless its safety check is switched off."""
    from delta.tables import DeltaTable

    key = "spark.databricks.delta.retentionDurationCheck.enabled"
    before = spark.conf.get(key, "true")
    if hours < 168:
        spark.conf.set(key, "false")
    try:
        DeltaTable.forPath(spark, path).vacuum(float(hours))
    finally:
        spark.conf.set(key, before)


def restart_history(spark, path: str) -> None:
    """Rewrite a table's current rows as a new table (version 0) in place of the old directory: the only way to
    drop older commits whose file statistics name an erased id. Keeps partitioning and the newest feature contract
    recorded in the commit metadata (scoring checks it). Locally two directory renames; on an object store the old
    prefix is deleted and the new table copied into place (the log's file paths are relative), which leaves a short
    window without the table: run ``forget`` between weekly runs."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from .delta_util import commit_metadata, new_write_id

    table = DeltaTable.forPath(spark, path)
    parts = list(table.detail().select("partitionColumns").first()[0] or [])
    contract = None
    for (meta,) in table.history().orderBy(F.desc("version")).select("userMetadata").collect():
        try:
            contract = json.loads(meta).get("contract") if meta else None
        except ValueError:
            contract = None
        if contract:
            break
    tmp, old = path.rstrip("/") + ".forget-new", path.rstrip("/") + ".forget-old"
    storage.delete(tmp)
    writer = spark.read.format("delta").load(path).write.format("delta").mode("overwrite")
    if parts:
        writer = writer.partitionBy(*parts)
    meta = (
        commit_metadata(new_write_id(), history_restarted_by="forget", contract=contract)
        if contract
        else commit_metadata(new_write_id(), history_restarted_by="forget")
    )
    writer.option("userMetadata", meta).save(tmp)
    if storage.is_local(path):
        local_tmp, local_old, local_path = (storage.local_path(p) for p in (tmp, old, path))
        os.replace(local_path, local_old)
        os.replace(local_tmp, local_path)
        shutil.rmtree(local_old)
        return
    import pyarrow.fs as pafs

    fs, src = storage.filesystem(tmp)
    _, dst = storage.filesystem(path)
    storage.delete(path)  # the old table, its history included (the new one stays in tmp until copied)
    # use_threads=False: pyarrow 10's threaded copy deadlocks on S3 once there are more files than I/O threads
    pafs.copy_files(src, dst, source_filesystem=fs, destination_filesystem=fs, use_threads=False)
    storage.delete(tmp)


def _abs(path: str) -> str:
    """A local path made absolute without resolving symlinks; a URI as is."""
    return str(path) if storage.is_uri(path) else os.path.abspath(path)


def _relative(path: str, root: str) -> str:
    """The name of a table in the log: relative to work_dir (a URI outside it: in full)."""
    if not storage.is_uri(path) and not storage.is_uri(root):
        return os.path.relpath(path, root)
    if not _under(path, root):
        return str(path)
    return str(path).rstrip("/")[len(str(root).rstrip("/")) + 1 :] or "."


def _append_line(path: str, line: str) -> None:
    """Append locally; on an object store (no appends) the object is rewritten with the line added."""
    if storage.is_uri(path):
        before = storage.read_text(path) if storage.is_file(path) else ""
        storage.write_text(path, before + line)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        f.write(line)


def forget(spark, cfg, ids: List[str], include_sources: bool = False, now: Optional[dt.datetime] = None) -> dict:
    """Erase ``ids`` from every table and file the project wrote under ``work_dir``; returns the erasure log entry
    (also appended to ``<work_dir>/privacy/erasure_log.jsonl``). See the module docstring for the steps."""
    from .logs import LOG

    ids = sorted({str(i).strip() for i in ids if str(i).strip()})
    if not ids:
        raise ValueError("forget: no user id given")
    s = salt(cfg)
    ids_df = _ids_frame(spark, ids, s).cache()
    work = _abs(cfg.work_dir)
    lake = _abs(cfg.lake_dir)
    privacy_dir = storage.join(work, "privacy")
    hours = int(cfg.privacy.vacuum_retention_hours)
    tables = [t for t in delta_tables(storage.join(work, "tables"))]
    if include_sources:
        tables += [_abs(cfg.source_location(n)) for n, src in cfg.sources.items() if src.format == "delta" and src.path]
    counts, restarted = {}, []
    for t in tables:
        name = _relative(t, work)
        counts[name] = delete_rows(spark, t, ids_df)
        vacuum(spark, t, hours)
        if hours == 0 and scan(t, ids):
            restart_history(spark, t)
            restarted.append(name)
        LOG.info(
            "forget: %s rows deleted from %s%s", counts[name], name, " (history restarted)" if name in restarted else ""
        )
    ids_df.unpersist()
    # never rewrite a Delta table's files behind its log: tables not erased above are only reported
    skip = set(tables) | set(delta_tables(work)) | {privacy_dir} | ({lake} if _under(lake, work) else set())
    files = erase_files(work, ids, skip)
    remaining = scan(work, ids, {privacy_dir} | (set() if include_sources or not _under(lake, work) else {lake}))
    skipped_sources = [n for n, src in cfg.sources.items() if include_sources and src.format != "delta"]
    entry = {
        "erased_at": (now or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="seconds"),
        "user_hashes": [user_hash(i, s) for i in ids],
        "users": len(ids),
        "tables": counts,
        "files": files,
        "vacuum_retention_hours": hours,
        "history_restarted": restarted,
        "lake_sources_erased": include_sources,
        "sources_not_erased": skipped_sources,
        "remaining_files": sorted(remaining),
    }
    if not include_sources:
        entry["note"] = (
            "the lake sources were not touched: erase the users at the source, or the next run re-reads them"
        )
    log = cfg.path(*ERASURE_LOG)
    _append_line(log, json.dumps(entry, sort_keys=True) + "\n")
    if remaining:
        LOG.warning(
            "forget: %d files under %s still hold an erased id (binary files or ids that are plain "
            "numbers can match unrelated data): %s",
            len(remaining),
            work,
            sorted(remaining)[:10],
        )
    return {**entry, "erasure_log": str(log)}
