"""Sparse retailer lake (``churn-spark generate-lake --profile sparse``): orders only, mostly one-time buyers.

The demo lake is the easy case (weekly browsing, most users order often). A real retailer's purchase history is
sparse: most customers buy once, few come back within a quarter, and there is no clickstream. This profile
produces that shape so the hard case can be developed and tested without real data.

Customers follow a buy-till-you-die process (the BG/NBD family, in the variant where a customer may also leave
right after the first purchase): while alive a customer buys as a Poisson process with a personal rate
λ ~ Gamma (gamma-Poisson: very unequal purchase frequencies); after every purchase they leave for good with a
personal probability p ~ Beta (beta-geometric), more likely after a refunded or cancelled order. New customers
arrive over the whole history, growing, with a burst before Christmas; purchases peak there too (thinning of the
Poisson process). Spend is long-tailed: a lognormal price level per customer x items x per-order noise.

Reproducible without Spark: customers are simulated in fixed blocks of ``BLOCK`` ids, each block from its own numpy
generator seeded by ``(seed, block)``. Spark runs the blocks with ``mapInPandas`` (so generation is distributed and
independent of the partitioning), and :func:`lake_shape` re-simulates them with numpy alone.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from dataclasses import dataclass
from functools import partial
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import storage
from .feature_spec import normalise_statuses

PURCHASE = "completed"  # what conf/default.yaml validation.purchase_statuses accepts ...
REFUNDED, CANCELLED = "refunded", "cancelled"  # ... and validation.return_statuses counts as returns
STATUSES = np.array([PURCHASE, REFUNDED, CANCELLED])
BLOCK = 50_000  # customers per generator block: the unit of reproducibility and of Spark parallelism
MAX_ORDERS = 10_000  # order_id = user_id * MAX_ORDERS + the customer's order number (rates are capped below it)
RAW_SCHEMA = "order_id long, user_id long, ts_s long, amount double, n_items int, status string"
RAW_COLUMNS = [c.split()[0] for c in RAW_SCHEMA.split(", ")]
# hidden columns of simulate_block (never written): the customer stayed after this order, their purchase rate per
# day and their dropout probability; churn_spark.generator_truth turns them into true churn probabilities
HIDDEN = ["stays", "rate", "dropout"]
DAY_S = 86_400


@dataclass(frozen=True)
class SparseSpec:
    """Size, seed and the process parameters (defaults tuned to a real retailer's shape, see the module doc)."""

    users: int = 20_000  # customers acquired (first order) during the history
    weeks: int = 156  # history: 3 years, so a 90-day horizon leaves room for train/validation/test snapshots
    end_date: dt.date = dt.date(2026, 11, 2)  # exclusive: no order on or after this day is written
    seed: int = 42
    dirty: bool = False  # the demo's order dirt (null ids, future timestamps, negative amounts)
    csv: bool = False  # orders as CSV with string timestamps
    # purchase rate while alive, per day: Gamma(shape, scale), mean 0.008/day (~3 a year), most customers far slower
    rate_shape: float = 0.8
    rate_scale: float = 0.01
    # chance of leaving after each purchase: Beta(a, b), mean 0.44, spread from "stays" to "one purchase and gone"
    dropout_a: float = 1.2
    dropout_b: float = 1.5
    bad_order_stay: float = 0.5  # after a refunded/cancelled order the chance of staying is multiplied by this
    refund_share: float = 0.05
    cancel_share: float = 0.03
    growth: float = 0.5  # acquisition rate at the end of the history / at its start - 1
    holiday_acquisition: float = 1.5  # extra new customers per day from 20 Nov to 24 Dec (+150 %)
    holiday_purchase: float = 0.5  # extra purchase rate of alive customers in the same weeks (+50 %)
    price_median: float = 30.0  # per-customer price level: lognormal, long right tail
    price_sigma: float = 0.8
    order_sigma: float = 0.35  # per-order noise around the customer's level
    extra_items_mean: float = 0.7  # items per order = 1 + Poisson(per-customer Gamma(1, extra_items_mean))
    horizon_days: int = 90  # lake_shape: churn = no purchase in the next horizon_days ...
    lookback_days: int = 400  # ... among customers with a purchase in the lookback_days before

    @property
    def start_date(self) -> dt.date:
        return self.end_date - dt.timedelta(weeks=self.weeks)

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.users / BLOCK)


def _holidays(spec: SparseSpec, n_days: int) -> np.ndarray:
    """1.0 on the pre-Christmas days (20 Nov - 24 Dec) of day 0 .. n_days-1 since the start, else 0.0."""
    days = np.datetime64(spec.start_date, "D") + np.arange(n_days)
    months = days.astype("datetime64[M]")
    month = months.astype(int) % 12 + 1
    dom = (days - months.astype("datetime64[D]")).astype(int) + 1
    return (((month == 11) & (dom >= 20)) | ((month == 12) & (dom <= 24))).astype(float)


def purchase_lift(spec: SparseSpec, n_days: int) -> np.ndarray:
    """The purchase-rate multiplier of alive customers on day 0 .. n_days-1 since the start (the pre-Christmas peak)."""
    return 1 + spec.holiday_purchase * _holidays(spec, n_days)


def _next_purchase(
    rng: np.random.Generator, t: np.ndarray, rate: np.ndarray, lift: np.ndarray, until: float
) -> np.ndarray:
    """Time of each customer's next purchase after ``t`` (days), or ``until`` and beyond when none before it.

    A Poisson process whose rate is ``rate * lift[day]``, by thinning: candidates at the peak rate, each kept with
    probability lift / peak, so the holiday peak needs no closed form.
    """
    peak = lift.max()
    t = t.copy()
    pending = np.ones(t.size, dtype=bool)
    while pending.any():
        i = np.flatnonzero(pending)
        t[i] += rng.exponential(1.0 / (rate[i] * peak))
        inside = t[i] < until
        kept = rng.random(i.size) * peak < lift[np.minimum(t[i], until - 1).astype(int)]
        pending[i] = inside & ~kept
    return t


def simulate_block(spec: SparseSpec, block: int) -> pd.DataFrame:
    """All orders of one block of customers, including the hidden ``horizon_days`` after the end date, with the
    :data:`HIDDEN` columns.

    The hidden tail and columns are never written to the lake; they only let :func:`lake_shape` report churn at the
    end date and :mod:`churn_spark.generator_truth` compute true churn probabilities.
    """
    rng = np.random.default_rng([spec.seed, block])
    first = block * BLOCK
    n = min(BLOCK, spec.users - first)
    history = spec.weeks * 7
    until = float(history + spec.horizon_days)
    holiday = _holidays(spec, history + spec.horizon_days)

    acquisition = (1 + spec.growth * np.arange(history) / history) * (1 + spec.holiday_acquisition * holiday[:history])
    t = rng.choice(history, size=n, p=acquisition / acquisition.sum()) + rng.random(n)
    rate = np.clip(rng.gamma(spec.rate_shape, spec.rate_scale, n), 1e-6, 0.5)  # the cap keeps numbers < MAX_ORDERS
    dropout = rng.beta(spec.dropout_a, spec.dropout_b, n)
    price = spec.price_median * rng.lognormal(0.0, spec.price_sigma, n)
    extra_items = rng.gamma(1.0, spec.extra_items_mean, n)
    lift = purchase_lift(spec, history + spec.horizon_days)

    status_p = [1 - spec.refund_share - spec.cancel_share, spec.refund_share, spec.cancel_share]
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]] = []
    who, number = np.arange(n), 0
    while who.size:  # one round = every still-alive customer's next purchase
        status = rng.choice(len(STATUSES), size=who.size, p=status_p)
        stay = (1 - dropout[who]) * np.where(status == 0, 1.0, spec.bad_order_stay)
        alive = rng.random(who.size) < stay
        parts.append((who, t, status, number, alive))
        who, t = who[alive], t[alive]
        t = _next_purchase(rng, t, rate[who], lift, until)
        who, t = who[t < until], t[t < until]
        number += 1

    who = np.concatenate([p[0] for p in parts])
    days = np.concatenate([p[1] for p in parts])
    status = np.concatenate([p[2] for p in parts])
    numbers = np.concatenate([np.full(p[0].size, p[3]) for p in parts])
    items = 1 + rng.poisson(extra_items[who])
    amount = price[who] * items**0.7 * rng.lognormal(0.0, spec.order_sigma, who.size)
    user_id = first + who.astype(np.int64)
    start_s = calendar.timegm(spec.start_date.timetuple())
    out = pd.DataFrame(
        {
            "order_id": user_id * MAX_ORDERS + numbers,
            "user_id": user_id,
            "ts_s": start_s + np.floor(days * DAY_S).astype(np.int64),
            "amount": np.maximum(np.round(amount, 2), 0.5),
            "n_items": items.astype(np.int32),
            "status": STATUSES[status],
            "stays": np.concatenate([p[4] for p in parts]),
            "rate": rate[who],
            "dropout": dropout[who],
        }
    )
    return out.sort_values("order_id", ignore_index=True)


def simulate(spec: SparseSpec) -> pd.DataFrame:
    """Every block on this machine (numpy only): the rows Spark writes, plus the hidden tail."""
    return pd.concat([simulate_block(spec, b) for b in range(spec.n_blocks)], ignore_index=True)


def _end_s(spec: SparseSpec) -> int:
    return calendar.timegm(spec.end_date.timetuple())


def lake_rows(orders: pd.DataFrame, spec: SparseSpec) -> pd.DataFrame:
    """The simulated orders the lake holds: those before the end date (the hidden tail cut off)."""
    return orders[orders["ts_s"] < _end_s(spec)]


def _lake_blocks(spec: SparseSpec, blocks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body: simulate the blocks whose ids arrive, keep what the lake holds."""
    for frame in blocks:
        for block in frame["id"]:
            yield lake_rows(simulate_block(spec, int(block)), spec)[RAW_COLUMNS]


def orders_frame(spark: SparkSession, spec: SparseSpec) -> DataFrame:
    """The lake's orders table, lazily: the demo's columns and types (order_ts a UTC instant, built from epoch
    seconds so the session time zone plays no part)."""
    blocks = spark.range(0, spec.n_blocks, numPartitions=spec.n_blocks)
    raw = blocks.mapInPandas(partial(_lake_blocks, spec), RAW_SCHEMA)
    return raw.select(
        "order_id", "user_id", F.timestamp_seconds("ts_s").alias("order_ts"), "amount", "n_items", "status"
    )


def lake_shape(
    orders: pd.DataFrame, spec: SparseSpec, purchase_statuses: Sequence[str] = (PURCHASE,)
) -> dict[str, float | int | str]:
    """How sparse the lake is, as the pipeline will see it (purchases = ``purchase_statuses``).

    ``orders`` is :func:`simulate`'s output. Counts are over the written lake (before the end date). The churn rate
    is the share of customers with a purchase in the ``lookback_days`` before a snapshot who make none in the
    ``horizon_days`` from it: at the end date (decided by the hidden tail, as the future would) and at end date -
    horizon, the latest snapshot the lake itself labels (the pipeline's test split when run on the end date).
    """
    end_s, horizon_s = _end_s(spec), spec.horizon_days * DAY_S
    is_purchase = orders["status"].str.strip().str.lower().isin(normalise_statuses(purchase_statuses))
    lake, purchases = lake_rows(orders, spec), orders[is_purchase]
    bought = lake_rows(purchases, spec)
    per_buyer = bought.groupby("user_id").size().to_numpy()

    def churn(snapshot_s: int) -> tuple[float, int]:
        ts = purchases["ts_s"]
        before = purchases["user_id"][(ts >= snapshot_s - spec.lookback_days * DAY_S) & (ts < snapshot_s)].unique()
        after = purchases["user_id"][(ts >= snapshot_s) & (ts < snapshot_s + horizon_s)].unique()
        return (1 - np.isin(before, after).mean() if before.size else float("nan")), int(before.size)

    churn_end, eligible_end = churn(end_s)
    churn_last, eligible_last = churn(end_s - horizon_s)
    return {
        "customers": int(lake["user_id"].nunique()),
        "orders": len(lake),
        "buyers": int(per_buyer.size),
        "one_time_share": round(float(np.mean(per_buyer == 1)), 4),
        "orders_per_customer_mean": round(float(per_buyer.mean()), 3),
        "orders_per_customer_median": float(np.median(per_buyer)),
        "orders_per_customer_p90": float(np.percentile(per_buyer, 90)),
        "orders_per_customer_max": int(per_buyer.max()),
        "churn_rate": round(float(churn_end), 4),
        "churn_eligible": eligible_end,
        "churn_rate_last_labelled": round(float(churn_last), 4),
        "churn_eligible_last_labelled": eligible_last,
        "last_labelled_snapshot": (spec.end_date - dt.timedelta(days=spec.horizon_days)).isoformat(),
        "horizon_days": spec.horizon_days,
        "lookback_days": spec.lookback_days,
        "purchase_share": round(len(bought) / max(len(lake), 1), 4),
        "amount_median": round(float(bought["amount"].median()), 2),
        "amount_p99": round(float(bought["amount"].quantile(0.99)), 2),
    }


def write_sparse_lake(spark: SparkSession, spec: SparseSpec, lake_dir: str) -> dict[str, int]:
    """Write the orders table (Delta, or CSV) and return its row count; no events, reviews or users tables."""
    from .generator import dirty_orders, write_tables
    from .logs import LOG

    stale = [t for t in ("events", "reviews", "users") if storage.exists(storage.join(lake_dir, t))]
    if stale:
        LOG.warning(
            "sparse lake: %s under %s are left from an earlier lake; use conf/sparse.yaml (these sources off)",
            stale,
            lake_dir,
        )
    orders = orders_frame(spark, spec)
    tables = {"orders": dirty_orders(orders, spec.seed) if spec.dirty else orders}
    return write_tables(spark, tables, lake_dir, seed=spec.seed, dirty=spec.dirty, csv=spec.csv)
