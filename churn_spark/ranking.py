"""Ranks and running sums over a whole snapshot without putting the snapshot into one task.

A window ``partitionBy("snapshot_date").orderBy(score)`` sends every user of a snapshot to a single task: at 100 M
users one task sorts 100 M rows. Here the rows are first cut into ``buckets`` by approximate quantiles of the first
sort key (one distributed pass), each (bucket, group) is ranked in its own task, and the few per-bucket totals (one
row per bucket and group) are collected to the driver and turned into offsets that are added back. The bucket is a
pure function of the sort key, so equal keys always share a bucket (ties get the same rank, exactly as ``F.rank()``
over the whole group would give them) and a re-executed stage assigns the same buckets.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

QUANTILE_REL_ERROR = 0.001  # bucket cuts only balance the tasks: their accuracy never changes a rank


def _bucket(key: str, ascending: bool, cuts: Sequence[float]) -> Column:
    """The bucket of a row, increasing in sort order: how many cuts lie at or below the key (ascending) or above it
    (descending). A null key goes where Spark sorts it: first ascending, last descending."""
    if not cuts:
        return F.lit(0)
    below = sum(((F.col(key) >= F.lit(c)).cast("int") for c in cuts[1:]), (F.col(key) >= F.lit(cuts[0])).cast("int"))
    bucket = below if ascending else F.lit(len(cuts)) - below
    return F.when(F.col(key).isNull(), F.lit(0 if ascending else len(cuts))).otherwise(bucket)


def _offsets(totals, groups: List[str], sums: List[str]) -> Tuple[list, dict]:
    """Per (bucket, group): rows and sums in earlier buckets of the group; per group: its size."""
    before_n: Dict[tuple, int] = defaultdict(int)
    before_s: Dict[tuple, List[float]] = defaultdict(lambda: [0.0] * len(sums))
    rows = []
    for r in sorted(totals, key=lambda r: r["_bucket"]):
        g = tuple(r[c] for c in groups)
        rows.append((r["_bucket"], *g, before_n[g], *before_s[g]))
        before_n[g] += r["_n"]
        before_s[g] = [a + float(r[f"_t_{k}"] or 0.0) for a, k in zip(before_s[g], sums)]
    return rows, dict(before_n)


def rank_in_groups(df: DataFrame, groups: List[str], order: List[Tuple[str, bool]], **kw) -> DataFrame:
    """:func:`ranked_with_sizes` without the sizes."""
    return ranked_with_sizes(df, groups, order, **kw)[0]


def ranked_with_sizes(
    df: DataFrame,
    groups: List[str],
    order: List[Tuple[str, bool]],
    *,
    rank_col: str,
    size_col: Optional[str] = None,
    running: Optional[Dict[str, Column]] = None,
    buckets: Optional[int] = None,
) -> Tuple[DataFrame, Dict[tuple, int]]:
    """``df`` with ``rank_col`` = ``F.rank()`` over ``Window.partitionBy(*groups).orderBy(*order)`` (ties share a
    rank), ``size_col`` = rows in the group, and per ``running`` entry the sum of that column over the rows of the
    group strictly before this one (for a running sum the order should be unique, e.g. end with ``user_id``).

    ``order`` is ``[(column, ascending), ...]``, nulls placed as Spark sorts them; its first column must be
    numeric. ``groups`` must be non-null (they are join keys). ``df`` is read three times (quantiles, totals,
    result): persist it when it is expensive to compute (scored model output). Also returns {group values: rows},
    known on the driver from the per-bucket totals (no further pass over ``df``)."""
    spark = df.sparkSession
    running = dict(running or {})
    n = int(buckets or spark.conf.get("spark.sql.shuffle.partitions"))
    key, ascending = order[0]
    probs = [i / n for i in range(1, n)]
    qs = df.approxQuantile(key, probs, QUANTILE_REL_ERROR) if probs else []
    cuts = sorted({float(q) for q in qs if q is not None and not math.isnan(q)})
    sums = list(running)
    part = df.withColumn("_bucket", _bucket(key, ascending, cuts))
    part = part.withColumns({f"_v_{k}": F.coalesce(c.cast("double"), F.lit(0.0)) for k, c in running.items()})
    totals = (
        part.groupBy("_bucket", *groups)
        .agg(F.count(F.lit(1)).alias("_n"), *[F.sum(f"_v_{k}").alias(f"_t_{k}") for k in sums])
        .collect()
    )
    rows, sizes = _offsets(totals, groups, sums)
    fields = {f.name: f for f in df.schema.fields}
    schema = T.StructType(
        [T.StructField("_bucket", T.IntegerType()), *[T.StructField(g, fields[g].dataType) for g in groups]]
        + [T.StructField("_off_n", T.LongType())]
        + [T.StructField(f"_off_{k}", T.DoubleType()) for k in sums]
    )
    offsets = spark.createDataFrame(rows, schema)
    if size_col:
        size_rows = [(*g, n_) for g, n_ in sizes.items()]
        size_schema = T.StructType(
            [T.StructField(g, fields[g].dataType) for g in groups] + [T.StructField(size_col, T.LongType())]
        )
        offsets = offsets.join(spark.createDataFrame(size_rows, size_schema), groups)
    sort = [F.col(c).asc() if asc else F.col(c).desc() for c, asc in order]
    w = Window.partitionBy("_bucket", *groups).orderBy(*sort)
    out = part.join(F.broadcast(offsets), ["_bucket", *groups]).withColumn(
        rank_col, (F.col("_off_n") + F.rank().over(w)).cast("long")
    )
    earlier = w.rowsBetween(Window.unboundedPreceding, -1)
    for k in sums:
        out = out.withColumn(k, F.col(f"_off_{k}") + F.coalesce(F.sum(f"_v_{k}").over(earlier), F.lit(0.0)))
    return out.drop("_bucket", "_off_n", *[f"_off_{k}" for k in sums], *[f"_v_{k}" for k in sums]), sizes


def group_totals(df: DataFrame, groups: List[str], sums: Dict[str, Column]) -> DataFrame:
    """``df`` with per-group sums as columns: an aggregation (partial sums in every task) joined back by broadcast,
    instead of a window over the group that would put the whole group into one task."""
    agg = df.groupBy(*groups).agg(*[F.sum(c).alias(k) for k, c in sums.items()])
    return df.join(F.broadcast(agg), groups, "left")
