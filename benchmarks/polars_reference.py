"""Fast single-process Polars re-implementation of ``churn-spark build-sequences``, for benchmarks only.

Why it exists: the pandas oracle (``churn_spark/reference.py``) is deliberately slow, so "Spark vs the oracle"
says little about what one machine could do. This file does the same work as the Spark job with the Polars lazy
API (read the Delta lake, validate/quarantine/deduplicate like ``churn_spark/lake.py``, build sequences, statics,
labels and splits like ``churn_spark/sequences.py``, write the feature and quarantine tables as Delta), so
``bench_polars.py`` can time both in one run and check that the rows are identical.

It runs in its own venv (polars + deltalake; the project venv pins pyarrow 10) and never imports ``churn_spark``:
every contract value (buckets, channels, snapshot plan, statuses, column mapping...) arrives in a JSON file that
``bench_polars.py`` derives from the project's config and ``feature_spec``. Deliberately unsupported (exit 2):
non-Delta or catalog sources, string/epoch timestamp columns and non-UTC source time zones.

    python polars_reference.py build --contract c.json --out DIR        # prints a JSON summary
    python polars_reference.py compare --contract c.json --spark FEATURES --polars DIR/features
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import polars as pl
from deltalake import DeltaTable, write_deltalake

EPOCH = dt.date(1970, 1, 1)
DAILY_SUMS = ["orders", "spend", "items", "returns", "views", "carts", "favourites", "searches", "reviews"]
DAILY_SUMS += ["rating_sum", "any_order"]
RUNNING = DAILY_SUMS + ["active_days"]  # running totals per user; active_days counts days with any activity


class Unsupported(RuntimeError):
    """A lake or config this reference does not model (it refuses rather than guess)."""


def _day_number(d: str) -> int:
    return (dt.date.fromisoformat(d) - EPOCH).days


def _trim(e: pl.Expr) -> pl.Expr:
    """Spark ``trim``: strips ASCII spaces only (not tabs or newlines)."""
    return e.str.strip_chars(" ")


# ------------------------------------------------------------------------------------------------ ingest
def _ts_expr(name: str, dtype: pl.DataType, timezone: str, source: str) -> pl.Expr:
    """A source timestamp column as a UTC instant (Spark's ``_parse_ts`` for the types a Delta lake holds)."""
    if timezone != "UTC":
        raise Unsupported(f"source {source!r}: timezone {timezone!r} (only UTC is modelled)")
    if isinstance(dtype, pl.Datetime):
        col = pl.col(name)
        return col.dt.convert_time_zone("UTC") if dtype.time_zone else col.dt.replace_time_zone("UTC")
    if dtype == pl.Date:
        return pl.col(name).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    raise Unsupported(f"source {source!r}: timestamp column {name!r} of type {dtype} (only Datetime/Date)")


def canonicalize(name: str, src: dict, contract: dict, version: int) -> pl.LazyFrame:
    """Canonical columns + ``reason`` (null = good row), the same codes and precedence as ``lake.canonicalize``;
    ``_raw`` keeps the source row (for the duplicate check and the quarantine)."""
    raw = pl.scan_delta(src["path"], version=version)  # the Delta log's snapshot, like Spark's versionAsOf
    schema = raw.collect_schema()
    spec = contract["canonical"][name]
    mapping = {canon: src["columns"].get(canon, canon) for canon in spec}
    for canon, required in spec.items():
        if required and mapping[canon] not in schema:
            raise Unsupported(f"source {name!r} has no column {mapping[canon]!r} for {canon!r}")
    val = contract["validation"]
    out: dict[str, pl.Expr] = {}
    reasons: list[tuple[pl.Expr, str]] = []
    strings = [pl.col(c).str.contains("\ufffd", literal=True) for c, t in schema.items() if t == pl.String]
    if strings:
        reasons.append((pl.any_horizontal(strings), "bad_encoding"))
    uid = _trim(pl.col(mapping["user_id"]).cast(pl.String))
    out["user_id"] = uid
    reasons.append((uid.is_null() | (uid == ""), "null_user_id"))
    ts_name = mapping.get("ts")
    if ts_name in schema:
        ts = _ts_expr(ts_name, schema[ts_name], src.get("timezone", "UTC"), name)
        out["ts"] = ts
        if spec["ts"]:
            reasons.append((pl.col(ts_name).is_null(), "null_ts"))
        clock = dt.datetime.fromisoformat(contract["clock"]).replace(tzinfo=dt.timezone.utc)
        reasons.append((ts >= pl.lit(clock, dtype=pl.Datetime("us", "UTC")), "future_ts"))
    elif name == "users":
        out["ts"] = pl.lit(None, dtype=pl.Datetime("us", "UTC"))
    if name == "orders":
        amount = pl.col(mapping["amount"]).cast(pl.Float64, strict=False)
        out["amount"] = amount
        reasons += [(amount.is_null(), "bad_amount"), (amount < 0, "negative_amount")]
        if mapping["n_items"] in schema:
            items = pl.col(mapping["n_items"]).cast(pl.Float64, strict=False)
            bad = pl.col(mapping["n_items"]).is_not_null() & (items.is_null() | (items < 0))
            reasons.append((bad, "bad_n_items"))
            out["n_items"] = items.fill_null(1.0)
        else:
            out["n_items"] = pl.lit(1.0)
        purchase = val["purchase_statuses"]
        if mapping["status"] in schema:
            status = _trim(pl.col(mapping["status"]).cast(pl.String)).str.to_lowercase()
            known = purchase + val["return_statuses"]
            reasons.append((status.is_null() | ~status.is_in(known), "unknown_status"))
            out["status"] = status
        else:
            out["status"] = pl.lit(purchase[0] if purchase else "completed")
    elif name == "events":
        et = _trim(pl.col(mapping["event_type"]).cast(pl.String)).str.to_lowercase()
        out["event_type"] = et
        reasons.append((et.is_null() | ~et.is_in(val["event_types"]), "unknown_event_type"))
    elif name == "reviews":
        rating = pl.col(mapping["rating"]).cast(pl.Float64, strict=False)
        out["rating"] = rating
        reasons.append((rating.is_null() | (rating < 1) | (rating > 5), "bad_rating"))
    elif name == "users":
        for c in ("country", "channel"):
            present = mapping[c] in schema
            out[c] = pl.col(mapping[c]).cast(pl.String).fill_null("unknown") if present else pl.lit("unknown")
    reason = pl.lit(None, dtype=pl.String)
    for cond, code in reversed(reasons):  # first matching reason wins; a null condition is no match
        reason = pl.when(cond.fill_null(False)).then(pl.lit(code)).otherwise(reason)
    return raw.select(
        *[e.alias(k) for k, e in out.items()], reason.alias("reason"), pl.struct(list(schema)).alias("_raw")
    )


def _mark_copies(annotated: pl.DataFrame) -> pl.DataFrame:
    """Reason ``exact_duplicate`` for a good row equal to an earlier row in every source column (``_raw``).

    Exact, and cheaper than a distinct over all columns: only rows whose 64-bit row hash occurs twice or more can
    be copies (found by sorting the hashes), and only those are compared column by column.
    """
    h = annotated.select(pl.col("_raw").hash()).to_series()
    s = h.sort()
    candidates = h.is_in(s.filter(s == s.shift(1)).unique().implode()).arg_true()
    first = annotated[candidates].select(pl.col("_raw").is_first_distinct()).to_series()
    copy = pl.Series("_copy", [False] * annotated.height, dtype=pl.Boolean).scatter(candidates, ~first)
    duplicate = pl.col("reason").is_null() & copy
    return annotated.with_columns(
        pl.when(duplicate).then(pl.lit("exact_duplicate")).otherwise("reason").alias("reason")
    )


def ingest(contract: dict) -> tuple[dict, pl.DataFrame, dict]:
    """Validated tables (collected once, reused by every snapshot), the quarantine rows and per-source counts."""
    tables, quarantine, counts = {}, [], {}
    max_bad = contract["validation"]["max_bad_fraction"]
    for name, src in contract["sources"].items():
        if src.get("format") != "delta" or src.get("table"):
            raise Unsupported(f"source {name!r}: only Delta paths are modelled, got {src}")
        version = DeltaTable(src["path"]).version()
        annotated = _mark_copies(canonicalize(name, src, contract, version).collect())  # one pass over the source
        tables[name] = annotated.filter(pl.col("reason").is_null()).drop("reason", "_raw")
        bad_rows = annotated.filter(pl.col("reason").is_not_null()).select(
            pl.lit(name).alias("source"), "reason", pl.col("_raw").struct.json_encode().alias("raw_row")
        )
        by_reason = bad_rows.group_by("reason").len()
        stats = dict(by_reason.iter_rows())
        used = tables[name].height
        rows_in = used + bad_rows.height
        bad = sum(v for k, v in stats.items() if k != "exact_duplicate")
        counts[name] = {
            "rows_in": rows_in,
            "used": used,
            "quarantined": bad,
            "deduplicated": stats.get("exact_duplicate", 0),
            "by_reason": dict(sorted(stats.items())),
            "delta_version": version,
        }
        if rows_in and bad / rows_in > max_bad:
            raise Unsupported(f"source {name!r}: {bad} of {rows_in} rows are bad, above max_bad_fraction={max_bad}")
        quarantine.append(bad_rows)
    return tables, pl.concat(quarantine), counts


# ------------------------------------------------------------------------------------------------ features
def daily_activity(tables: dict, contract: dict) -> pl.LazyFrame:
    """(user_id, day) -> channel sums, ``day`` = days since 1970-01-01 of the UTC instant (``lake.utc_day``)."""
    day = (pl.col("ts").dt.epoch("s") // 86400).cast(pl.Int32).alias("day")
    purchase = ~pl.col("status").fill_null("").is_in(contract["validation"]["return_statuses"])
    parts = [
        tables["orders"]
        .lazy()
        .select(
            "user_id",
            day,
            purchase.cast(pl.Float64).alias("orders"),
            pl.when(purchase).then(pl.col("amount")).otherwise(0.0).alias("spend"),
            pl.when(purchase).then(pl.col("n_items")).otherwise(0.0).alias("items"),
            (~purchase).cast(pl.Float64).alias("returns"),
            pl.lit(1.0).alias("any_order"),
        )
    ]
    if "events" in tables:
        vals = [(pl.col("event_type") == et).cast(pl.Float64).alias(ch) for et, ch in contract["event_channel"].items()]
        parts.append(tables["events"].lazy().select("user_id", day, *vals))
    if "reviews" in tables:
        rv = [pl.lit(1.0).alias("reviews"), pl.col("rating").cast(pl.Float64).alias("rating_sum")]
        parts.append(tables["reviews"].lazy().select("user_id", day, *rv))
    # user ids as categoricals (integer codes) for the grouping, the sorts and the as-of joins
    union = pl.concat([p.with_columns(pl.col("user_id").cast(pl.Categorical)) for p in parts], how="diagonal")
    present = union.collect_schema()
    daily = union.group_by("user_id", "day").agg(
        *[pl.col(c).fill_null(0.0).sum() if c in present else pl.lit(0.0).alias(c) for c in DAILY_SUMS]
    )
    return daily.with_columns(pl.lit(1.0).alias("active_days"))


def _totals_before(cum: pl.DataFrame, queries: pl.DataFrame, bound: str) -> pl.DataFrame:
    """Per query row, the user's running totals over all days ``< bound`` (zeros when there are none)."""
    q = queries.with_columns((pl.col(bound) - 1).alias("_q")).sort("_q")
    out = q.join_asof(cum, left_on="_q", right_on="day", by="uid", check_sortedness=False)
    return out.with_columns([pl.col(c).fill_null(0.0) for c in RUNNING]).drop("_q")


def build_features(tables: dict, contract: dict) -> pl.DataFrame:
    """One row per eligible (user, snapshot), columns and order of the Spark feature table.

    Same definitions as ``sequences.build_features``, another plan: Spark copies every day of activity once per
    snapshot and groups; here each user's days become running totals once (rows sorted by day), and every quantity
    is a difference of two totals found with an as-of join: bucket t of S = totals before S-(T-1-t)*B minus totals
    before S-(T-t)*B, lifetime = totals before S, the label window = totals before S+H minus before S; the long
    sequence likewise with its own buckets. The purchase rhythm comes from running totals too: gaps between
    consecutive purchase days telescope (their sum is last - first purchase day) and the running sum of squared
    gaps gives the population variance exactly, in integers. Counts stay exact; sums of amounts differ from
    Spark's by rounding only (~1e-11 on the demo lake).
    """
    T, B, H, L = contract["n_buckets"], contract["bucket_days"], contract["horizon_days"], contract["lookback_days"]
    channels, as_of = contract["channels"], _day_number(contract["run_date"])
    daily = daily_activity(tables, contract).with_columns(pl.col("user_id").to_physical().alias("uid")).collect()
    bought = pl.col("orders") > 0
    purchase_day = pl.when(bought).then(pl.col("day"))
    gap = pl.col("day").cast(pl.Int64) - purchase_day.forward_fill().shift(1)  # to the previous purchase day
    cum = daily.sort("day").select(  # window functions keep row order: running totals go by day within a user
        "uid",
        "day",
        *[pl.col(c).cum_sum().over("uid").alias(c) for c in RUNNING],
        purchase_day.forward_fill().over("uid").alias("_last_purchase"),
        pl.col("day").alias("_last_active"),
        bought.cast(pl.Int64).cum_sum().over("uid").alias("_pdays"),  # daily rows are distinct days
        pl.when(bought).then(gap * gap).otherwise(0).fill_null(0).cum_sum().over("uid").alias("_gap_sq"),
    )
    buyers = daily.filter(bought)
    names = buyers.select("uid", pl.col("user_id").cast(pl.String)).unique("uid")
    first_order = daily.group_by("uid").agg(
        pl.col("day").filter(pl.col("any_order") > 0).min().alias("_first"),
        pl.col("day").filter(bought).min().alias("_first_purchase"),  # before every S the user is eligible at
    )
    snaps = pl.DataFrame(
        {"S": [_day_number(s) for s in contract["snapshots"]], "split": list(contract["snapshots"].values())},
        schema={"S": pl.Int32, "split": pl.String},
    )
    # eligible: a purchase in [S - L, S) (candidates: users with any purchase)
    keys = ["uid", "S"]
    pairs = buyers.select("uid").unique().join(snaps.select("S"), how="cross")
    pairs = pairs.with_columns((pl.col("S") - L).alias("_lb"), (pl.col("S") + H).alias("_h"))
    running = cum.select("uid", "day", *RUNNING)  # what the differences of totals need
    at_lb = _totals_before(running, pairs, "_lb").select(*keys, pl.col("orders").alias("_orders_lb"))
    at_h = _totals_before(running, pairs, "_h").select(
        *keys, pl.col("orders").alias("_orders_h"), pl.col("active_days").alias("_active_h")
    )
    stats = (
        _totals_before(cum, pairs, "S")
        .join(at_lb, on=keys)
        .filter(pl.col("orders") > pl.col("_orders_lb"))
        .join(at_h, on=keys)
        .sort(keys)
    )
    sequence = _sequence(running, stats.select(keys), T, B, channels).alias("sequence")
    LN, LB = contract.get("long_buckets", 0), contract.get("long_bucket_days", 0)  # 0: no long sequence
    long_sequence = _sequence(running, stats.select(keys), LN, LB, channels).alias("long_sequence")
    future = pl.col("_orders_h") - pl.col("orders")
    if contract["churn_definition"] == "no_activity":
        future = pl.col("_active_h") - pl.col("active_days")
    feats = (
        stats.with_columns(sequence, long_sequence)  # same (uid, S) order as the buckets
        .join(first_order, on="uid")
        .join(names, on="uid")
        .join(snaps, on="S")
        .with_columns(
            pl.when(pl.col("S") + H <= as_of).then((future == 0).cast(pl.Float64)).alias("label"),
            (pl.col("S") - pl.col("_last_purchase")).cast(pl.Float64).alias("days_since_last_order"),
            (pl.col("S") - pl.col("_last_active")).cast(pl.Float64).alias("days_since_last_event"),
            pl.col("orders").alias("lifetime_orders"),
            pl.col("spend").alias("lifetime_spend"),
            (pl.col("spend") / pl.col("orders")).alias("mean_order_value"),  # eligible: orders >= 1
        )
        .with_columns(_rhythm())
    )
    tenure_orders = (pl.col("S") - pl.col("_first")).cast(pl.Float64)
    if "users" in tables:
        signup = (pl.col("ts").dt.epoch("s") // 86400).cast(pl.Int32).alias("_signup")
        users = tables["users"].select("user_id", signup, "country", "channel")
        users = users.unique("user_id", keep="first", maintain_order=True)  # Spark: dropDuplicates (any one row)
        feats = feats.join(users, on="user_id", how="left").with_columns(
            pl.coalesce((pl.col("S") - pl.col("_signup")).cast(pl.Float64), tenure_orders).alias("tenure_days"),
            pl.col("country").fill_null("unknown"),
            pl.col("channel").fill_null("unknown"),
        )
    else:
        feats = feats.with_columns(
            tenure_orders.alias("tenure_days"), pl.lit("unknown").alias("country"), pl.lit("unknown").alias("channel")
        )
    snapshot_date = pl.col("S").cast(pl.Date).alias("snapshot_date")  # Date = days since 1970-01-01
    statics = [*contract["numeric_static"], *contract["categorical_static"]]
    return feats.select("user_id", snapshot_date, "split", "label", "sequence", "long_sequence", *statics).sort(
        "snapshot_date", "user_id"
    )


def _sequence(running: pl.DataFrame, pairs: pl.DataFrame, n: int, days: int, channels: list) -> pl.Series:
    """Flat time-major sequences of ``n`` buckets of ``days`` days, one per (uid, S) row of ``pairs`` (sorted), from
    the running totals: bucket t = totals before boundary t+1 minus before boundary t. Empty lists when n is 0."""
    if n == 0:
        return pl.select(pl.repeat(pl.lit([], dtype=pl.List(pl.Float32)), pairs.height)).to_series()
    # bucket boundaries j = 0..n (totals before S - (n - j) * days)
    js = pl.DataFrame({"j": list(range(n + 1))}, schema={"j": pl.Int32})
    bounds = pairs.join(js, how="cross").with_columns((pl.col("S") - (n - pl.col("j")) * days).alias("_x"))
    per_bucket = (
        _totals_before(running, bounds, "_x")
        .sort("uid", "S", "j")  # n + 1 rows per pair: diff() within the pair, the first row of each pair is dropped
        .with_columns([pl.col(c).diff() for c in RUNNING])
        .filter(pl.col("j") > 0)
    )
    if "rating_mean" in channels:
        mean = pl.when(pl.col("reviews") > 0).then(pl.col("rating_sum") / pl.col("reviews")).otherwise(0.0)
        per_bucket = per_bucket.with_columns(mean.alias("rating_mean"))
    # rows are (pair, bucket) in order, channels in contract order: one reshape gives the time-major sequences
    flat = per_bucket.select(pl.concat_arr([pl.col(c).cast(pl.Float64) for c in channels])).to_series().arr.explode()
    # stored as float32 like Spark's (feature_spec.SEQUENCE_TYPE): the double sums rounded once
    return flat.reshape((-1, n * len(channels))).cast(pl.List(pl.Float32))


def _rhythm() -> list[pl.Expr]:
    """RHYTHM_STATIC from the totals before S: m = purchase days - 1 gaps summing to last - first purchase day,
    population variance (m * sum of squared gaps - sum^2) / m^2, exact in integers before the one division."""
    n = pl.col("_pdays")
    m = n - 1
    total = (pl.col("_last_purchase") - pl.col("_first_purchase")).cast(pl.Int64)
    mean = total / m
    variance = (m * pl.col("_gap_sq") - total * total) / (m * m)
    return [
        n.cast(pl.Float64).alias("purchase_days"),
        (pl.col("S") - pl.col("_first_purchase")).cast(pl.Float64).alias("days_since_first_purchase"),
        pl.when(n >= 2).then(mean).otherwise(0.0).alias("gap_mean_days"),
        pl.when(n >= 3).then(variance.sqrt()).otherwise(0.0).alias("gap_std_days"),
        pl.when(n >= 2).then((pl.col("S") - pl.col("_last_purchase")) / mean).otherwise(0.0).alias("overdue_ratio"),
    ]


# ------------------------------------------------------------------------------------------------ commands
def build(contract: dict, out: Path) -> dict:
    """Ingest + features + Delta writes (features partitioned by snapshot_date, quarantine), timed by phase."""
    t0 = time.perf_counter()
    tables, quarantine, counts = ingest(contract)
    t1 = time.perf_counter()
    feats = build_features(tables, contract)
    t2 = time.perf_counter()
    write_deltalake(str(out / "features"), feats, mode="overwrite", partition_by=["snapshot_date"])
    run_id = f"build-{contract['run_date']}"
    quarantine = quarantine.with_columns(
        pl.lit(run_id).alias("run_id"), pl.lit(dt.datetime.now(dt.timezone.utc)).alias("quarantined_at")
    )
    write_deltalake(str(out / "quarantine"), quarantine, mode="overwrite", partition_by=["run_id"])
    t3 = time.perf_counter()
    return {
        "feature_rows": feats.height,
        "quarantined": quarantine.height,
        "ingest": counts,
        "seconds": {"ingest": round(t1 - t0, 3), "features": round(t2 - t1, 3), "write": round(t3 - t2, 3)},
        "polars": pl.__version__,
    }


FLOAT32_STEP = 2.0**-23  # relative spacing of float32 values


def compare(contract: dict, spark_path: str, polars_path: str, tol: float = 1e-9) -> dict:
    """Row-by-row equality of the plan's snapshots: keys, strings and label exactly, floats within ``tol``
    (relative to max(1, |spark value|): summation order differs between the engines)."""
    dates = [dt.date.fromisoformat(s) for s in contract["snapshots"]]
    sequences = ["sequence", "long_sequence"]
    cols = ["user_id", "snapshot_date", "split", "label", *sequences, *contract["numeric_static"]]
    cols += contract["categorical_static"]
    sp = pl.scan_delta(spark_path).filter(pl.col("snapshot_date").is_in(dates)).select(cols).collect()
    po = pl.scan_delta(polars_path).select(cols).collect()
    keys = ["user_id", "snapshot_date"]
    j = sp.join(po, on=keys, how="full", suffix="_p", coalesce=True, nulls_equal=True)
    only_spark = j.filter(pl.col("split_p").is_null() & pl.col("split").is_not_null()).height
    only_polars = j.filter(pl.col("split").is_null()).height
    both = j.filter(pl.col("split").is_not_null() & pl.col("split_p").is_not_null())
    exact = ["split", *contract["categorical_static"]]
    bad = {c: both.filter(pl.col(c) != pl.col(f"{c}_p")).height for c in exact}
    bad["label"] = both.filter(~pl.col("label").eq_missing(pl.col("label_p"))).height
    for c in sequences:
        bad[f"{c}_length"] = both.filter(pl.col(c).list.len() != pl.col(f"{c}_p").list.len()).height
    max_abs, worst = {}, 0.0
    for c in [*sequences, *contract["numeric_static"]]:
        pair = both.select(pl.col(c).alias("a"), pl.col(f"{c}_p").alias("b"))
        if c in sequences:  # element by element where the lengths agree (empty lists have no elements)
            same = (pl.col("a").list.len() == pl.col("b").list.len()) & (pl.col("a").list.len() > 0)
            pair = pair.filter(same).explode("a", "b")
        diff = (pair["a"].cast(pl.Float64) - pair["b"].cast(pl.Float64)).abs()
        scaled = diff / pl.Series(pair["a"].cast(pl.Float64).abs()).clip(lower_bound=1.0)
        # float32 sequences: the engines' double sums may round to neighbouring floats (one float32 step)
        limit = max(tol, FLOAT32_STEP) if c in sequences else tol
        bad[c] = int(((scaled > limit) | (pair["a"].is_null() != pair["b"].is_null())).sum())
        max_abs[c] = float(diff.max() or 0.0)
        worst = max(worst, max_abs[c])
    mismatched = only_spark + only_polars + sum(bad.values())
    return {
        "equal": mismatched == 0 and sp.height == po.height == both.height,
        "spark_rows": sp.height,
        "polars_rows": po.height,
        "only_spark": only_spark,
        "only_polars": only_polars,
        "mismatches": {k: v for k, v in bad.items() if v},
        "max_abs_diff": worst,
        "max_abs_diff_by_column": max_abs,
        "tolerance": tol,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--contract", required=True, help="JSON file written by bench_polars.py")
    b.add_argument("--out", required=True, help="directory for the features/ and quarantine/ Delta tables")
    c = sub.add_parser("compare")
    c.add_argument("--contract", required=True)
    c.add_argument("--spark", required=True, help="the Spark feature table (Delta)")
    c.add_argument("--polars", required=True, help="this reference's feature table (Delta)")
    args = p.parse_args(argv)
    contract = json.loads(Path(args.contract).read_text())
    try:
        if args.cmd == "build":
            result = build(contract, Path(args.out))
        else:
            result = compare(contract, args.spark, args.polars)
    except Unsupported as e:
        print(f"polars_reference: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0 if result.get("equal", True) else 1


if __name__ == "__main__":
    sys.exit(main())
