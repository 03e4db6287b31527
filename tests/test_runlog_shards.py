"""Fast tests for the run log (what a rerun skips) and the row-balanced assignment of Parquet files to ranks."""

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from churn_spark.config import load_config
from churn_spark.distributed import assign_shards, shard_rows
from churn_spark.pipeline import RunLog, build_run_id


def test_run_log_records_atomically_and_reloads(tmp_path):
    cfg = load_config(overrides=[f"work_dir={tmp_path}"])
    day = dt.date(2026, 11, 2)
    log = RunLog(cfg, day)
    assert log.done("train") is None
    log.record("train", {"model_version": "3"})
    again = RunLog(cfg, day)
    assert again.done("train") == {"model_version": "3"} and again.done("score") is None
    assert not list(Path(log.path).parent.glob("*.tmp*"))  # written via a temporary file and a rename
    assert build_run_id(day) == "build-2026-11-02"


def test_shards_are_balanced_by_rows_largest_first(tmp_path):
    sizes = [50, 40, 30, 20, 10, 10]
    files = []
    for i, n in enumerate(sizes):
        f = tmp_path / f"part-{i}.parquet"
        pq.write_table(pa.table({"x": list(range(n))}), f)
        files.append(str(f))
    shards = assign_shards(files, 2)
    rows = sorted(shard_rows(s) for s in shards)
    assert rows == [80, 80] and sorted(sum(shards, [])) == sorted(files)
    assert [len(s) for s in assign_shards(files[:1], 2)] == [1, 0]  # more ranks than files: one rank gets nothing
