"""Read a Delta table into pandas without Spark or a JVM (for BI notebooks and scripts next to the lake).

delta-rs and DuckDB's delta extension need a newer pyarrow than the pinned stack allows (horovod[spark] keeps
pyarrow at 10.0.1), so this replays the Delta log itself: the latest checkpoint (Parquet) plus the JSON commits
after it give the table's live files at a version; each file is read with pyarrow and its partition values
added back. Read-only, and only for tables without deletion vectors or column mapping (the tables this project
writes).

    from churn_spark.delta_reader import read_delta
    risk = read_delta("work/demo/tables/churn_risk", filters={"snapshot_date": "2026-11-02"})
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional
from urllib.parse import unquote

import pandas as pd


def _actions(log: Path, version: Optional[int]) -> tuple[Dict[str, dict], dict, int]:
    """Live ``add`` actions by path, the table metadata, and the version read."""
    commits = sorted(int(p.stem) for p in log.glob("*.json") if p.stem.isdigit())
    if not commits and not (log / "_last_checkpoint").exists():
        raise FileNotFoundError(f"{log.parent} is not a Delta table (no _delta_log commits)")
    target = version if version is not None else max(commits)
    live: Dict[str, dict] = {}
    meta: dict = {}
    start = 0
    last = log / "_last_checkpoint"
    if last.exists():
        cp = json.loads(last.read_text())["version"]
        if cp <= target:
            import pyarrow.parquet as pq

            for f in sorted(log.glob(f"{cp:020d}.checkpoint*.parquet")):
                for row in pq.read_table(f, columns=["add", "metaData"]).to_pylist():
                    if row.get("add"):
                        live[row["add"]["path"]] = row["add"]
                    if row.get("metaData"):
                        meta = row["metaData"]
            start = cp + 1
    for v in range(start, target + 1):
        f = log / f"{v:020d}.json"
        if not f.exists():
            raise FileNotFoundError(f"Delta commit {v} is missing from {log} (log cleaned up past this version?)")
        for line in f.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                live[action["add"]["path"]] = action["add"]
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
            elif "metaData" in action:
                meta = action["metaData"]
    return live, meta, target


def read_delta(path: str, version: Optional[int] = None, filters: Optional[Dict[str, str]] = None) -> pd.DataFrame:
    """The table (at ``version``, default latest) as pandas; ``filters`` keeps partitions equal to the values."""
    import pyarrow.parquet as pq

    live, meta, _ = _actions(Path(path, "_delta_log"), version)
    part_cols = list(meta.get("partitionColumns") or [])
    schema = {f["name"]: f["type"] for f in json.loads(meta["schemaString"])["fields"]} if meta else {}
    frames = []
    for rel, add in sorted(live.items()):
        values = dict(add.get("partitionValues") or {})
        if isinstance(values, list):  # checkpoints store the map as key/value pairs
            values = dict(values)
        if filters and any(str(values.get(k)) != str(v) for k, v in filters.items()):
            continue
        pdf = pq.read_table(Path(path, unquote(rel))).to_pandas()
        for col in part_cols:
            raw = values.get(col)
            pdf[col] = pd.to_datetime(raw).date() if schema.get(col) == "date" and raw is not None else raw
        frames.append(pdf)
    if not frames:
        columns = list(schema) or part_cols
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[list(schema)] if schema else pd.concat(frames, ignore_index=True)
