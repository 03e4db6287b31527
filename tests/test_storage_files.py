"""Driver-side files under an object-store ``work_dir``, against a real S3-compatible server (S3Proxy), no Spark:
the run log (atomic write, read back, the rerun check), metrics.json listings for monitoring, drift and the SQL
endpoint, the report's run-log timings, the pure-Python Delta reader (commits, checkpoint, partition values) and the
file side of ``forget`` (scan, rewrite, Delta table discovery, erasure log, salt)."""

from __future__ import annotations

import datetime as dt
import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_delta_reader import D1, D2, PROTOCOL, Table, _meta

from churn_spark import privacy, storage

RUN = dt.date(2026, 11, 2)


class Cfg:
    """The bits of a Config the file side uses, with ``work_dir`` a URI (``cfg.path`` joins with slashes)."""

    def __init__(self, work_dir: str):
        self.work_dir = work_dir

    def path(self, *parts: str) -> str:
        return storage.join(self.work_dir, *parts)

    @property
    def features_path(self) -> str:
        return self.path("tables", "features")

    @property
    def risk_table_path(self) -> str:
        return self.path("tables", "churn_risk")


def test_runlog_written_and_read_back_on_s3(s3):
    from churn_spark.pipeline import RunLog, _still_there

    cfg = Cfg("s3a://lake/runlog")
    log = RunLog(cfg, RUN)
    assert log.path == "s3a://lake/runlog/runs/2026-11-02/runlog.json" and log.data == {"steps": {}}
    log.record("build_sequences", {"features_version": 3, "timings": {"seconds": 1.5, "parts": {}}})
    log.record("report", {"report": cfg.path("runs", RUN.isoformat(), "report.html")})
    again = RunLog(cfg, RUN)
    assert again.done("build_sequences")["features_version"] == 3 and list(again.data["steps"]) == [
        "build_sequences",
        "report",
    ]
    assert storage.ls(cfg.path("runs", RUN.isoformat())) == [log.path]  # no temporary object left behind
    # the rerun check: outputs recorded but gone -> redo
    assert not _still_there(cfg, "build_sequences", again.done("build_sequences"))
    assert not _still_there(cfg, "report", again.done("report"))
    storage.write_text(storage.join(cfg.features_path, "_delta_log", f"{0:020d}.json"), "{}\n")
    storage.write_text(again.done("report")["report"], "<html></html>")
    assert _still_there(cfg, "build_sequences", again.done("build_sequences"))
    assert _still_there(cfg, "report", again.done("report"))

    from churn_spark.report_data import step_timings

    assert step_timings(log.path) == {"build_sequences": {"seconds": 1.5, "parts": {}}}
    assert step_timings(cfg.path("runs", "none", "runlog.json")) == {}


def _metrics(version: str, run_date: str, auc: float) -> dict:
    return {
        "model_name": "churn",
        "model_version": version,
        "run_date": run_date,
        "run_id": f"run-{version}",
        "snapshots": {"train": ["2026-10-05"], "test": ["2026-10-19"]},
        "models": {"deep": {"roc_auc": auc}},
        "gate": {"promoted": True},
    }


def test_metrics_json_listings_on_s3(s3):
    from churn_spark.bi_catalog import metrics_rows
    from churn_spark.drift_table import reference_scores
    from churn_spark.monitoring import test_roc_auc_by_version
    from churn_spark.run_metrics import metrics_files

    work = "s3a://lake/metrics"
    runs = storage.join(work, "runs")
    storage.write_text(storage.join(runs, "2026-10-26", "metrics.json"), json.dumps(_metrics("1", "2026-10-26", 0.7)))
    storage.write_text(storage.join(runs, "2026-11-02", "metrics.json"), json.dumps(_metrics("2", "2026-11-02", 0.8)))
    storage.write_text(storage.join(runs, "2026-11-09", "runlog.json"), "{}")  # a run without training
    storage.write_text(storage.join(runs, "notes.txt"), "not a run")
    scores = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "label": [0, 1, 0], "deep": [0.1, 0.9, 0.4]})
    storage.write_text(storage.join(runs, "2026-11-02", "test_scores.csv"), scores.to_csv(index=False))

    assert metrics_files(runs) == [storage.join(runs, d, "metrics.json") for d in ("2026-10-26", "2026-11-02")]
    assert test_roc_auc_by_version(runs) == {"1": 0.7, "2": 0.8}
    ref, where = reference_scores(runs, "2")
    assert ref.tolist() == [0.1, 0.9, 0.4] and where == "test snapshot 2026-10-19 of run 2026-11-02"
    assert reference_scores(runs, "1")[0] is None
    rows = metrics_rows(work)
    assert [(r[0], r[1], r[2]) for r in rows] == [("churn", "1", dt.date(2026, 10, 26)), ("churn", "2", RUN)]


class FlatTable(Table):
    """Partition directories without ``=``: the AWS C++ SDK inside pyarrow signs ``=`` in a key encoded but sends it
    raw, which S3Proxy (like Ceph and GCS, unlike AWS S3 and MinIO) rejects. The reader takes partition values from
    the log, not from the directory name, so the replay is exercised the same."""

    def data(self, name: str, day: str, users: list[int]) -> dict:
        add = super().data(name, day, users)
        flat = add["path"].replace("snapshot_date=", "day-")
        (self.root / flat).parent.mkdir(parents=True, exist_ok=True)
        (self.root / add["path"]).rename(self.root / flat)
        (self.root / add["path"]).parent.rmdir()
        return {**add, "path": flat}


def test_delta_reader_reads_a_table_on_s3(s3, tmp_path):
    from churn_spark.delta_reader import read_delta

    t = FlatTable(tmp_path / "risk")
    a, b = t.data("a", D1, [1, 2]), t.data("b", D2, [3])
    t.commit(0, {"protocol": PROTOCOL}, {"metaData": _meta()}, {"add": a}, {"add": b})
    t.commit(1, {"remove": {"path": a["path"], "dataChange": True}}, {"add": t.data("c", D1, [4, 5])})
    t.checkpoint(1, [{"protocol": PROTOCOL}, {"metaData": _meta()}, {"add": b}, {"add": t.data("c", D1, [4, 5])}])
    t.commit(2, {"add": t.data("d", D2, [6])})
    uri = "s3a://lake/delta/risk"
    for f in sorted(p for p in t.root.rglob("*") if p.is_file()):  # one PUT per file
        storage.write_bytes(storage.join(uri, f.relative_to(t.root).as_posix()), f.read_bytes())

    remote = read_delta(uri)
    local = read_delta(str(t.root))
    key = ["user_id"]
    pd.testing.assert_frame_equal(
        remote.sort_values(key).reset_index(drop=True), local.sort_values(key).reset_index(drop=True)
    )
    assert sorted(remote.user_id) == [3, 4, 5, 6] and set(remote.snapshot_date) == {dt.date(2026, 10, 26), RUN}
    assert sorted(read_delta(uri, version=0).user_id) == [1, 2, 3]
    assert sorted(read_delta(uri, filters={"snapshot_date": D2}).user_id) == [3, 6]
    with pytest.raises(FileNotFoundError, match="not a Delta table"):
        read_delta("s3a://lake/delta/missing")


def _parquet_bytes(users) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"user_id": users, "x": list(range(len(users)))}), buf)
    return buf.getvalue().to_pybytes()


def test_forget_file_side_on_s3(s3):
    from churn_spark.privacy import _append_line, _relative

    work = "s3a://lake/forget"
    j = lambda *p: storage.join(work, *p)  # noqa: E731
    storage.write_bytes(j("exports", "part-0.parquet"), _parquet_bytes(["u1", "u2", "u3"]))
    storage.write_bytes(j("exports", ".part-0.parquet.crc"), b"old checksum")
    storage.write_text(j("runs", "2026-11-02", "test_scores.csv"), "user_id,label\nu2,1\nu5,0\n")
    storage.write_text(j("runs", "2026-11-02", "report.html"), "<td>u2</td> and u25")
    storage.write_bytes(j("blob.db"), b"\x00u2\x00")
    storage.write_bytes(j("tables", "risk", "part-0.parquet"), _parquet_bytes(["u2"]))
    storage.write_text(j("tables", "risk", "_delta_log", f"{0:020d}.json"), '{"add": {"path": "part-0.parquet"}}\n')
    storage.write_text(j("tables", "nested", "inner", "_delta_log", f"{0:020d}.json"), "{}\n")

    tables = privacy.delta_tables(j("tables"))
    assert tables == [j("tables", "nested", "inner"), j("tables", "risk")]
    assert _relative(tables[1], work) == "tables/risk" and _relative("s3a://other/t", work) == "s3a://other/t"
    assert privacy.scan(work, ["u2"], skip=tables) == {
        "blob.db": 1,
        "exports/part-0.parquet": 1,
        "runs/2026-11-02/report.html": 1,
        "runs/2026-11-02/test_scores.csv": 1,
    }
    done = privacy.erase_files(work, ["u2"], skip=tables)
    assert done == {"exports/part-0.parquet": 1, "runs/2026-11-02/report.html": 1, "runs/2026-11-02/test_scores.csv": 1}
    table = pq.read_table(io.BytesIO(storage.read_bytes(j("exports", "part-0.parquet"))))
    assert table["user_id"].to_pylist() == ["u1", "u3"]
    assert not storage.exists(j("exports", ".part-0.parquet.crc"))
    assert storage.read_text(j("runs", "2026-11-02", "test_scores.csv")) == "user_id,label\nu5,0\n"
    assert storage.read_text(j("runs", "2026-11-02", "report.html")) == "<td>[erased]</td> and u25"
    # the table's files are not touched behind its log; the binary file is only reported
    assert privacy.scan(work, ["u2"]) == {"blob.db": 1, "tables/risk/part-0.parquet": 1}

    log = j("privacy", "erasure_log.jsonl")
    _append_line(log, '{"n": 1}\n')
    _append_line(log, '{"n": 2}\n')
    assert storage.read_text(log) == '{"n": 1}\n{"n": 2}\n'
    salt = privacy.salt(Cfg(work))
    assert len(salt) == 64 and privacy.salt(Cfg(work)) == salt == storage.read_text(j("privacy", "hash_salt"))
