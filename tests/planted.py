"""A lake where churn is written only in the *trend* of browsing, not in recency, frequency or spend.

Every user of snapshot S orders twice (S-2 and S-9 days, same amount), browses every day of the 8 weeks before S
(so active days, recency and totals are alike), and differs only in the shape of browsing: churners' daily views
fade towards S, stayers' grow. Stayers order again after S (S+5, S+12); churners do not. Each snapshot has its own
users, and with a 14-day eligibility window and snapshots at least 28 days apart nobody is eligible at another one.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from churn_spark.feature_spec import snapshot_plan

RUN = dt.date(2026, 6, 1)
DAYS = 56
LOOKBACK = 14  # sequence.eligibility_lookback_days below
OVERRIDES = [
    "sources.users=null",
    "sources.reviews=null",
    "sequence.n_buckets=8",
    "sequence.bucket_days=7",
    f"sequence.eligibility_lookback_days={LOOKBACK}",
    "snapshots.n_labelled=4",
    "snapshots.step_days=28",
    "training.epochs=10",
    "training.batch_size=32",
    "training.learning_rate=0.004",
    "training.conv_filters=8",
    "training.rnn_units=8",
    "training.dense_units=8",
    "training.patience=4",
    "training.gbt_max_iter=5",
    "training.gbt_max_depth=3",
    "training.timeout_s=900",
]


def planted_lake(users_per_snapshot: int = 300, seed: int = 3) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    plan = snapshot_plan(RUN, 30, 28, 4)
    dates = sorted(plan)
    # the last order of S's users (S+12) must fall before the next snapshot's eligibility window opens
    assert all((b - a).days > 12 + LOOKBACK for a, b in zip(dates, dates[1:])), dates
    orders, events = [], []
    for S in [d for d in dates if plan[d] != "score"]:
        s0 = pd.Timestamp(S)
        for i in range(users_per_snapshot):
            uid = f"{S:%Y%m%d}-{i:04d}"
            churner = rng.random() < 0.5
            for d in (2, 9) + (() if churner else (-5, -12)):
                orders.append((uid, s0 - pd.Timedelta(days=d) + pd.Timedelta(hours=11), 50.0, 1, "completed"))
            for d in range(1, DAYS + 1):
                frac = d / DAYS if churner else 1 - d / DAYS  # churners browsed more long ago, stayers recently
                n = 1 + rng.poisson(6 * frac)
                day = s0 - pd.Timedelta(days=d)
                events += [(uid, day + pd.Timedelta(hours=8 + k % 12), "view") for k in range(n)]
    return {
        "orders": pd.DataFrame(orders, columns=["user_id", "order_ts", "amount", "n_items", "status"]),
        "events": pd.DataFrame(events, columns=["user_id", "event_ts", "event_type"]),
    }


def write_planted(spark, lake_dir: str, **kw) -> None:
    for name, pdf in planted_lake(**kw).items():
        spark.createDataFrame(pdf).write.format("delta").mode("overwrite").save(f"{lake_dir}/{name}")
