"""Who can still be saved, and how much revenue each risk puts on the line (``churn_risk`` lifecycle columns).

A churn score alone puts customers who are already gone at the top of the list: the model is (rightly) certain
about them, but no coupon brings them back. This module splits the scored users into

* ``lapsed``  -- no purchase (``snapshots.churn_definition: no_order``; no activity of any kind for
  ``no_activity``) for longer than ``lifecycle.lapsed_gap_multiple`` x the user's own typical gap between orders,
  clipped to ``[floor_days, cap_days]``. The typical gap is ``tenure_days / max(lifetime_orders, 1)``. The recency
  follows the label definition, so "lapsed" means "already churned by the measure the model predicts".
* ``new``     -- first order within the last ``snapshots.horizon_days`` days (never lapsed: too early to tell);
* ``at_risk`` -- a savable (not lapsed) user in the top tier: who the retention team works on;
* ``active``  -- every other savable user.

Lapsed users are still scored, but tiers and ranks are computed among the savable users only (``score.risk_rows``);
lapsed users get tier ``lapsed`` and rank after every savable user.

``expected_value_at_risk`` = churn probability x the spend expected over the next H days *if the user is retained*,
a Gamma-Poisson style credibility estimate of the user's spend per day::

    rate = (spend_W + beta x population_spend_rate) / (exposure_days + beta),   beta = k / population_order_rate

``spend_W`` is the user's spend over the last ``lifecycle.value_window_days`` (whole buckets), ``exposure_days`` that
window or the user's tenure if shorter (at least one bucket); the population rates are pooled over the snapshot's
savable users, and ``k = value_prior_orders``: the prior is worth k orders of a typical customer. For a user buying
at the population's order rate, the weight of their own rate is ``n / (n + k)`` (n = their orders in the window), so a
user with a single order gets mostly the population's rate; a silent window with a long exposure pulls the
estimate toward zero, which a weight based on the order count alone would not do.

The formulas are written once over a tiny operations object (:data:`NUMPY` or :data:`SPARK`), so the unit tests run
them on numpy arrays and scoring runs the very same code as Spark columns. Only reading the sequence differs
(:func:`sequence_facts_np` / :func:`with_facts`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Dict, Optional, Tuple

import numpy as np

LAPSED, NEW, AT_RISK, ACTIVE = "lapsed", "new", "at_risk", "active"
# per-row facts computed from the feature row before scoring and carried through the scorer (``keep`` columns)
FACTS = ("lc_new", "lc_lapsed", "value_spend", "value_orders", "value_exposure_days")
RISK_EXTRA = ("lifecycle", "expected_value_at_risk", "risk_delta", "newly_high")


@dataclass(frozen=True)
class LifecycleRule:
    """Everything the lifecycle and value formulas need (from the config, or hand-made in tests)."""

    horizon_days: int = 30
    n_buckets: int = 26
    bucket_days: int = 7
    channels: Tuple[str, ...] = ("orders", "spend", "items", "returns", "active_days")
    recency: str = "days_since_last_order"  # the column that says "no purchase / activity for ... days"
    gap_multiple: float = 4.0
    floor_days: float = 56.0
    cap_days: float = 150.0
    value_window_days: int = 91
    prior_orders: float = 2.0

    @classmethod
    def from_config(cls, cfg) -> "LifecycleRule":
        from .feature_spec import channels_for

        lc = cfg.lifecycle
        return cls(
            horizon_days=cfg.snapshots.horizon_days,
            n_buckets=cfg.sequence.n_buckets,
            bucket_days=cfg.sequence.bucket_days,
            channels=tuple(channels_for(list(cfg.sources))),
            recency=recency_column(cfg.snapshots.churn_definition),
            gap_multiple=lc.lapsed_gap_multiple,
            floor_days=lc.floor_days,
            cap_days=lc.cap_days,
            value_window_days=lc.value_window_days,
            prior_orders=lc.value_prior_orders,
        )

    @property
    def value_buckets(self) -> int:
        """Whole buckets of the value window (at least 1, at most the sequence)."""
        return max(1, min(self.n_buckets, round(self.value_window_days / self.bucket_days)))


def recency_column(churn_definition: str) -> str:
    return "days_since_last_order" if churn_definition == "no_order" else "days_since_last_event"


def top_tier(scoring) -> Optional[str]:
    """The tier the campaign is for: the first ``tier_shares`` entry, or the highest probability cut-off."""
    if scoring.tier_mode == "share":
        return next(iter(scoring.tier_shares), None)
    return max(scoring.tiers, key=scoring.tiers.get) if scoring.tiers else None


# ---- operations: the same formulas on numpy arrays and on Spark columns ---------------------------------------
def _spark_ops():
    from pyspark.sql import Column
    from pyspark.sql import functions as F

    def c(x):
        return x if isinstance(x, Column) else F.lit(x)

    return SimpleNamespace(
        where=lambda cond, a, b: F.when(cond, c(a)).otherwise(c(b)),
        minimum=lambda a, b: F.least(c(a), c(b)),
        maximum=lambda a, b: F.greatest(c(a), c(b)),
    )


NUMPY = SimpleNamespace(where=np.where, minimum=np.minimum, maximum=np.maximum)


class _LazySpark:
    """:data:`SPARK` without importing pyspark at module import (the numpy path must not need a JVM)."""

    def __getattr__(self, name):
        return getattr(_spark_ops(), name)


SPARK = _LazySpark()


# ---- the formulas (ops-generic) --------------------------------------------------------------------------------
def days_since_first_order(ops, tenure, lifetime_orders, window_orders, first_order_bucket, rule: LifecycleRule):
    """Estimated days since the first order, bucket resolution.

    When every lifetime purchase lies inside the sequence window (``lifetime_orders <= window purchases``), the first
    order is in the oldest bucket with any order (``first_order_bucket``, -1 when none) and at most
    ``(T - t) * B`` days ago; ``tenure_days`` (from signup or first order) is never shorter, so the smaller of the
    two is used. Otherwise the first order is older than the window and ``tenure_days`` stands.
    """
    upper = (rule.n_buckets - first_order_bucket) * rule.bucket_days
    in_window = (first_order_bucket >= 0) & (lifetime_orders <= window_orders + 0.5)
    return ops.where(in_window, ops.minimum(tenure, upper), tenure)


def is_new(ops, tenure, lifetime_orders, window_orders, first_order_bucket, rule: LifecycleRule):
    return (
        days_since_first_order(ops, tenure, lifetime_orders, window_orders, first_order_bucket, rule)
        <= rule.horizon_days
    )


def lapse_after_days(ops, tenure, lifetime_orders, rule: LifecycleRule):
    """``clip(multiple x tenure / max(lifetime_orders, 1), floor, cap)``: silence longer than this is lapsed."""
    gap = tenure / ops.maximum(lifetime_orders, 1.0)
    return ops.minimum(ops.maximum(gap * rule.gap_multiple, rule.floor_days), rule.cap_days)


def is_lapsed(ops, recency, tenure, lifetime_orders, new, rule: LifecycleRule):
    return (recency > lapse_after_days(ops, tenure, lifetime_orders, rule)) & ~new


def exposure_days(ops, tenure, rule: LifecycleRule):
    """Days of the value window the user could have bought in: the window, or less for younger customers (at
    least one bucket, so a customer of two days is not extrapolated from two days)."""
    window = rule.value_buckets * rule.bucket_days
    return ops.minimum(ops.maximum(tenure, float(rule.bucket_days)), float(window))


def expected_spend(ops, spend, exposure, population_spend_rate, population_order_rate, rule: LifecycleRule):
    """Spend over the next H days if retained: the credibility-weighted rate of the module docstring x H."""
    beta = ops.where(population_order_rate > 0, rule.prior_orders / ops.maximum(population_order_rate, 1e-12), 0.0)
    return (spend + beta * population_spend_rate) / (exposure + beta) * rule.horizon_days


def lifecycle_label(ops, lapsed, new, in_top_tier):
    """Precedence: lapsed (never for new users), then at_risk (top tier), then new, else active."""
    return ops.where(lapsed, LAPSED, ops.where(in_top_tier, AT_RISK, ops.where(new, NEW, ACTIVE)))


# ---- reading the sequence ---------------------------------------------------------------------------------------
def _channel(rule: LifecycleRule, name: str) -> int:
    return rule.channels.index(name)


def sequence_facts_np(sequences, rule: LifecycleRule) -> Dict[str, np.ndarray]:
    """numpy: window purchases, oldest order bucket (-1 none), value-window spend and purchases."""
    T, C = rule.n_buckets, len(rule.channels)
    seq = np.asarray(sequences, np.float64).reshape(-1, T, C)
    o, s, r = _channel(rule, "orders"), _channel(rule, "spend"), _channel(rule, "returns")
    any_order = (seq[:, :, o] + seq[:, :, r]) > 0
    first = np.where(any_order.any(axis=1), any_order.argmax(axis=1), -1)
    nb = rule.value_buckets
    return {
        "window_orders": seq[:, :, o].sum(axis=1),
        "first_order_bucket": first,
        "value_spend": seq[:, T - nb :, s].sum(axis=1),
        "value_orders": seq[:, T - nb :, o].sum(axis=1),
    }


def facts_np(rows: Dict[str, np.ndarray], rule: LifecycleRule) -> Dict[str, np.ndarray]:
    """The :data:`FACTS` for hand-made rows (dict of arrays with ``sequence`` and the static columns)."""
    seq = sequence_facts_np(rows["sequence"], rule)
    tenure, orders = np.asarray(rows["tenure_days"], float), np.asarray(rows["lifetime_orders"], float)
    new = is_new(NUMPY, tenure, orders, seq["window_orders"], seq["first_order_bucket"], rule)
    return {
        "lc_new": new,
        "lc_lapsed": is_lapsed(NUMPY, np.asarray(rows[rule.recency], float), tenure, orders, new, rule),
        "value_spend": seq["value_spend"],
        "value_orders": seq["value_orders"],
        "value_exposure_days": exposure_days(NUMPY, tenure, rule),
    }


def with_facts(features, rule: LifecycleRule):
    """Spark: the :data:`FACTS` columns added to feature rows (computed before scoring, kept by the scorer)."""
    from pyspark.sql import functions as F

    T, C = rule.n_buckets, len(rule.channels)
    o, s, r = _channel(rule, "orders"), _channel(rule, "spend"), _channel(rule, "returns")
    seq = F.col("sequence")

    def total(ch: int, first: int):
        return sum((F.coalesce(seq[t * C + ch], F.lit(0.0)) for t in range(first, T)), F.lit(0.0))

    any_order = F.transform(F.sequence(F.lit(0), F.lit(T - 1)), lambda t: (seq[t * C + o] + seq[t * C + r]) > 0)
    first = (F.array_position(any_order, True) - 1).cast("int")  # array_position is 1-based, 0 when absent
    tenure = F.col("tenure_days").cast("double")
    orders = F.coalesce(F.col("lifetime_orders").cast("double"), F.lit(0.0))
    nb = rule.value_buckets
    out = features.withColumn("_window_orders", total(o, 0)).withColumn("_first_bucket", first)
    new = is_new(SPARK, tenure, orders, F.col("_window_orders"), F.col("_first_bucket"), rule)
    out = out.withColumn("lc_new", F.coalesce(new, F.lit(False)))
    lapsed = is_lapsed(SPARK, F.col(rule.recency).cast("double"), tenure, orders, F.col("lc_new"), rule)
    return (
        out.withColumn("lc_lapsed", F.coalesce(lapsed, F.lit(False)))
        .withColumn("value_spend", total(s, T - nb))
        .withColumn("value_orders", total(o, T - nb))
        .withColumn("value_exposure_days", exposure_days(SPARK, F.coalesce(tenure, F.lit(0.0)), rule))
        .drop("_window_orders", "_first_bucket")
    )


# ---- after scoring: value at risk, lifecycle label, change since the previous snapshot ------------------------
def population_rates_np(spend, orders, exposure, savable) -> Tuple[float, float]:
    """Pooled spend and orders per exposure day of the savable users (the prior of the value estimate)."""
    e = float(np.sum(np.asarray(exposure, float)[savable]))
    if e <= 0:
        return 0.0, 0.0
    return float(np.sum(np.asarray(spend, float)[savable])) / e, float(np.sum(np.asarray(orders, float)[savable])) / e


def value_columns(ranked, rule: LifecycleRule, top: Optional[str]):
    """Spark: ``lifecycle`` and ``expected_value_at_risk`` from the facts, the probability and ``risk_tier``."""
    from pyspark.sql import functions as F

    from .ranking import group_totals

    savable = ~F.col("lc_lapsed")
    pooled = {
        f"_pool_{c}": F.when(savable, F.col(c)).otherwise(0.0)
        for c in ("value_exposure_days", "value_spend", "value_orders")
    }
    ranked = group_totals(ranked, ["snapshot_date"], pooled)
    exposure = F.col("_pool_value_exposure_days")
    pop_spend = F.coalesce(F.col("_pool_value_spend") / exposure, F.lit(0.0))  # null (0/0) when nobody is savable
    pop_orders = F.coalesce(F.col("_pool_value_orders") / exposure, F.lit(0.0))
    spend = expected_spend(SPARK, F.col("value_spend"), F.col("value_exposure_days"), pop_spend, pop_orders, rule)
    in_top = F.coalesce(F.col("risk_tier") == F.lit(top), F.lit(False)) if top else F.lit(False)
    return (
        ranked.withColumn("expected_value_at_risk", F.round(F.col("churn_probability") * spend, 4))
        .withColumn("lifecycle", lifecycle_label(SPARK, F.col("lc_lapsed"), F.col("lc_new"), in_top))
        .drop(*pooled)
    )


def previous_snapshot(spark, risk_path: str, snapshot: dt.date):
    """(user_id, prev_probability, prev_tier) of the newest snapshot before ``snapshot`` in ``churn_risk``, or None
    when the table or an earlier snapshot does not exist. Read at one pinned version."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from .delta_util import latest_version

    if not DeltaTable.isDeltaTable(spark, risk_path):
        return None
    risk = spark.read.format("delta").option("versionAsOf", latest_version(spark, risk_path)).load(risk_path)
    prev = risk.where(F.col("snapshot_date") < F.lit(snapshot)).agg(F.max("snapshot_date")).first()[0]
    if prev is None:
        return None
    return risk.where(F.col("snapshot_date") == F.lit(prev)).select(
        "user_id", F.col("churn_probability").alias("_prev_probability"), F.col("risk_tier").alias("_prev_tier")
    )


def with_change(out, previous, top: Optional[str]):
    """``risk_delta`` (probability minus the previous snapshot's; null when the user was not in it) and
    ``newly_high`` (top tier now and not there before; null when the table has no earlier snapshot)."""
    from pyspark.sql import functions as F

    high_now = F.coalesce(F.col("risk_tier") == F.lit(top), F.lit(False)) if top else F.lit(False)
    if previous is None:
        return out.withColumn("risk_delta", F.lit(None).cast("double")).withColumn(
            "newly_high", F.lit(None).cast("boolean")
        )
    j = out.join(previous, "user_id", "left")
    was_high = F.coalesce(F.col("_prev_tier") == F.lit(top), F.lit(False)) if top else F.lit(False)
    return (
        j.withColumn("risk_delta", F.round(F.col("churn_probability") - F.col("_prev_probability"), 6))
        .withColumn("newly_high", high_now & ~was_high)
        .drop("_prev_probability", "_prev_tier")
    )
