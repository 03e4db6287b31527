"""The feature kernel's batch handling, without Spark: the rows it yields never depend on where batches are cut."""

import numpy as np
import pyarrow as pa

from churn_spark.feature_spec import channels_for
from churn_spark.user_history import DAILY_SUMS, Layout, feature_batches

LAYOUT = Layout(
    channels=tuple(channels_for(["orders", "events", "reviews"])),
    n_buckets=4,
    bucket_days=7,
    long_buckets=3,
    long_bucket_days=30,
    lookback_days=60,
    horizon_days=20,
    churn_definition="no_order",
    snapshots=((20_000, "train", True), (20_030, "score", False)),
)


def _daily(seed: int = 0) -> pa.Table:
    """Random daily rows of 40 users, sorted by (user, day), one row per active day."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(40):
        days = np.sort(rng.choice(np.arange(19_850, 20_060), size=rng.integers(1, 30), replace=False))
        for d in days:
            rows.append((f"u{u:03d}", int(d), *[float(rng.integers(0, 3)) for _ in DAILY_SUMS]))
    names = ["user_id", "day", *DAILY_SUMS]
    return pa.Table.from_pylist([dict(zip(names, r)) for r in rows])


def _rows(batches) -> list:
    out = pa.Table.from_batches(list(feature_batches(LAYOUT, iter(batches)))).to_pylist()
    return sorted(out, key=lambda r: (r["snapshot_day"], r["user_id"]))


def test_rows_do_not_depend_on_batch_boundaries():
    table = _daily()
    whole = _rows(table.to_batches())
    assert whole and {r["snapshot_day"] for r in whole} == {20_000, 20_030}
    for size in (1, 2, 3, 7, 50):
        assert _rows(table.to_batches(max_chunksize=size)) == whole, size


def test_each_eligible_user_snapshot_once_and_labels_only_where_known():
    rows = _rows(_daily(1).to_batches(max_chunksize=5))
    keys = [(r["user_id"], r["snapshot_day"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert all(r["label"] in (0.0, 1.0) for r in rows if r["snapshot_day"] == 20_000)
    assert all(r["label"] is None for r in rows if r["snapshot_day"] == 20_030)
    assert all(len(r["sequence"]) == 4 * len(LAYOUT.channels) for r in rows)
    assert all(len(r["long_sequence"]) == 3 * len(LAYOUT.channels) for r in rows)


def test_no_rows_for_an_empty_partition():
    assert list(feature_batches(LAYOUT, iter([]))) == []
