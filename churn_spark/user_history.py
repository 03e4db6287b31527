"""Feature rows from each user's daily activity: numpy over Arrow batches, run by Spark with ``mapInArrow``.

Why not Spark SQL aggregations: every snapshot needs the user's whole history before it (lifetime statistics,
purchase rhythm) plus the buckets of its window, so a relational plan copies each (user, day) row once per snapshot
and aggregates the copies in two levels — seven copies of every day for a default run, most of the feature build's
time. Here each partition's daily rows arrive sorted by (user, day) and every snapshot's buckets, sums, first/last
days and gaps are filled with ``np.bincount`` and ``ufunc.at`` over the whole chunk at once; a user's rows are
never split between two computations (the rows of a chunk's last user wait for the next chunk). Memory per task
is one chunk of Arrow batches (:data:`KERNEL_ROWS` rows) plus one user's history.

The kernel also sums each (user, day): it reads the narrow source rows themselves (``INPUT_COLUMNS``, one per
order, event or review), sorted by (user, day). Spark's hash aggregation of the same rows into daily sums cost more
than the sort and the Arrow transfer of the narrow rows together (benchmarks/RESULTS.md, 60,000 users).

The contract is :mod:`churn_spark.feature_spec`; ``tests/test_sequences.py`` checks this against the pandas oracle
(:mod:`churn_spark.reference`), and ``benchmarks/bench_polars.py`` against an independent Polars implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql.pandas.types import from_arrow_schema

from .feature_spec import EVENT_CHANNEL, FEATURE_STATIC

# what one input row is (its ``kind``): an order that is a purchase or a return, a review, an event of a type that
# has no channel, or an event of one of EVENT_CHANNEL's types
PURCHASE, RETURN, REVIEW, OTHER_EVENT = 0, 1, 2, 3
EVENT_KIND = {event_type: 4 + i for i, event_type in enumerate(EVENT_CHANNEL)}
# the kernel's input: ``day`` in days since 1970-01-01, ``value`` an order's amount or a review's rating, ``items``
# an order's items (both null for events)
INPUT_COLUMNS = ["user_id", "day", "kind", "value", "items"]
# the per-(user, day) sums the kernel computes first: channel values plus ``any_order`` (orders of any status) and
# ``rating_sum`` (for the bucket's mean rating)
DAILY_SUMS = [
    "orders",
    "spend",
    "items",
    "returns",
    "views",
    "carts",
    "favourites",
    "searches",
    "reviews",
    "rating_sum",
    "any_order",
]
# the numeric statics the kernel computes: all of the contract's but tenure, which needs the users source
RHYTHM_AND_LIFETIME = [c for c in FEATURE_STATIC if c != "tenure_days"]
# what :func:`feature_batches` yields; ``snapshot_day`` and ``first_order_day`` are days since 1970-01-01
ARROW_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("snapshot_day", pa.int32()),
        ("split", pa.string()),
        ("label", pa.float64()),
        ("sequence", pa.list_(pa.float32())),
        ("long_sequence", pa.list_(pa.float32())),
        ("first_order_day", pa.int32()),
        *[(c, pa.float64()) for c in RHYTHM_AND_LIFETIME],
    ]
)
OUTPUT_SCHEMA = from_arrow_schema(ARROW_SCHEMA)  # the same, as the Spark schema mapInArrow takes


@dataclass(frozen=True)
class Layout:
    """Everything the kernel needs: the bucket grids, windows and the run's snapshots (day number, split, labelled)."""

    channels: Tuple[str, ...]
    n_buckets: int
    bucket_days: int
    long_buckets: int
    long_bucket_days: int
    lookback_days: int
    horizon_days: int
    churn_definition: str
    snapshots: Tuple[Tuple[int, str, bool], ...]


def feature_batches(layout: Layout, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: rows of ``INPUT_COLUMNS`` sorted by (user_id, day) within the partition.

    Spark's Arrow batches (10,000 rows by default) are gathered into chunks of at least :data:`KERNEL_ROWS` rows:
    each call of the kernel costs some hundred numpy calls whatever its size. The user ids stay an Arrow array:
    the kernel works on each row's user *number* within the chunk (:func:`_user_numbers`), and only each user's
    first row is taken as a string for the output (a Python string per input row cost more than the daily sums).
    """
    carry: Tuple[Dict[str, np.ndarray], pa.Array] | None = None
    for group in _groups(batches, KERNEL_ROWS):
        table = pa.Table.from_batches(group)
        ids = table.column("user_id").combine_chunks()
        cols = {name: _numpy(table.column(name).combine_chunks()) for name in table.schema.names if name != "user_id"}
        if carry is not None:
            cols = {k: np.concatenate([carry[0][k], v]) for k, v in cols.items()}
            ids = pa.concat_arrays([carry[1], ids])
        if len(ids) == 0:
            continue
        users = _user_numbers(ids)
        last_start = int(np.searchsorted(users, users[-1]))  # the chunk's last user may go on in the next one
        if last_start:
            head = {"user_id": users[:last_start], **{k: v[:last_start] for k, v in cols.items()}}
            out = user_features(layout, head, ids)
            if out.num_rows:
                yield out
        carry = ({k: v[last_start:] for k, v in cols.items()}, ids.slice(last_start))
    if carry is not None and len(carry[1]):
        out = user_features(layout, {"user_id": _user_numbers(carry[1]), **carry[0]}, carry[1])
        if out.num_rows:
            yield out


# input rows per kernel call: one partition's 11.6 M rows at 60,000 users took the kernel 4.9 s (one thread) in
# 10,000-row calls, 3.6 s in calls of this size; the memory held is a few MB
KERNEL_ROWS = 100_000


def _groups(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[List[pa.RecordBatch]]:
    """Consecutive batches, gathered until they hold at least ``rows`` rows (the last group may hold fewer)."""
    group: List[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        group.append(batch)
        held += batch.num_rows
        if held >= rows:
            yield group
            group, held = [], 0
    if group:
        yield group


def _user_numbers(ids: pa.Array) -> np.ndarray:
    """Ids sorted so that each user's rows are adjacent -> each row's user number (0, 0, 1, 1, 1, 2, ...)."""
    if len(ids) < 2:
        return np.zeros(len(ids), np.int64)
    change = pc.fill_null(pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)), True)
    return np.r_[0, np.cumsum(change.to_numpy(zero_copy_only=False))]


def _numpy(col: pa.Array) -> np.ndarray:
    return col.to_numpy(zero_copy_only=False).astype(np.float64 if pa.types.is_floating(col.type) else np.int64)


def daily_sums(cols: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Input rows sorted by (user, day) -> one row per (user, day): ``user_id``, ``day`` and :data:`DAILY_SUMS`."""
    uid, day, kind = cols["user_id"], cols["day"], cols["kind"]
    new = np.r_[True, (uid[1:] != uid[:-1]) | (day[1:] != day[:-1])] if len(uid) else np.zeros(0, bool)
    g = np.cumsum(new) - 1
    n = int(new.sum())

    def count(mask):
        return _count(g[mask], n)

    def total(mask, column):
        return _sum(g[mask], cols[column][mask], n)

    purchase, returned, review = kind == PURCHASE, kind == RETURN, kind == REVIEW
    sums = {
        "orders": count(purchase),
        "spend": total(purchase, "value"),
        "items": total(purchase, "items"),
        "returns": count(returned),
        "reviews": count(review),
        "rating_sum": total(review, "value"),
        "any_order": count(kind <= RETURN),
        **{EVENT_CHANNEL[et]: count(kind == code) for et, code in EVENT_KIND.items()},
    }
    return {"user_id": uid[new], "day": day[new], **{c: sums[c] for c in DAILY_SUMS}}


def user_features(layout: Layout, rows: Dict[str, np.ndarray], ids: pa.Array) -> pa.RecordBatch:
    """Feature rows of every eligible (user, snapshot) for complete users' input rows sorted by (user, day).

    ``rows["user_id"]`` is each row's user number (:func:`_user_numbers`: 0, 1, ... in row order), ``ids`` the
    user ids of the same rows. The daily rows keep those numbers, so they index the per-user arrays directly.
    """
    names = ids.take(pa.array(np.flatnonzero(np.r_[True, np.diff(rows["user_id"]) != 0])))  # one per user
    cols = daily_sums(rows)
    u = cols["user_id"]
    n_users = len(names)
    parts = [
        _snapshot_rows(layout, cols, u, n_users, snap, split, labelled) for snap, split, labelled in layout.snapshots
    ]
    parts = [(names.take(pa.array(users)), snap, split, cols_) for users, snap, split, cols_ in parts if len(users)]
    return _record_batch(parts)


def _snapshot_rows(layout: Layout, cols, u, n_users: int, snap: int, split: str, labelled: bool):
    """(eligible user indices, snapshot, split, {column: values}) for one snapshot of a chunk of complete users."""
    day = cols["day"]
    k = snap - day
    past = k >= 1
    bought = cols["orders"] > 0
    bought_past = past & bought
    eligible = np.flatnonzero(_count(u[bought_past & (k <= layout.lookback_days)], n_users) > 0)
    if not len(eligible):
        return eligible, snap, split, {}
    out: Dict[str, np.ndarray] = {
        "sequence": _buckets(layout, cols, u, n_users, k, layout.n_buckets, layout.bucket_days),
        "long_sequence": _buckets(layout, cols, u, n_users, k, layout.long_buckets, layout.long_bucket_days),
    }
    orders = _sum(u[past], cols["orders"][past], n_users)
    spend = _sum(u[past], cols["spend"][past], n_users)
    last_purchase = _extreme(np.maximum, u[bought_past], day[bought_past], n_users)
    ordered_past = past & (cols["any_order"] > 0)  # an order of any status
    out["first_order_day"] = _extreme(np.minimum, u[ordered_past], day[ordered_past], n_users)
    out["days_since_last_order"] = snap - last_purchase
    out["days_since_last_event"] = snap - _extreme(np.maximum, u[past], day[past], n_users)
    out["lifetime_orders"], out["lifetime_spend"] = orders, spend
    out["mean_order_value"] = np.divide(spend, orders, out=np.zeros(n_users), where=orders > 0)
    out.update(_rhythm(u[bought_past], day[bought_past], n_users, snap, out["days_since_last_order"]))
    future = (k <= 0) & (k > -layout.horizon_days)
    if layout.churn_definition == "no_order":
        churned = _sum(u[future], cols["orders"][future], n_users) == 0
    else:
        churned = _count(u[future], n_users) == 0
    out["label"] = np.where(churned, 1.0, 0.0) if labelled else np.full(n_users, np.nan)
    return eligible, snap, split, {name: v[eligible] for name, v in out.items()}


def _buckets(layout: Layout, cols, u, n_users: int, k, n: int, width: int) -> np.ndarray:
    """(users, n * channels) time-major bucket sums of the days 1..n*width before the snapshot (float64)."""
    channels = layout.channels
    if not n:
        return np.zeros((n_users, 0))
    inside = (k >= 1) & (k <= n * width)
    idx = u[inside] * n + (n - 1 - (k[inside] - 1) // width)
    size = n_users * n
    out = np.empty((size, len(channels)))
    for c, name in enumerate(channels):
        if name == "active_days":  # one daily row per active day
            out[:, c] = _count(idx, size)
        elif name == "rating_mean":
            reviews = _sum(idx, cols["reviews"][inside], size)
            ratings = _sum(idx, cols["rating_sum"][inside], size)
            out[:, c] = np.divide(ratings, reviews, out=np.zeros(size), where=reviews > 0)
        else:
            out[:, c] = _sum(idx, cols[name][inside], size)
    return out.reshape(n_users, n * len(channels))


def _rhythm(up, dp, n_users: int, snap: int, since_last) -> Dict[str, np.ndarray]:
    """Purchase-rhythm statics from the purchase days ``dp`` of users ``up`` (sorted, one row per day)."""
    n = _count(up, n_users)
    same = up[1:] == up[:-1]
    gaps, ug = np.diff(dp)[same].astype(np.float64), up[1:][same]
    n_gaps = np.maximum(n - 1, 1)
    mean = np.where(n >= 2, _sum(ug, gaps, n_users) / n_gaps, 0.0)
    spread = np.sqrt(_sum(ug, (gaps - mean[ug]) ** 2, n_users) / n_gaps)
    first = _extreme(np.minimum, up, dp, n_users)
    return {
        "purchase_days": n.astype(np.float64),
        "days_since_first_purchase": snap - first,
        "gap_mean_days": mean,
        "gap_std_days": np.where(n >= 3, spread, 0.0),
        "overdue_ratio": np.divide(since_last, mean, out=np.zeros(n_users), where=n >= 2),
    }


def _count(idx, size: int) -> np.ndarray:
    return np.bincount(idx, minlength=size).astype(np.float64)


def _sum(idx, weights, size: int) -> np.ndarray:
    return np.bincount(idx, weights=weights, minlength=size) if len(idx) else np.zeros(size)


def _extreme(ufunc, idx, values, size: int) -> np.ndarray:
    """Per-index max or min of ``values`` as float64 (NaN where an index has none)."""
    fill = -np.inf if ufunc is np.maximum else np.inf
    out = np.full(size, fill)
    ufunc.at(out, idx, values.astype(np.float64))
    return np.where(np.isinf(out), np.nan, out)


def _record_batch(parts: List) -> pa.RecordBatch:
    """One Arrow batch of :data:`OUTPUT_SCHEMA` from the per-snapshot parts."""
    if not parts:
        return pa.RecordBatch.from_pylist([], schema=ARROW_SCHEMA)
    cat = lambda name: np.concatenate([p[3][name] for p in parts])  # noqa: E731
    rows = sum(len(p[0]) for p in parts)
    label = cat("label")
    first = cat("first_order_day")
    arrays = [
        pa.concat_arrays([p[0].cast(pa.string()) for p in parts]),
        pa.array(np.concatenate([np.full(len(p[0]), p[1], dtype=np.int32) for p in parts])),
        pa.array(np.concatenate([np.full(len(p[0]), p[2], dtype=object) for p in parts]), type=pa.string()),
        pa.array(label, mask=np.isnan(label)),
        _lists(cat("sequence"), rows),
        _lists(cat("long_sequence"), rows),
        pa.array(np.nan_to_num(first).astype(np.int32), mask=np.isnan(first)),
        *[pa.array(cat(c)) for c in RHYTHM_AND_LIFETIME],
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=ARROW_SCHEMA)


def _lists(matrix: np.ndarray, rows: int) -> pa.ListArray:
    """(rows, width) float64 sums -> list<float> rows, rounded to float32 once."""
    width = matrix.shape[1] if matrix.ndim == 2 else 0
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.astype(np.float32).ravel()))
