"""Input drift of the score snapshot against the training snapshots, as a population stability index per channel.

Why a module of its own: the PSI arithmetic is pure and easy to get subtly wrong (empty bins, tied quantile edges,
which bin a value on an edge belongs to), so it lives apart from the Spark aggregation and from the HTML, where it
can be unit-tested on hand-made counts. The Spark side never collects rows: it computes one approximate quantile
set on the training population and one small (population, channel, bin) -> count table.

The drifted quantity is log1p of each user's channel total over the whole sequence (sequences are time-major,
``sequence[t * C + c]``). Bins are the training population's deciles; a value equal to an edge falls in the lower
bin (``bin = number of edges strictly below the value``).
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable, List, Mapping, Sequence, Tuple

import numpy as np
import pandas as pd

PSI_BINS = 10
PSI_EPS = 1e-4
PSI_COLUMNS = ["channel", "psi", "n_expected", "n_actual", "n_bins"]
QUANTILE_ERROR = 0.001  # relative error of Spark's approxQuantile for the training edges

Counts = Mapping[Tuple[str, int, int], int]  # (population "expected" | "actual", channel index, bin) -> users


class DriftSkipped(Exception):
    """The drift figures cannot be computed for this run; the message says why (shown as a note on the report)."""


def psi(expected_counts: Iterable[float], actual_counts: Iterable[float], eps: float = PSI_EPS) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` over bin shares; empty bins are floored at ``eps``.

    ``expected_counts`` is the reference (training) population, ``actual_counts`` the new one, bin by bin.
    Returns NaN when either population is empty.
    """
    e = np.asarray(list(expected_counts), dtype=float)
    a = np.asarray(list(actual_counts), dtype=float)
    if e.shape != a.shape:
        raise ValueError(f"psi: {len(e)} expected bins vs {len(a)} actual bins")
    if e.sum() <= 0 or a.sum() <= 0:
        return float("nan")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def distinct_edges(quantiles: Iterable[float]) -> List[float]:
    """Sorted distinct bin edges from quantiles: tied quantiles (e.g. a channel that is mostly zero) collapse."""
    return sorted({float(q) for q in quantiles if q is not None and not np.isnan(q)})


def psi_table(channels: Sequence[str], edges: Sequence[Sequence[float]], counts: Counts) -> pd.DataFrame:
    """One row per channel: PSI, users in each population and number of bins (``len(edges[c]) + 1``)."""
    if len(edges) != len(channels):
        raise ValueError(f"psi_table: {len(channels)} channels but {len(edges)} edge lists")
    rows = []
    for c, name in enumerate(channels):
        k = len(edges[c]) + 1
        e = [int(counts.get(("expected", c, b), 0)) for b in range(k)]
        a = [int(counts.get(("actual", c, b), 0)) for b in range(k)]
        rows.append((name, psi(e, a), sum(e), sum(a), k))
    return pd.DataFrame(rows, columns=PSI_COLUMNS)


def flagged(table: pd.DataFrame, threshold: float) -> List[str]:
    """Channels whose PSI is strictly above ``threshold`` (NaN never flags)."""
    if table is None or table.empty:
        return []
    return [str(c) for c, v in zip(table["channel"], table["psi"]) if np.isfinite(float(v)) and float(v) > threshold]


def channel_psi(
    features, train: Sequence[dt.date], score: dt.date, channels: Sequence[str], n_buckets: int
) -> pd.DataFrame:
    """PSI per channel of a feature table DataFrame (``snapshot_date``, ``sequence``): score vs training snapshots.

    Raises :class:`DriftSkipped` when a population is empty or the sequences do not have ``n_buckets * C``
    elements (a feature table built with another configuration).
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    C, T = len(channels), int(n_buckets)

    def total(c: int):
        # sum over t of sequence[t*C + c]: keep the elements whose index is c modulo C, then add them up
        only_c = F.filter(F.col("sequence"), lambda x, i: (i % C) == c)
        return F.aggregate(only_c, F.lit(0.0), lambda acc, x: acc + F.coalesce(x, F.lit(0.0)))

    pop = F.when(F.col("snapshot_date") == F.lit(score), F.lit("actual")).otherwise(F.lit("expected"))
    base = features.where(F.col("snapshot_date").isin([*train, score]) & F.col("sequence").isNotNull()).select(
        pop.alias("_pop"),
        F.size("sequence").alias("_len"),
        *[F.log1p(F.greatest(total(c), F.lit(0.0))).alias(f"_c{c}") for c in range(C)],
    )
    base = base.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        sizes = {
            r["_pop"]: r
            for r in base.groupBy("_pop")
            .agg(F.count(F.lit(1)).alias("n"), F.min("_len").alias("lo"), F.max("_len").alias("hi"))
            .collect()
        }
        if "expected" not in sizes:
            raise DriftSkipped("input drift skipped: no feature rows for the training snapshots")
        if "actual" not in sizes:
            raise DriftSkipped(f"input drift skipped: no feature rows for the score snapshot {score}")
        bad = [(k, r["lo"], r["hi"]) for k, r in sizes.items() if r["lo"] != T * C or r["hi"] != T * C]
        if bad:
            raise DriftSkipped(
                f"input drift skipped: sequence length {bad} != n_buckets*channels = {T}*{C}; "
                "the feature table was built with another configuration"
            )
        probs = [i / PSI_BINS for i in range(1, PSI_BINS)]
        quantiles = base.where(F.col("_pop") == "expected").approxQuantile(
            [f"_c{c}" for c in range(C)], probs, QUANTILE_ERROR
        )
        edges = [distinct_edges(q) for q in quantiles]

        def bin_of(c: int):
            col = F.col(f"_c{c}")
            return sum(((col > F.lit(e)).cast("int") for e in edges[c]), F.lit(0))

        binned = base.select(
            "_pop",
            F.explode(F.array(*[F.struct(F.lit(c).alias("ch"), bin_of(c).alias("bin")) for c in range(C)])).alias("b"),
        )
        rows = (
            binned.groupBy("_pop", F.col("b.ch").alias("ch"), F.col("b.bin").alias("bin"))
            .agg(F.count(F.lit(1)).alias("n"))
            .collect()
        )
    finally:
        base.unpersist()
    return psi_table(channels, edges, {(r["_pop"], int(r["ch"]), int(r["bin"])): int(r["n"]) for r in rows})
