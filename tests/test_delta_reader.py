"""churn_spark.delta_reader on hand-made _delta_log directories (JSON commits and Parquet checkpoints written here
with pyarrow; no Spark): the rows it returns, time travel, starting from a checkpoint when the early commits are
gone, and a clear refusal of every table feature it cannot read correctly."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn_spark.delta_reader import UnsupportedTableError, read_delta

SCHEMA = json.dumps(
    {
        "type": "struct",
        "fields": [
            {"name": "user_id", "type": "long", "nullable": True, "metadata": {}},
            {"name": "churn_probability", "type": "double", "nullable": True, "metadata": {}},
            {"name": "snapshot_date", "type": "date", "nullable": True, "metadata": {}},
        ],
    }
)
D1, D2 = "2026-10-26", "2026-11-02"
PROTOCOL = {"minReaderVersion": 1, "minWriterVersion": 2}


def _meta(configuration: dict | None = None) -> dict:
    return {
        "id": "t-1",
        "format": {"provider": "parquet", "options": {}},
        "schemaString": SCHEMA,
        "partitionColumns": ["snapshot_date"],
        "configuration": configuration or {},
        "createdTime": 0,
    }


class Table:
    """A Delta table under construction: data files and log entries written by hand."""

    def __init__(self, root: Path):
        self.root = root
        self.log = root / "_delta_log"
        self.log.mkdir(parents=True)

    def data(self, name: str, day: str, users: list[int]) -> dict:
        """Write one Parquet data file (partition column left out, as Delta does) and return its ``add``."""
        rel = f"snapshot_date={day}/{name}.parquet"
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        probs = [u / 100 for u in users]
        pq.write_table(pa.table({"user_id": pa.array(users, pa.int64()), "churn_probability": probs}), self.root / rel)
        return {
            "path": rel,
            "partitionValues": {"snapshot_date": day},
            "size": 1,
            "modificationTime": 0,
            "dataChange": True,
        }

    def commit(self, version: int, *actions: dict) -> None:
        lines = [json.dumps(a) for a in actions]
        (self.log / f"{version:020d}.json").write_text("\n".join(lines) + "\n")

    def checkpoint(self, version: int, actions: list[dict], parts: int = 1) -> None:
        """A classic Parquet checkpoint (one row per action), optionally split into ``parts`` files."""
        schema = pa.schema(
            [
                (
                    "add",
                    pa.struct(
                        [
                            ("path", pa.string()),
                            ("partitionValues", pa.map_(pa.string(), pa.string())),
                            ("size", pa.int64()),
                            ("modificationTime", pa.int64()),
                            ("dataChange", pa.bool_()),
                        ]
                    ),
                ),
                (
                    "remove",
                    pa.struct([("path", pa.string()), ("deletionTimestamp", pa.int64()), ("dataChange", pa.bool_())]),
                ),
                (
                    "metaData",
                    pa.struct(
                        [
                            ("id", pa.string()),
                            ("schemaString", pa.string()),
                            ("partitionColumns", pa.list_(pa.string())),
                            ("configuration", pa.map_(pa.string(), pa.string())),
                            ("createdTime", pa.int64()),
                        ]
                    ),
                ),
                (
                    "protocol",
                    pa.struct(
                        [
                            ("minReaderVersion", pa.int32()),
                            ("minWriterVersion", pa.int32()),
                            ("readerFeatures", pa.list_(pa.string())),
                            ("writerFeatures", pa.list_(pa.string())),
                        ]
                    ),
                ),
            ]
        )
        rows = []
        for a in actions:
            ((kind, body),) = a.items()
            body = dict(body)
            for m in ("partitionValues", "configuration"):
                if m in body:
                    body[m] = list(body[m].items())
            body.pop("format", None)
            rows.append({kind: body})
        for i in range(parts):
            name = (
                f"{version:020d}.checkpoint.parquet"
                if parts == 1
                else f"{version:020d}.checkpoint.{i + 1:010d}.{parts:010d}.parquet"
            )
            pq.write_table(pa.Table.from_pylist(rows[i::parts], schema=schema), self.log / name)
        (self.log / "_last_checkpoint").write_text(json.dumps({"version": version, "size": len(rows)}))


def _users(df) -> list[int]:
    return sorted(df["user_id"].tolist())


@pytest.fixture
def table(tmp_path) -> Table:
    """Version 0: two files (users 1,2 on D1; 3 on D2). Version 1: the D1 file replaced by users 4,5."""
    t = Table(tmp_path / "risk")
    a, b = t.data("a", D1, [1, 2]), t.data("b", D2, [3])
    t.commit(0, {"protocol": PROTOCOL}, {"metaData": _meta()}, {"add": a}, {"add": b})
    t.commit(1, {"remove": {"path": a["path"], "dataChange": True}}, {"add": t.data("c", D1, [4, 5])})
    return t


def test_latest_version_and_time_travel(table):
    latest = read_delta(str(table.root))
    assert list(latest.columns) == ["user_id", "churn_probability", "snapshot_date"]
    assert _users(latest) == [3, 4, 5]
    by_user = dict(zip(latest.user_id, latest.snapshot_date))
    assert by_user == {3: dt.date(2026, 11, 2), 4: dt.date(2026, 10, 26), 5: dt.date(2026, 10, 26)}
    assert latest.set_index("user_id").churn_probability.to_dict() == {3: 0.03, 4: 0.04, 5: 0.05}
    assert _users(read_delta(str(table.root), version=0)) == [1, 2, 3]


def test_partition_filter(table):
    assert _users(read_delta(str(table.root), filters={"snapshot_date": D1})) == [4, 5]
    assert _users(read_delta(str(table.root), version=0, filters={"snapshot_date": D1})) == [1, 2]
    empty = read_delta(str(table.root), filters={"snapshot_date": "2020-01-01"})
    assert empty.empty and list(empty.columns) == ["user_id", "churn_probability", "snapshot_date"]


def test_version_out_of_range(table):
    with pytest.raises(ValueError, match="version 2 does not exist"):
        read_delta(str(table.root), version=2)


def test_not_a_delta_table(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Delta table"):
        read_delta(str(tmp_path))


def test_starts_from_the_checkpoint_when_early_commits_are_gone(tmp_path):
    t = Table(tmp_path / "risk")
    a, b, c = t.data("a", D1, [1, 2]), t.data("b", D2, [3]), t.data("c", D1, [4, 5])
    # the state at version 1 (a removed, b and c live), with a tombstone row as Spark writes it
    t.checkpoint(
        1,
        [
            {"protocol": PROTOCOL},
            {"metaData": _meta()},
            {"add": b},
            {"add": c},
            {"remove": {"path": a["path"], "deletionTimestamp": 0, "dataChange": True}},
        ],
    )
    t.commit(2, {"add": t.data("d", D2, [6])})  # 0.json and 1.json were cleaned up
    assert _users(read_delta(str(t.root))) == [3, 4, 5, 6]
    assert _users(read_delta(str(t.root), version=1)) == [3, 4, 5]
    with pytest.raises(FileNotFoundError, match="Delta commit 0 is missing"):
        read_delta(str(t.root), version=0)


def test_only_a_checkpoint_remains(tmp_path):
    t = Table(tmp_path / "risk")
    t.checkpoint(4, [{"protocol": PROTOCOL}, {"metaData": _meta()}, {"add": t.data("a", D1, [7, 8])}])
    got = read_delta(str(t.root))
    assert _users(got) == [7, 8] and set(got.snapshot_date) == {dt.date(2026, 10, 26)}


def test_multi_part_checkpoint_needs_every_part(tmp_path):
    t = Table(tmp_path / "risk")
    actions = [
        {"protocol": PROTOCOL},
        {"metaData": _meta()},
        {"add": t.data("a", D1, [1])},
        {"add": t.data("b", D2, [2])},
    ]
    t.checkpoint(3, actions, parts=2)
    assert _users(read_delta(str(t.root))) == [1, 2]
    next(t.log.glob("*.checkpoint.0000000002.*.parquet")).unlink()  # an incomplete checkpoint is not used
    with pytest.raises(FileNotFoundError, match="no commits or checkpoints"):
        read_delta(str(t.root))


@pytest.mark.parametrize(
    "protocol, configuration, message",
    [
        (
            {
                "minReaderVersion": 3,
                "minWriterVersion": 7,
                "readerFeatures": ["deletionVectors"],
                "writerFeatures": ["deletionVectors"],
            },
            {},
            "deletionVectors",
        ),
        (
            {
                "minReaderVersion": 3,
                "minWriterVersion": 7,
                "readerFeatures": ["v2Checkpoint"],
                "writerFeatures": ["v2Checkpoint"],
            },
            {},
            "v2Checkpoint",
        ),
        (
            {
                "minReaderVersion": 3,
                "minWriterVersion": 7,
                "readerFeatures": ["timestampNtz"],
                "writerFeatures": ["timestampNtz"],
            },
            {},
            "timestampNtz",
        ),
        (
            {
                "minReaderVersion": 3,
                "minWriterVersion": 7,
                "readerFeatures": ["columnMapping"],
                "writerFeatures": ["columnMapping"],
            },
            {"delta.columnMapping.mode": "name"},
            "column mapping",
        ),
        ({"minReaderVersion": 2, "minWriterVersion": 5}, {"delta.columnMapping.mode": "id"}, "column mapping"),
        ({"minReaderVersion": 4, "minWriterVersion": 7}, {}, "minReaderVersion 4"),
    ],
)
def test_refuses_reader_features_it_cannot_read(tmp_path, protocol, configuration, message):
    t = Table(tmp_path / "risk")
    t.commit(0, {"protocol": protocol}, {"metaData": _meta(configuration)}, {"add": t.data("a", D1, [1])})
    with pytest.raises(UnsupportedTableError, match=message):
        read_delta(str(t.root))


@pytest.mark.parametrize(
    "protocol, configuration",
    [
        ({"minReaderVersion": 2, "minWriterVersion": 5}, {"delta.columnMapping.mode": "none"}),
        (
            {
                "minReaderVersion": 3,
                "minWriterVersion": 7,
                "readerFeatures": ["columnMapping", "vacuumProtocolCheck"],
                "writerFeatures": ["columnMapping"],
            },
            {},
        ),
    ],
)
def test_reads_features_that_change_nothing_for_a_reader(tmp_path, protocol, configuration):
    t = Table(tmp_path / "risk")
    t.commit(0, {"protocol": protocol}, {"metaData": _meta(configuration)}, {"add": t.data("a", D1, [1, 2])})
    assert _users(read_delta(str(t.root))) == [1, 2]


def test_protocol_upgrade_applies_from_its_version_on(table):
    dv = {
        "minReaderVersion": 3,
        "minWriterVersion": 7,
        "readerFeatures": ["deletionVectors"],
        "writerFeatures": ["deletionVectors"],
    }
    table.commit(2, {"protocol": dv})
    assert _users(read_delta(str(table.root), version=1)) == [3, 4, 5]  # before the upgrade: still readable
    with pytest.raises(UnsupportedTableError, match="deletionVectors"):
        read_delta(str(table.root))


def test_refuses_files_with_deletion_vectors_whatever_the_protocol_says(table):
    add = table.data("d", D2, [9])
    add["deletionVector"] = {
        "storageType": "u",
        "pathOrInlineDv": "ab^-aqEH.-t@S}K{vb[*k^",
        "offset": 1,
        "sizeInBytes": 36,
        "cardinality": 1,
    }
    table.commit(2, {"add": add})
    with pytest.raises(UnsupportedTableError, match="deletion vectors"):
        read_delta(str(table.root))


def test_refuses_v2_checkpoints(table):
    (table.log / f"{1:020d}.checkpoint.80a083e8-7026-4e79-81be-64bd76c43a11.json").write_text("{}\n")
    with pytest.raises(UnsupportedTableError, match="V2"):
        read_delta(str(table.root))


def test_refuses_a_last_checkpoint_that_points_to_a_v2_checkpoint(table):
    (table.log / "_last_checkpoint").write_text(json.dumps({"version": 1, "size": 3, "v2Checkpoint": {}}))
    with pytest.raises(UnsupportedTableError, match="V2 checkpoints"):
        read_delta(str(table.root))


def test_absolute_file_uri_paths(tmp_path, table):
    other = Table(tmp_path / "clone")
    add = dict(table.data("e", D2, [11]))
    add["path"] = (table.root / add["path"]).resolve().as_uri()
    other.commit(0, {"protocol": PROTOCOL}, {"metaData": _meta()}, {"add": add})
    assert _users(read_delta(str(other.root))) == [11]
