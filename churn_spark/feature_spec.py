"""The feature contract shared by the Spark builder, the pandas reference and the model.

Canonical inputs (after ingest/validation; all timestamps UTC, ``user_id`` a string):

* orders:  user_id, ts, amount, n_items, status   (a status in ``validation.return_statuses``, by default
  cancelled/refunded, is a *return*; anything else a *purchase*. Ingest quarantines statuses outside
  ``validation.purchase_statuses`` + ``return_statuses``, so "anything else" means a purchase status)
* events:  user_id, ts, event_type in {view, cart, favorite, search}
* reviews: user_id, ts, rating (1..5)
* users:   user_id, signup_ts, country, channel

For a snapshot date S (midnight UTC) only rows with ``ts < S`` feed features. Day ``d`` = the UTC calendar day
of ``ts`` (never the Spark session time zone's day);
``k = datediff(S, d)``; rows with ``1 <= k <= T*B`` fall into bucket ``t = T - 1 - (k - 1) // B`` (t = 0 oldest,
t = T-1 the last B days before S). The sequence is flattened time-major: ``sequence[t * C + c]``.
``long_sequence`` is the same history at a coarser resolution: the same channels over ``L`` buckets of ``LB`` days
(``sequence.long_buckets`` x ``sequence.long_bucket_days``, by default two years in months), bucketed by the same
rule with L and LB in place of T and B — so a customer's tenure and purchase rhythm over years are visible to the
network next to the fine recent weeks. Empty when ``long_buckets`` is 0.
Both are stored as ``array<float>`` (float32: the values are sums computed in double and rounded once at the end;
the network reads float32 anyway, and half the bytes go through Parquet, the shuffle and Arrow).

Channels present depend on the sources configured (a missing source drops its channels):

* orders  -> orders (purchases), spend (sum amount of purchases), items (sum n_items of purchases),
  returns (orders with a return status)
* events  -> views, carts, favourites, searches
* reviews -> reviews (count), rating_mean (mean rating of the bucket's reviews, 0 when none)
* always  -> active_days (distinct days with any order, event or review)

Static features (history before S, not limited to the window):

* tenure_days: days from signup (users source) or else from the first order of any status, to S
* days_since_last_order: days from the last purchase to S
* days_since_last_event: days from the last order/event/review to S
* lifetime_orders, lifetime_spend, mean_order_value (= spend / orders; 0 when no purchase)
* country, channel (strings, "unknown" when missing or without a users source)

Purchase-rhythm features (``RHYTHM_STATIC``; purchases before S over the whole history, one per distinct UTC day —
several orders on one day are one purchase day). They carry a long, sparse history that the mostly empty buckets do
not: how often this customer buys and whether they are late by their own standard.

* purchase_days: distinct days with a purchase (>= 1 for every eligible row)
* days_since_first_purchase: days from the first purchase day to S
* gap_mean_days: mean of the gaps between consecutive purchase days (0 with a single purchase day)
* gap_std_days: population standard deviation of those gaps (0 with fewer than two gaps)
* overdue_ratio: days_since_last_order / gap_mean_days (0 with a single purchase day: no rhythm yet)

Eligibility: at least one purchase in ``[S - lookback_days, S)``.
Label: where ``S + H <= as_of`` (the run date), ``label = 1`` if there is no purchase (``no_order``) or no
activity at all (``no_activity``) in ``[S, S + H)``, else 0; otherwise ``label`` is null (a scoring snapshot).
Snapshots for a run date R (label window of S = ``[S, S + H)``): score = R; test = R - H; validation = R - 2H;
train = ``R - 3H - j * step`` for j = 0..n-3. Test's label window ends at R, validation's ends where test's begins and
the newest train window ends where validation's begins, so no label the model is fitted or tuned on was observed
in a later split's label window (train windows may overlap one another). :func:`check_plan` enforces this.
"""

from __future__ import annotations

import datetime as dt
from typing import Dict, Iterable, List, Tuple

RETURN_STATUSES = ("cancelled", "refunded")  # default of validation.return_statuses (builders take the config's)
SOURCE_CHANNELS: Dict[str, List[str]] = {
    "orders": ["orders", "spend", "items", "returns"],
    "events": ["views", "carts", "favourites", "searches"],
    "reviews": ["reviews", "rating_mean"],
}
EVENT_CHANNEL = {"view": "views", "cart": "carts", "favorite": "favourites", "search": "searches"}
NUMERIC_STATIC = [
    "tenure_days",
    "days_since_last_order",
    "days_since_last_event",
    "lifetime_orders",
    "lifetime_spend",
    "mean_order_value",
]
RHYTHM_STATIC = ["purchase_days", "days_since_first_purchase", "gap_mean_days", "gap_std_days", "overdue_ratio"]
FEATURE_STATIC = NUMERIC_STATIC + RHYTHM_STATIC  # every numeric static column of the feature table
CATEGORICAL_STATIC = ["country", "channel"]
# the feature-table columns a model (network, blend, reasons) reads: what training exports and scoring sends
MODEL_INPUT_COLUMNS = ["sequence", "long_sequence", *FEATURE_STATIC, *CATEGORICAL_STATIC]


def feature_contract(
    channels: List[str], n_buckets: int, bucket_days: int, long_buckets: int = 0, long_bucket_days: int = 0
) -> Dict:
    """What a model needs to be applied to a feature row: the layout of ``sequence`` and the static columns.

    Recorded in every feature-table commit and in every model bundle; scoring and the gate refuse to apply a model
    to rows of another contract (same width but other bucket days would silently mean something else).
    """
    return {
        "channels": list(channels),
        "n_buckets": int(n_buckets),
        "bucket_days": int(bucket_days),
        "long_buckets": int(long_buckets),
        "long_bucket_days": int(long_bucket_days) if long_buckets else 0,
        "numeric_static": list(FEATURE_STATIC),
        "categorical_static": list(CATEGORICAL_STATIC),
    }


def contract_differences(model: Dict, table: Dict) -> List[str]:
    """Human-readable differences between two contracts (empty when compatible)."""
    return [
        f"{k}: model {model.get(k)!r} vs features {table.get(k)!r}"
        for k in sorted(set(model) | set(table))
        if model.get(k) != table.get(k)
    ]


def normalise_statuses(statuses: Iterable[str]) -> Tuple[str, ...]:
    """Order statuses as ingest stores them (trimmed, lower-case), so ``Refunded`` in a config matches."""
    return tuple(str(x).strip().lower() for x in statuses)


def recent_buckets(n_buckets: int, bucket_days: int, recent_days: int) -> int:
    """How many of the last buckets are "recent" (reasons and baselines share this): recent_days // bucket_days,
    at least 1 and leaving at least one earlier bucket when there are two or more."""
    return max(1, min(n_buckets - 1, recent_days // bucket_days)) if n_buckets > 1 else 1


def channels_for(sources: List[str]) -> List[str]:
    """Channel order for the configured sources (always ending with active_days)."""
    out: List[str] = []
    for src in ("orders", "events", "reviews"):
        if src in sources:
            out += SOURCE_CHANNELS[src]
    return out + ["active_days"]


def snapshot_plan(run_date: dt.date, horizon_days: int, step_days: int, n_labelled: int) -> Dict[dt.date, str]:
    """{snapshot date: split} for a run date: the score snapshot plus n labelled ones (test, validation, train...).

    Test and validation sit a whole horizon apart (and the newest train snapshot a horizon before validation) so
    their label windows are disjoint; only train snapshots are spaced by ``step_days`` and may overlap each other.
    """
    if horizon_days < 1 or step_days < 1 or n_labelled < 0:
        raise ValueError(
            f"snapshot plan needs horizon_days >= 1, step_days >= 1 and n_labelled >= 0, got "
            f"horizon_days={horizon_days}, step_days={step_days}, n_labelled={n_labelled}"
        )
    H = dt.timedelta(days=horizon_days)
    plan = {run_date: "score"}
    for i in range(n_labelled):
        if i < 2:
            plan[run_date - (i + 1) * H] = "test" if i == 0 else "validation"
        else:
            plan[run_date - 3 * H - dt.timedelta(days=(i - 2) * step_days)] = "train"
    check_plan(plan, horizon_days)
    return plan


def label_window(snapshot: dt.date, horizon_days: int) -> Tuple[dt.date, dt.date]:
    """``[start, end)`` of the days whose activity decides the label of ``snapshot``."""
    return snapshot, snapshot + dt.timedelta(days=horizon_days)


def _window_text(snapshot: dt.date, horizon_days: int) -> str:
    start, end = label_window(snapshot, horizon_days)
    return f"[{start}, {end})"


def check_plan(plan: Dict[dt.date, str], horizon_days: int) -> None:
    """Raise ValueError naming the snapshots when a label window of an earlier split overlaps a later split's.

    Order of trust: train < validation < test. A train or validation window touching the test window, or a train
    window touching validation's, would let the model (or its calibration / early stopping) see outcomes that
    the held-out split is judged on. The score snapshot is unlabelled and takes no part.
    """
    rank = {"train": 0, "validation": 1, "test": 2}
    labelled = sorted((s, split) for s, split in plan.items() if split in rank)
    clashes = []
    for a, split_a in labelled:
        for b, split_b in labelled:
            if rank[split_a] < rank[split_b] and abs((b - a).days) < horizon_days:
                clashes.append(
                    f"{split_a} snapshot {a} {_window_text(a, horizon_days)} overlaps "
                    f"{split_b} snapshot {b} {_window_text(b, horizon_days)}"
                )
    if clashes:
        raise ValueError(f"label windows overlap across splits (horizon {horizon_days} days): " + "; ".join(clashes))


def describe_plan(plan: Dict[dt.date, str], horizon_days: int) -> List[str]:
    """One line per snapshot, newest first: split, snapshot date and label window (for logs and the run log)."""
    lines = []
    for s, split in sorted(plan.items(), reverse=True):
        note = " (not yet observable: scored, not labelled)" if split == "score" else ""
        lines.append(f"{split:<10} snapshot {s}  label window {_window_text(s, horizon_days)}{note}")
    return lines


RFM_CHANNELS = ("orders", "spend", "active_days")
SEQUENCE_TYPE = "array<float>"  # the stored type of ``sequence`` and ``long_sequence``


def aggregate_spec(channels: List[str], n_buckets: int, recent_buckets: int) -> List[Tuple[str, str, List[int]]]:
    """The lr_rfm inputs as (name, source, positions): ``source`` is a static column (positions empty) or
    ``sequence`` (summed over the given flat positions); every input is ``log1p`` of a non-negative value.

    One definition for both evaluations: Spark's (``baselines._aggregates``, to fit and score the baseline) and
    numpy's (:mod:`churn_spark.blend`, which applies the fitted baseline inside the scoring UDF)."""
    if not 1 <= recent_buckets <= n_buckets:
        raise ValueError(f"recent_buckets must be in 1..n_buckets ({n_buckets}), got {recent_buckets}")
    C = len(channels)
    spec: List[Tuple[str, str, List[int]]] = [(f"log_{c}", c, []) for c in NUMERIC_STATIC]
    for ch in RFM_CHANNELS:
        if ch in channels:
            c = channels.index(ch)
            spec.append((f"log_{ch}_recent", "sequence", [(n_buckets - 1 - i) * C + c for i in range(recent_buckets)]))
            spec.append((f"log_{ch}_window", "sequence", [t * C + c for t in range(n_buckets)]))
    return spec
