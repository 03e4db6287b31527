"""The feature contract shared by the Spark builder, the pandas reference and the model.

Canonical inputs (after ingest/validation; all timestamps UTC, ``user_id`` a string):

* orders:  user_id, ts, amount, n_items, status   (status cancelled/refunded = a *return*, anything else a *purchase*)
* events:  user_id, ts, event_type in {view, cart, favorite, search}
* reviews: user_id, ts, rating (1..5)
* users:   user_id, signup_ts, country, channel

For a snapshot date S (midnight UTC) only rows with ``ts < S`` feed features. Day ``d = to_date(ts)``;
``k = datediff(S, d)``; rows with ``1 <= k <= T*B`` fall into bucket ``t = T - 1 - (k - 1) // B`` (t = 0 oldest,
t = T-1 the last B days before S). The sequence is flattened time-major: ``sequence[t * C + c]``.

Channels present depend on the sources configured (a missing source drops its channels):

* orders  -> orders (purchases), spend (sum amount of purchases), items (sum n_items of purchases),
  returns (cancelled + refunded orders)
* events  -> views, carts, favourites, searches
* reviews -> reviews (count), rating_mean (mean rating of the bucket's reviews, 0 when none)
* always  -> active_days (distinct days with any order, event or review)

Static features (history before S, not limited to the window):

* tenure_days: days from signup (users source) or else from the first order of any status, to S
* days_since_last_order: days from the last purchase to S
* days_since_last_event: days from the last order/event/review to S
* lifetime_orders, lifetime_spend, mean_order_value (= spend / orders; 0 when no purchase)
* country, channel (strings, "unknown" when missing or without a users source)

Eligibility: at least one purchase in ``[S - lookback_days, S)``.
Label: where ``S + H <= as_of`` (the run date), ``label = 1`` if there is no purchase (``no_order``) or no
activity at all (``no_activity``) in ``[S, S + H)``, else 0; otherwise ``label`` is null (a scoring snapshot).
Snapshots for a run date R: score = R; labelled ``S_i = R - H - i * step`` for i = 0..n-1, with i = 0 the test
snapshot, i = 1 validation and the rest train.
"""
from __future__ import annotations

import datetime as dt
from typing import Dict, List

RETURN_STATUSES = ("cancelled", "refunded")
SOURCE_CHANNELS: Dict[str, List[str]] = {
    "orders": ["orders", "spend", "items", "returns"],
    "events": ["views", "carts", "favourites", "searches"],
    "reviews": ["reviews", "rating_mean"],
}
EVENT_CHANNEL = {"view": "views", "cart": "carts", "favorite": "favourites", "search": "searches"}
NUMERIC_STATIC = ["tenure_days", "days_since_last_order", "days_since_last_event",
                  "lifetime_orders", "lifetime_spend", "mean_order_value"]
CATEGORICAL_STATIC = ["country", "channel"]


def channels_for(sources: List[str]) -> List[str]:
    """Channel order for the configured sources (always ending with active_days)."""
    out: List[str] = []
    for src in ("orders", "events", "reviews"):
        if src in sources:
            out += SOURCE_CHANNELS[src]
    return out + ["active_days"]


def snapshot_plan(run_date: dt.date, horizon_days: int, step_days: int, n_labelled: int) -> Dict[dt.date, str]:
    """{snapshot date: split} for a run date: the score snapshot plus n labelled ones (test, validation, train...)."""
    plan = {run_date: "score"}
    for i in range(n_labelled):
        s = run_date - dt.timedelta(days=horizon_days + i * step_days)
        plan[s] = "test" if i == 0 else "validation" if i == 1 else "train"
    return plan
