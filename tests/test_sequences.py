"""Spark sequences vs the independent pandas reference, edge cases, leakage, idempotent writes."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from conftest import make_config
from pyspark.sql import functions as F

from churn_spark.feature_spec import FEATURE_STATIC, NUMERIC_STATIC, SEQUENCE_TYPE, snapshot_plan
from churn_spark.generator import LakeSpec, generate
from churn_spark.lake import ingest
from churn_spark.reference import build_reference
from churn_spark.sequences import build_features, build_from_config, write_features

T, B, H, LOOKBACK = 6, 7, 30, 60
RUN = dt.date(2026, 6, 1)
PLAN = snapshot_plan(RUN, H, 14, 3)
KW = dict(
    n_buckets=T, bucket_days=B, lookback_days=LOOKBACK, horizon_days=H, as_of=RUN, long_buckets=4, long_bucket_days=20
)


def _spark_tables(spark, pdfs):
    schemas = {
        "orders": "user_id string, ts timestamp, amount double, n_items double, status string",
        "events": "user_id string, ts timestamp, event_type string",
        "reviews": "user_id string, ts timestamp, rating double",
        "users": "user_id string, ts timestamp, country string, channel string",
    }
    return {k: spark.createDataFrame(v.astype(object).where(v.notna(), None), schemas[k]) for k, v in pdfs.items()}


def _reference_input(pdfs):
    out = dict(pdfs)
    if "users" in out:
        out["users"] = out["users"].rename(columns={"ts": "signup_ts"})
    return out


def _spark_features(spark, pdfs, plan=PLAN, **kw):
    df = build_features(spark, _spark_tables(spark, pdfs), plan, **{**KW, **kw})
    assert {f.name: f.dataType.simpleString() for f in df.schema.fields if "sequence" in f.name} == {
        "sequence": SEQUENCE_TYPE,
        "long_sequence": SEQUENCE_TYPE,
    }
    pdf = df.toPandas()
    return pdf.sort_values(["snapshot_date", "user_id"]).reset_index(drop=True)


def assert_same(spark_pdf, ref_pdf):
    assert list(spark_pdf["user_id"]) == list(ref_pdf["user_id"])
    assert list(spark_pdf["snapshot_date"]) == list(ref_pdf["snapshot_date"])
    assert list(spark_pdf["split"]) == list(ref_pdf["split"])
    np.testing.assert_array_equal(spark_pdf["label"].to_numpy(float), ref_pdf["label"].to_numpy(float))
    for column in ("sequence", "long_sequence"):
        got, want = np.stack(spark_pdf[column]), np.stack(ref_pdf[column])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)  # float32: one rounding of the double sums
    for c in FEATURE_STATIC:
        np.testing.assert_allclose(spark_pdf[c].to_numpy(float), ref_pdf[c].to_numpy(float), rtol=1e-9, err_msg=c)
    for c in ("country", "channel"):
        assert list(spark_pdf[c]) == list(ref_pdf[c])


def _ts(s):
    return pd.Timestamp(s)


def hand_made():
    S = dt.date(2026, 5, 2)  # the test snapshot of PLAN
    assert PLAN[S] == "test"
    at = lambda d, h=12: _ts(S) + pd.Timedelta(days=d, hours=h)  # noqa: E731
    orders = pd.DataFrame(
        [
            ("single", at(-3), 20.0, 1.0, "completed"),  # a user with a single order
            ("edge", _ts(S), 10.0, 1.0, "completed"),  # exactly at S: label window, not features
            ("edge", _ts(S) - pd.Timedelta(days=T * B), 7.0, 2.0, "completed"),  # exactly S - B*T: bucket 0
            ("edge", at(-T * B - 1), 5.0, 1.0, "completed"),  # before the window: lifetime only
            ("edge", at(-10), 30.0, 3.0, "refunded"),  # a return
            ("edge", at(-2), 15.0, 1.0, None),  # null status counts as a purchase
            ("horizon", at(-1), 9.0, 1.0, "completed"),
            ("horizon", _ts(S) + pd.Timedelta(days=H), 9.0, 1.0, "completed"),  # at S + H: outside the label window
            ("gap", at(-40), 12.0, 1.0, "completed"),  # empty recent buckets
            *[("rhythm", at(-k), 5.0, 1.0, "completed") for k in (100, 70, 50, 10)],  # gaps 30, 20, 40
            ("rhythm", at(-70, 15), 7.0, 1.0, "completed"),  # a second order on a purchase day: same day
            ("rhythm", at(-5), 5.0, 1.0, "refunded"),  # a return: not a purchase day
        ],
        columns=["user_id", "ts", "amount", "n_items", "status"],
    )
    events = pd.DataFrame(
        [
            ("edge", at(-1), "view"),
            ("edge", at(-1, 13), "cart"),
            ("edge", at(-8), "search"),
            ("edge", at(-8), "favorite"),
            ("browser", at(-1), "view"),  # events but no orders: not eligible
            ("gap", at(-41), "view"),
        ],
        columns=["user_id", "ts", "event_type"],
    )
    reviews = pd.DataFrame(
        [("edge", at(-9), 2.0), ("edge", at(-9, 14), 5.0), ("single", at(-2), 1.0)], columns=["user_id", "ts", "rating"]
    )
    users = pd.DataFrame(
        [("edge", _ts("2025-01-01"), "DE", "ads"), ("single", _ts("2026-04-20"), None, "organic")],
        columns=["user_id", "ts", "country", "channel"],
    )
    return {"orders": orders, "events": events, "reviews": reviews, "users": users}


def test_hand_made_edge_cases_match_reference(spark):
    pdfs = hand_made()
    got = _spark_features(spark, pdfs)
    ref = build_reference(_reference_input(pdfs), PLAN, **KW)
    assert_same(got, ref)
    row = got[(got.user_id == "edge") & (got.snapshot_date == dt.date(2026, 5, 2))].iloc[0]
    assert row.label == 0.0  # the order exactly at S counts for the label
    seq = np.asarray(row.sequence).reshape(T, -1)
    assert seq[0, 0] == 1.0 and seq[0, 1] == 7.0  # S - B*T lands in bucket 0
    assert row.lifetime_orders == 3.0  # incl. the order before the window, excl. the refund and the one at S
    h = got[(got.user_id == "horizon") & (got.snapshot_date == dt.date(2026, 5, 2))].iloc[0]
    assert h.label == 1.0  # an order exactly at S + H is outside the label window
    r = got[(got.user_id == "rhythm") & (got.snapshot_date == dt.date(2026, 5, 2))].iloc[0]
    assert (r.purchase_days, r.gap_mean_days, r.overdue_ratio) == (4.0, 30.0, 10 / 30)  # history beyond the window
    assert "browser" not in set(got.user_id)


def test_users_cut_by_arrow_batches_match_reference(spark):
    """The numpy kernel reads a partition in Arrow batches: a user whose days a batch boundary cuts is one user."""
    pdfs = hand_made()
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key)
    spark.conf.set(key, "2")  # every user with more than two active days is cut
    try:
        got = _spark_features(spark, pdfs)
    finally:
        spark.conf.set(key, before)
    assert_same(got, build_reference(_reference_input(pdfs), PLAN, **KW))


def test_orders_only_lake_drops_other_channels(spark):
    pdfs = {"orders": hand_made()["orders"]}
    got = _spark_features(spark, pdfs)
    assert_same(got, build_reference(pdfs, PLAN, **KW))
    assert len(got.sequence.iloc[0]) == T * 5  # orders, spend, items, returns, active_days
    assert set(got.country) == {"unknown"}


def test_timezone_aware_input_equals_naive_utc(spark):
    pdfs = hand_made()
    aware = {k: v.copy() for k, v in pdfs.items()}
    for v in aware.values():
        v["ts"] = pd.to_datetime(v["ts"]).dt.tz_localize("UTC").dt.tz_convert("Asia/Kolkata")
    # Spark receives the same instants; the reference must agree with itself across representations
    assert_same(
        build_reference(_reference_input(aware), PLAN, **KW), build_reference(_reference_input(pdfs), PLAN, **KW)
    )
    assert_same(_spark_features(spark, pdfs), build_reference(_reference_input(aware), PLAN, **KW))


def test_configured_return_statuses_decide_returns(spark):
    """Spark and the oracle both take the configured return statuses (compared lower-case) instead of a constant."""
    pdfs = hand_made()
    pdfs["orders"]["status"] = pdfs["orders"]["status"].replace({"refunded": "returned"})
    got = _spark_features(spark, pdfs, return_statuses=["Returned"])
    assert_same(got, build_reference(_reference_input(pdfs), PLAN, return_statuses=["Returned"], **KW))
    edge = got[(got.user_id == "edge") & (got.snapshot_date == dt.date(2026, 5, 2))].iloc[0]
    assert edge.lifetime_orders == 3.0 and np.asarray(edge.sequence).reshape(T, -1)[4, 3] == 1.0  # one return
    as_default = _spark_features(spark, pdfs)  # "returned" is no default return status: a purchase
    edge = as_default[(as_default.user_id == "edge") & (as_default.snapshot_date == dt.date(2026, 5, 2))].iloc[0]
    assert edge.lifetime_orders == 4.0 and np.asarray(edge.sequence).reshape(T, -1)[4, 3] == 0.0


@pytest.fixture(scope="module")
def generated(spark, tmp_path_factory):
    """A small generated lake, run through real ingest, as pandas (small) and validated Spark tables."""
    cfg = make_config(tmp_path_factory.mktemp("seqgen"))
    t = generate(spark, LakeSpec(users=120, weeks=30, end_date=RUN, seed=11))
    for name, df in t.items():
        df.write.format("delta").save(f"{cfg.lake_dir}/{name}")
    res = ingest(spark, cfg, "r", RUN)
    return {k: v.toPandas() for k, v in res.tables.items()}


def test_generated_lake_matches_reference_exactly(spark, generated):
    pdfs = {k: v.drop(columns=[c for c in ("order_id",) if c in v]) for k, v in generated.items()}
    got = _spark_features(spark, pdfs)
    ref = build_reference(_reference_input(pdfs), PLAN, **KW)
    assert len(got) > 100
    assert_same(got, ref)


def test_no_activity_definition_matches_reference(spark, generated):
    pdfs = {k: v.drop(columns=[c for c in ("order_id",) if c in v]) for k, v in generated.items()}
    got = _spark_features(spark, pdfs, churn_definition="no_activity")
    assert_same(got, build_reference(_reference_input(pdfs), PLAN, churn_definition="no_activity", **KW))


def test_events_at_or_after_the_snapshot_change_no_feature(spark, generated):
    """Leakage: adding any row at or after S leaves every feature of snapshot S unchanged."""
    S = dt.date(2026, 5, 2)
    plan = {S: "test"}
    base = {k: v.drop(columns=[c for c in ("order_id",) if c in v]) for k, v in generated.items()}
    users = base["orders"]["user_id"].unique()[:40]
    n = len(users)
    extra = {
        "orders": {"ts": [_ts(S)] * n, "amount": [999.0] * n, "n_items": [9.0] * n, "status": ["completed"] * n},
        "events": {"ts": [_ts(S) + pd.Timedelta(hours=5)] * n, "event_type": ["view"] * n},
        "reviews": {"ts": [_ts(S) + pd.Timedelta(days=60)] * n, "rating": [1.0] * n},
    }
    leaked = {}
    for k, v in base.items():
        if k in extra:
            add = pd.DataFrame({"user_id": list(users), **extra[k]})[list(v.columns)].astype(v.dtypes.to_dict())
            leaked[k] = pd.concat([v, add], ignore_index=True)
        else:
            leaked[k] = v
    a = _spark_features(spark, base, plan=plan, as_of=dt.date(2026, 9, 1))
    b = _spark_features(spark, leaked, plan=plan, as_of=dt.date(2026, 9, 1))
    feats = ["user_id", "sequence", *NUMERIC_STATIC]
    pd.testing.assert_frame_equal(a[feats], b[feats])


def test_removing_events_after_the_horizon_changes_no_label(spark, generated):
    S = dt.date(2026, 4, 4)
    plan = {S: "train"}
    base = {k: v.drop(columns=[c for c in ("order_id",) if c in v]) for k, v in generated.items()}
    cut = _ts(S) + pd.Timedelta(days=H)
    trimmed = {k: v[v["ts"] < cut] if k != "users" else v for k, v in base.items()}
    a = _spark_features(spark, base, plan=plan)
    b = _spark_features(spark, trimmed, plan=plan)
    pd.testing.assert_frame_equal(a[["user_id", "label"]], b[["user_id", "label"]])


def test_feature_table_write_is_idempotent_per_snapshot(spark, tmp_path):
    pdfs = hand_made()
    df = build_features(spark, _spark_tables(spark, pdfs), PLAN, **KW)
    path = str(tmp_path / "features")
    v0 = write_features(df, path, list(PLAN), {"orders": {"version": 3}})
    n = spark.read.format("delta").load(path).count()
    v1 = write_features(df, path, list(PLAN), {"orders": {"version": 3}})
    t = spark.read.format("delta").load(path)
    assert v1 == v0 + 1 and t.count() == n
    assert t.groupBy("user_id", "snapshot_date").count().where("count > 1").count() == 0
    # rewriting one snapshot leaves the others alone
    one = next(d for d, split in PLAN.items() if split == "validation")  # the hand-made users are eligible there
    n_one = t.where(F.col("snapshot_date") == F.lit(one)).count()
    assert n_one > 0
    write_features(df.where(F.col("snapshot_date") == F.lit(one)).limit(0), path, [one], {})
    after = spark.read.format("delta").load(path)
    assert after.where(F.col("snapshot_date") == F.lit(one)).count() == 0
    assert after.count() == n - n_one
    import json

    from delta.tables import DeltaTable

    meta = DeltaTable.forPath(spark, path).history().where(f"version = {v1}").select("userMetadata").first()[0]
    assert json.loads(meta)["inputs"]["orders"]["version"] == 3


def test_a_table_written_with_double_sequences_keeps_them(spark, tmp_path):
    """Tables written before the sequences became float32: new partitions are widened to the table's doubles
    (Delta cannot narrow a column in place), and the values are the float32 ones."""
    df = build_features(spark, _spark_tables(spark, hand_made()), PLAN, **KW)
    path = str(tmp_path / "features")
    second = next(d for d, split in PLAN.items() if split == "validation")  # the hand-made users are eligible there
    first = next(d for d in PLAN if d != second)
    as_double = df.withColumn("sequence", F.col("sequence").cast("array<double>"))
    write_features(as_double.where(F.col("snapshot_date") == F.lit(first)), path, [first], {})
    write_features(df.where(F.col("snapshot_date") == F.lit(second)), path, [second], {})
    t = spark.read.format("delta").load(path)
    assert t.schema["sequence"].dataType.simpleString() == "array<double>"
    assert t.schema["long_sequence"].dataType.simpleString() == SEQUENCE_TYPE
    got = t.where(F.col("snapshot_date") == F.lit(second)).orderBy("user_id").toPandas()
    want = df.where(F.col("snapshot_date") == F.lit(second)).orderBy("user_id").toPandas()
    assert len(got) > 0
    np.testing.assert_array_equal(np.stack(got["sequence"]), np.stack(want["sequence"]).astype(np.float64))


def _boundary_lake(spark, cfg):
    """Rows 30 minutes either side of UTC midnights that are bucket and snapshot boundaries, in every input type:
    naive strings (UTC orders, New York events), strings with an offset, a TIMESTAMP column and a DATE column."""
    lake = cfg.lake_dir
    spark.createDataFrame(
        [
            ("a", "2026-05-10 23:30:00", 10.0, 1, "completed"),  # last day of bucket 2 for S = 2026-05-18
            ("a", "2026-05-11 00:30:00", 20.0, 2, "completed"),  # first day of bucket 3
            ("b", "2026-05-17 23:30:00", 5.0, 1, "completed"),  # the day before S: a feature, and b is eligible
            ("c", "2026-05-05T12:00:00Z", 7.0, 1, "completed"),
            ("c", "2026-05-18 00:30:00", 7.0, 1, "completed"),  # inside S's label window: c did not churn
        ],
        "user_id string, order_ts string, amount double, n_items int, status string",
    ).write.format("delta").save(f"{lake}/orders")
    spark.createDataFrame(
        [
            ("a", "2026-05-10 19:30:00", "view"),  # New York wall clock = 23:30 UTC May 10
            ("a", "2026-05-11T00:30:00+00:00", "cart"),
        ],
        "user_id string, event_ts string, event_type string",
    ).write.format("delta").save(f"{lake}/events")
    spark.createDataFrame(
        [("a", int(pd.Timestamp("2026-05-10 23:30", tz="UTC").timestamp()), 4)], "user_id string, secs long, rating int"
    ).select("user_id", F.timestamp_seconds("secs").alias("review_ts"), "rating").write.format("delta").save(
        f"{lake}/reviews"
    )
    spark.createDataFrame(
        [("a", dt.date(2026, 1, 1), "DE", "ads"), ("b", dt.date(2026, 5, 1), "FR", "organic")],
        "user_id string, signup_ts date, country string, channel string",
    ).write.format("delta").save(f"{lake}/users")


def test_features_do_not_depend_on_the_session_time_zone(spark, tmp_path):
    """UTC days and buckets whatever spark.sql.session.timeZone is (a cluster may submit with Europe/Paris)."""
    run = dt.date(2026, 6, 1)
    cfg = make_config(
        tmp_path,
        "sources.events.timezone=America/New_York",
        "sequence.n_buckets=4",
        "sequence.bucket_days=7",
        "snapshots.horizon_days=14",
        "snapshots.step_days=7",
        "snapshots.n_labelled=3",
    )
    _boundary_lake(spark, cfg)
    before = spark.conf.get("spark.sql.session.timeZone")
    rows = {}
    try:
        for zone in ("Europe/Paris", "UTC", "Asia/Tokyo"):
            spark.conf.set("spark.sql.session.timeZone", zone)
            res = ingest(spark, cfg, "r", run)
            rows[zone] = sorted(
                (
                    r.user_id,
                    r.snapshot_date,
                    r.split,
                    r.label,
                    tuple(r.sequence),
                    *[r[c] for c in NUMERIC_STATIC],
                    r.country,
                    r.channel,
                )
                for r in build_from_config(spark, cfg, res.tables, run).collect()
            )
            res.release()
    finally:
        spark.conf.set("spark.sql.session.timeZone", before)
    assert rows["Europe/Paris"] == rows["UTC"] == rows["Asia/Tokyo"]
    test = {r[0]: r for r in rows["UTC"] if r[1] == dt.date(2026, 5, 18)}
    assert sorted(test) == ["a", "b", "c"] and {r[2] for r in test.values()} == {"test"}
    # channels: orders spend items returns views carts favourites searches reviews rating_mean active_days
    seq = np.asarray(test["a"][4]).reshape(4, -1)
    np.testing.assert_array_equal(seq[2], [1, 10, 1, 0, 1, 0, 0, 0, 1, 4, 1])
    np.testing.assert_array_equal(seq[3], [1, 20, 2, 0, 0, 1, 0, 0, 0, 0, 1])
    assert seq[:2].sum() == 0
    labels = {u: r[3] for u, r in test.items()}
    assert labels == {"a": 1.0, "b": 1.0, "c": 0.0}
    statics = dict(zip(NUMERIC_STATIC, test["b"][5:11]))
    assert statics["days_since_last_order"] == 1.0 and statics["tenure_days"] == 17.0
    assert dict(zip(NUMERIC_STATIC, test["a"][5:11]))["tenure_days"] == 137.0
