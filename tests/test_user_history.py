"""The feature kernel without Spark: its daily sums of hand-made rows, and rows that never depend on where batches
are cut."""

import numpy as np
import pyarrow as pa

from churn_spark import user_history
from churn_spark.feature_spec import channels_for
from churn_spark.user_history import (
    EVENT_KIND,
    INPUT_COLUMNS,
    OTHER_EVENT,
    PURCHASE,
    RETURN,
    REVIEW,
    Layout,
    daily_sums,
    feature_batches,
)

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
    """Random input rows of 40 users, sorted by (user, day), one to four rows of random kinds per active day."""
    rng = np.random.default_rng(seed)
    kinds = [PURCHASE, RETURN, REVIEW, OTHER_EVENT, *EVENT_KIND.values()]
    rows = []
    for u in range(40):
        days = np.sort(rng.choice(np.arange(19_850, 20_060), size=rng.integers(1, 30), replace=False))
        for d in days:
            for _ in range(rng.integers(1, 5)):
                kind = int(rng.choice(kinds))
                value = float(rng.integers(1, 6)) if kind in (PURCHASE, RETURN, REVIEW) else None
                items = float(rng.integers(1, 4)) if kind in (PURCHASE, RETURN) else None
                rows.append((f"u{u:03d}", int(d), kind, value, items))
    return pa.Table.from_pylist([dict(zip(INPUT_COLUMNS, r)) for r in rows])


def test_daily_sums_of_hand_made_rows():
    """Two users: a's day 10 has a purchase, a return, two views and a review; a's day 12 only an event of a type
    without a channel (still an active day); b's day 10 a purchase."""
    rows = [
        ("a", 10, PURCHASE, 30.0, 2.0),
        ("a", 10, RETURN, 5.0, 1.0),
        ("a", 10, EVENT_KIND["view"], None, None),
        ("a", 10, REVIEW, 4.0, None),
        ("a", 10, EVENT_KIND["view"], None, None),
        ("a", 12, OTHER_EVENT, None, None),
        ("b", 10, PURCHASE, 7.5, 1.0),
    ]
    table = pa.Table.from_pylist([dict(zip(INPUT_COLUMNS, r)) for r in rows])
    cols = {c: table.column(c).to_numpy() for c in INPUT_COLUMNS}
    d = daily_sums(cols)
    assert list(d["user_id"]) == ["a", "a", "b"] and list(d["day"]) == [10, 12, 10]
    expected = {
        "orders": [1, 0, 1],
        "spend": [30, 0, 7.5],
        "items": [2, 0, 1],
        "returns": [1, 0, 0],
        "any_order": [2, 0, 1],
        "views": [2, 0, 0],
        "carts": [0, 0, 0],
        "reviews": [1, 0, 0],
        "rating_sum": [4, 0, 0],
    }
    for name, values in expected.items():
        assert list(d[name]) == values, name


def _rows(batches) -> list:
    out = pa.Table.from_batches(list(feature_batches(LAYOUT, iter(batches)))).to_pylist()
    return sorted(out, key=lambda r: (r["snapshot_day"], r["user_id"]))


def test_rows_do_not_depend_on_batch_boundaries(monkeypatch):
    """Neither Spark's batches nor the kernel's chunks of them (``KERNEL_ROWS``) may cut a user in two."""
    table = _daily()
    whole = _rows(table.to_batches())
    assert whole and {r["snapshot_day"] for r in whole} == {20_000, 20_030}
    for kernel_rows in (1, 4, 60, 100_000):
        monkeypatch.setattr(user_history, "KERNEL_ROWS", kernel_rows)
        for size in (1, 2, 3, 7, 50):
            assert _rows(table.to_batches(max_chunksize=size)) == whole, (kernel_rows, size)


def test_batches_gathered_in_order_into_chunks_of_at_least_the_given_rows():
    batches = pa.Table.from_pydict({"x": list(range(10))}).to_batches(max_chunksize=3)  # 3, 3, 3, 1 rows
    groups = list(user_history._groups(iter(batches), 5))
    assert [[b.num_rows for b in g] for g in groups] == [[3, 3], [3, 1]]
    assert [x for g in groups for b in g for x in b.column(0).to_pylist()] == list(range(10))


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
