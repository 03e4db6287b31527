"""Erasure helpers on hand-made files (no Spark): id matching, scanning, rewriting Parquet/CSV/text."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn_spark import privacy


def test_user_hash_is_salted_and_trims():
    h = privacy.user_hash(" u1 ", "salt")
    assert h == privacy.user_hash("u1", "salt") != privacy.user_hash("u1", "other")
    assert len(h) == 64 and "u1" not in h


def test_read_ids(tmp_path):
    f = tmp_path / "ids.txt"
    f.write_text("u2\n\n# a comment\n u1 \nu2\n")
    assert privacy.read_ids(str(f), "u3") == ["u1", "u2", "u3"]
    with pytest.raises(ValueError):
        privacy.read_ids(None, "  ")


def test_id_pattern_matches_whole_tokens_only():
    pat = privacy.id_pattern(["u1", "cust-7"])
    text = b'{"user_id":"u1"} u12 xu1 u1, cust-7;cust-70 a-cust-7'
    assert [m.group() for m in pat.finditer(text)] == [b"u1", b"u1", b"cust-7"]


def _parquet(path, users):
    pq.write_table(
        pa.table({"user_id": users, "x": list(range(len(users))), "nested": [[{"k": u}] for u in users]}), path
    )


def test_scan_decodes_parquet_and_reads_other_files_as_bytes(tmp_path):
    _parquet(tmp_path / "a.parquet", ["u1", "u2", "u3"])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "r.html").write_text("<td>u2</td><td>u22</td>")
    (tmp_path / "skip").mkdir()
    (tmp_path / "skip" / "x.txt").write_text("u2")
    hits = privacy.scan(str(tmp_path), ["u2"], skip=[str(tmp_path / "skip")])
    assert hits == {"a.parquet": 2, "sub/r.html": 1}  # user_id and the nested struct field


def test_erase_files_rewrites_parquet_csv_and_text(tmp_path):
    _parquet(tmp_path / "part-0.parquet", ["u1", "u2", "u3"])
    (tmp_path / ".part-0.parquet.crc").write_bytes(b"old checksum")
    pd.DataFrame({"user_id": ["u2", "u5"], "label": [1, 0]}).to_csv(tmp_path / "test_scores.csv", index=False)
    (tmp_path / "report.html").write_text("<td>u2</td> and u25")
    (tmp_path / "blob.db").write_bytes(b"\x00u2\x00")
    done = privacy.erase_files(str(tmp_path), ["u2"], skip=[])
    assert done == {"part-0.parquet": 1, "test_scores.csv": 1, "report.html": 1}
    assert pq.read_table(tmp_path / "part-0.parquet")["user_id"].to_pylist() == ["u1", "u3"]
    assert not (tmp_path / ".part-0.parquet.crc").exists()  # a stale checksum would fail Spark's read
    assert pd.read_csv(tmp_path / "test_scores.csv", dtype=str)["user_id"].tolist() == ["u5"]
    assert (tmp_path / "report.html").read_text() == "<td>[erased]</td> and u25"
    assert privacy.scan(str(tmp_path), ["u2"]) == {"blob.db": 1}  # binary: left for the final report


def test_salt_is_created_once_and_private(tmp_path):
    class Cfg:
        def path(self, *parts):
            return str(tmp_path.joinpath(*parts))

    s = privacy.salt(Cfg())
    assert s == privacy.salt(Cfg()) and len(s) == 64
    assert (tmp_path / "privacy" / "hash_salt").stat().st_mode & 0o077 == 0
