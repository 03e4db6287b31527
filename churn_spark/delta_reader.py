"""Read a Delta table into pandas without Spark or a JVM (for BI notebooks and scripts next to the lake).

delta-rs (``deltalake``) and DuckDB's delta extension need a newer pyarrow than the pinned stack allows
(horovod[spark] keeps pyarrow at 10.0.1), so this replays the Delta log itself: the newest classic Parquet
checkpoint at or before the wanted version plus the JSON commits after it give the table's live files; each file
is read with pyarrow and its partition values added back. BI users who can keep a separate venv should prefer
the maintained ``deltalake`` package there (see the README).

A hand-written replay is only safe for the tables it understands, so it refuses the rest with
:class:`UnsupportedTableError` instead of returning wrong rows: reader protocol versions above 3, any reader
feature it does not implement (deletion vectors would otherwise resurrect deleted rows; column mapping would
rename columns; v2 checkpoints hold the file list in sidecars; timestamp without time zone, type widening, ...),
and V2 (UUID-named) checkpoints. The tables this project writes use none of them.

    from churn_spark.delta_reader import read_delta
    risk = read_delta("work/demo/tables/churn_risk", filters={"snapshot_date": "2026-11-02"})
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional
from urllib.parse import unquote, urlparse

import pandas as pd

from . import storage

MAX_READER_VERSION = 3  # 3 = table features (the features themselves are checked one by one)
# Reader features this replay handles. vacuumProtocolCheck only constrains VACUUM; columnMapping is accepted
# only while the mapping mode is "none" (physical names == logical names), see _check_protocol.
SUPPORTED_READER_FEATURES = frozenset({"vacuumProtocolCheck", "columnMapping"})
# NNN.checkpoint.parquet or the multi-part NNN.checkpoint.PPPPPPPPPP.TTTTTTTTTT.parquet (classic checkpoints)
_CLASSIC_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")
_ANY_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint\..+\.(?:parquet|json)$")
_CHECKPOINT_COLUMNS = ("add", "metaData", "protocol")


class UnsupportedTableError(RuntimeError):
    """The table uses a Delta feature this reader does not implement (reading it would give wrong rows)."""


@dataclass
class Snapshot:
    """The replayed state of a table at ``version``: live files by path, metadata and protocol."""

    version: int
    live: Dict[str, dict] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)

    def apply(self, action: dict) -> None:
        if action.get("add"):
            self.live[action["add"]["path"]] = action["add"]
        elif action.get("remove"):
            self.live.pop(action["remove"]["path"], None)
        elif action.get("metaData"):
            self.meta = action["metaData"]
        elif action.get("protocol"):
            self.protocol = action["protocol"]


def _as_dict(value) -> dict:
    """Checkpoint Parquet stores maps as lists of (key, value) pairs; JSON commits as objects."""
    return dict(value or {})


def _classic_checkpoints(log: str, names: List[str]) -> Dict[int, List[str]]:
    """Complete classic checkpoints by version (a multi-part checkpoint counts only with all its parts)."""
    parts: Dict[int, Dict[int, str]] = {}
    totals: Dict[int, int] = {}
    for n in names:
        m = _CLASSIC_CHECKPOINT.match(n)
        if m:
            v = int(m.group(1))
            part, total = (int(m.group(2)), int(m.group(3))) if m.group(2) else (1, 1)
            parts.setdefault(v, {})[part] = storage.join(log, n)
            totals[v] = total
    return {v: [p[i] for i in sorted(p)] for v, p in parts.items() if sorted(p) == list(range(1, totals[v] + 1))}


def _refuse_v2_checkpoints(log: str, names: List[str]) -> None:
    table = storage.parent(log)
    if "_last_checkpoint" in names:
        if "v2Checkpoint" in json.loads(storage.read_text(storage.join(log, "_last_checkpoint")) or "{}"):
            raise UnsupportedTableError(f"{table} uses V2 checkpoints (see _last_checkpoint): not supported here")
    for n in names:
        if _ANY_CHECKPOINT.match(n) and not _CLASSIC_CHECKPOINT.match(n):
            raise UnsupportedTableError(f"{table} has a V2 (UUID-named) checkpoint {n}: not supported here")


def _read_parquet(location: str, columns: Optional[List[str]] = None):
    """A Parquet file as a pyarrow Table, through the filesystem of its location (local disk or object store)."""
    import pyarrow.parquet as pq

    fs, inner = storage.filesystem(location)
    if columns is not None:
        names = set(pq.read_schema(inner, filesystem=fs).names)
        columns = [c for c in columns if c in names]
    return pq.read_table(inner, columns=columns, filesystem=fs)


def _read_checkpoint(files: List[str], snap: Snapshot) -> None:
    for f in files:
        for row in _read_parquet(f, list(_CHECKPOINT_COLUMNS)).to_pylist():
            snap.apply(row)


def replay(log: str, version: Optional[int] = None) -> Snapshot:
    """Live ``add`` actions, metadata and protocol at ``version`` (default: the latest); ``log`` is the
    ``_delta_log`` directory, a local path or a URI (``s3a://…``), listed once."""
    log = str(log)
    table = storage.parent(log)
    if not storage.is_dir(log):
        raise FileNotFoundError(f"{table} is not a Delta table (no _delta_log)")
    names = [storage.name(p) for p in storage.ls(log)]
    _refuse_v2_checkpoints(log, names)
    commits = {int(n[: -len(".json")]) for n in names if n.endswith(".json") and n[: -len(".json")].isdigit()}
    checkpoints = _classic_checkpoints(log, names)
    if not commits and not checkpoints:
        raise FileNotFoundError(f"{table} is not a Delta table (no commits or checkpoints in _delta_log)")
    latest = max(commits | set(checkpoints))
    target = latest if version is None else version
    if not 0 <= target <= latest:
        raise ValueError(f"{table}: version {target} does not exist (latest is {latest})")
    snap = Snapshot(version=target)
    start = max((v for v in checkpoints if v <= target), default=-1)
    if start >= 0:
        _read_checkpoint(checkpoints[start], snap)
    for v in range(start + 1, target + 1):
        if v not in commits:
            cps = sorted(checkpoints)
            raise FileNotFoundError(
                f"Delta commit {v} is missing from {log} and no checkpoint at or before version {target} covers it "
                f"(log cleaned up past this version? checkpoints: {cps or 'none'})"
            )
        for line in storage.read_text(storage.join(log, f"{v:020d}.json")).splitlines():
            if line.strip():
                snap.apply(json.loads(line))
    _check_protocol(table, snap)
    return snap


def _check_protocol(table: str, snap: Snapshot) -> None:
    """Refuse what this reader cannot read correctly (see the module docstring)."""
    proto = snap.protocol
    if not proto:
        raise UnsupportedTableError(f"{table}: no protocol action up to version {snap.version} (corrupt log?)")
    reader = int(proto.get("minReaderVersion", 1))
    if reader > MAX_READER_VERSION:
        raise UnsupportedTableError(f"{table}: minReaderVersion {reader} is newer than this reader supports")
    features = set(proto.get("readerFeatures") or [])
    unsupported = sorted(features - SUPPORTED_READER_FEATURES)
    if unsupported:
        raise UnsupportedTableError(
            f"{table}: reader features {unsupported} are not supported by churn_spark.delta_reader "
            "(read it with Spark or the deltalake package)"
        )
    mode = _as_dict(snap.meta.get("configuration")).get("delta.columnMapping.mode", "none")
    if (reader >= 2 or "columnMapping" in features) and mode != "none":
        raise UnsupportedTableError(f"{table}: column mapping (mode {mode!r}) is not supported")
    with_dv = [p for p, a in snap.live.items() if a.get("deletionVector")]
    if with_dv:
        raise UnsupportedTableError(f"{table}: {len(with_dv)} files carry deletion vectors, e.g. {with_dv[0]}")


def _data_file(table: str, rel: str) -> str:
    """An ``add`` path: relative and URL-encoded, or an absolute URI (shallow clones): ``file:`` as a local path,
    another scheme (``s3a://…``) as a URI with its path decoded."""
    parsed = urlparse(rel)
    if not parsed.scheme:
        return storage.join(table, unquote(rel))
    if parsed.scheme == "file":
        return unquote(parsed.path)
    return f"{parsed.scheme}://{parsed.netloc}{unquote(parsed.path)}"


def _partition_value(raw: Optional[str], kind: Optional[str]):
    """A partition value (stored as a string in the log) as the column's type."""
    if raw is None:
        return None
    if kind == "date":
        return dt.date.fromisoformat(raw)
    if kind in ("byte", "short", "integer", "long"):
        return int(raw)
    if kind in ("float", "double"):
        return float(raw)
    if kind == "boolean":
        return raw.lower() == "true"
    return raw


def read_delta(path: str, version: Optional[int] = None, filters: Optional[Dict[str, str]] = None) -> pd.DataFrame:
    """The table (at ``version``, default latest) as pandas; ``filters`` keeps partitions equal to the values.
    ``path`` is a local path or a URI (``s3a://bucket/prefix/table``, object-store settings from
    :func:`churn_spark.storage.configure`)."""
    table = str(path)
    snap = replay(storage.join(table, "_delta_log"), version)
    part_cols = list(snap.meta.get("partitionColumns") or [])
    schema_string = snap.meta.get("schemaString")
    schema = {f["name"]: f["type"] for f in json.loads(schema_string)["fields"]} if schema_string else {}
    frames = []
    for rel, add in sorted(snap.live.items()):
        values = _as_dict(add.get("partitionValues"))
        if filters and any(str(values.get(k)) != str(v) for k, v in filters.items()):
            continue
        pdf = _read_parquet(_data_file(table, rel)).to_pandas()
        for col in part_cols:
            pdf[col] = _partition_value(values.get(col), schema.get(col))
        frames.append(pdf)
    if not frames:
        return pd.DataFrame(columns=list(schema) or part_cols)
    out = pd.concat(frames, ignore_index=True)
    return out[list(schema)] if schema else out
