"""The weekly job end to end on a generated lake: features -> Horovod training -> pandas-UDF scoring -> report."""

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from churn_spark import pipeline, registry
from churn_spark.bundle import ModelIntegrityError, load_bundle
from churn_spark.feature_spec import FEATURE_STATIC
from churn_spark.predict import get_bundle, score_frame, ship_model
from churn_spark.reasons import ReasonSettings
from churn_spark.score import ScoringError, score


@pytest.fixture(scope="module")
def weekly(weekly_run):
    return weekly_run


pytestmark = pytest.mark.slow
RUN = dt.date(2026, 11, 2)


def _risk(spark, cfg, version=None):
    r = spark.read.format("delta")
    if version is not None:
        r = r.option("versionAsOf", version)
    return r.load(cfg.risk_table_path)


def _features(spark, cfg, snapshot):
    return spark.read.format("delta").load(cfg.features_path).where(F.col("snapshot_date") == F.lit(snapshot))


def test_every_step_recorded(weekly):
    cfg, log = weekly
    steps = log["steps"]
    assert list(steps) == list(pipeline.STEPS)
    assert steps["train"]["mlflow_run_id"] and steps["score"]["snapshot"] == RUN.isoformat()
    models = json.loads(open(steps["train"]["metrics_json"]).read())["models"]
    for name in ("deep", "blend", "gbt"):  # worth its cost? the gain over the linear baseline, with its interval
        m = models[name]
        assert m["roc_auc_gain_vs_lr_rfm_lo"] <= m["roc_auc_gain_vs_lr_rfm"] <= m["roc_auc_gain_vs_lr_rfm_hi"]
        assert m["roc_auc_gain_vs_lr_rfm"] == pytest.approx(m["roc_auc"] - models["lr_rfm"]["roc_auc"])
    ingest = steps["build_sequences"]["ingest"]
    for source, c in ingest.items():
        assert c["rows_in"] == c["used"] + c["quarantined"] + c["deduplicated"], source
    assert ingest["orders"]["quarantined"] > 0 and ingest["events"]["deduplicated"] > 0  # the dirty lake
    # where the time went: every step's wall seconds, with the parts logged inside it
    t = {name: out["timings"] for name, out in steps.items()}
    assert all(v["seconds"] > 0 for v in t.values()), t
    assert {"training data", "horovod training", "evaluation"} <= set(t["train"]["parts"])
    assert t["train"]["parts"]["horovod training"] <= t["train"]["seconds"]
    page = open(steps["report"]["report"]).read()
    assert "Where the time went" in page and "horovod training" in page


def test_every_eligible_user_scored_exactly_once(spark, weekly):
    cfg, _ = weekly
    risk = _risk(spark, cfg).where(F.col("snapshot_date") == F.lit(RUN))
    eligible = _features(spark, cfg, RUN)
    assert risk.count() == eligible.count() > 100
    assert risk.select("user_id").distinct().count() == risk.count()
    assert risk.join(eligible, "user_id", "left_anti").count() == 0
    s = risk.agg(F.min("churn_probability"), F.max("churn_probability"), F.min("risk_rank"), F.max("risk_rank")).first()
    assert 0.0 <= s[0] <= s[1] <= 1.0 and s[2] == 1 and s[3] <= risk.count()
    row = risk.orderBy("risk_rank", "user_id").first()
    assert row.model_name == cfg.registry.model_name and row.model_version == "1"
    assert row.feature_table_version == weekly[1]["steps"]["build_sequences"]["features_version"]
    assert row.risk_tier == "high" and 0 < len(row.top_reasons) <= 3


def test_ranks_and_tiers_follow_the_raw_score_and_never_the_row_order(spark, weekly):
    """Among savable users: rank = 1 + savable users with a strictly higher raw score; equal scores share rank and
    tier; tiers by share of the savable users. Lapsed users: tier ``lapsed``, ranked after every savable user."""
    cfg, _ = weekly
    all_rows = _risk(spark, cfg).where(F.col("snapshot_date") == F.lit(RUN)).toPandas()
    lapsed = all_rows[all_rows["lifecycle"] == "lapsed"]
    pdf = all_rows[all_rows["lifecycle"] != "lapsed"]
    assert (lapsed["risk_tier"] == "lapsed").all() and (pdf["risk_tier"] != "lapsed").all()
    assert len(lapsed) == 0 or lapsed["risk_rank"].min() > pdf["risk_rank"].max()
    raw = pdf["raw_score"].to_numpy()
    higher = np.array([(raw > r).sum() for r in raw])
    assert (pdf["risk_rank"].to_numpy() == higher + 1).all()
    assert pdf.groupby("raw_score")["risk_tier"].nunique().max() == 1
    # churn_probability is monotone in raw_score (calibration keeps the order)
    o = all_rows.sort_values("raw_score")
    assert (np.diff(o["churn_probability"].to_numpy()) >= -1e-12).all()
    share_high = (pdf["risk_tier"] == "high").mean()
    assert 0.09 <= share_high <= 0.13, share_high
    assert 0.28 <= (pdf["risk_tier"] != "low").mean() <= 0.33


def test_a_model_is_not_applied_to_features_of_another_contract(spark, weekly, tmp_path):
    import hashlib
    import json as _json

    from churn_spark.score import check_model_fits

    cfg, log = weekly
    model_dir, version = registry.download_version(cfg)
    fv = log["steps"]["build_sequences"]["features_version"]
    check_model_fits(spark, cfg, model_dir, version, fv)  # the real pair fits
    other = tmp_path / "model"
    shutil.copytree(model_dir, other)
    stats = _json.loads((other / "stats.json").read_text())
    (other / "stats.json").write_text(_json.dumps({**stats, "bucket_days": 14}))
    manifest = _json.loads((other / "manifest.json").read_text())  # a consistent bundle, only trained otherwise
    manifest["files"]["stats.json"] = hashlib.sha256((other / "stats.json").read_bytes()).hexdigest()
    (other / "manifest.json").write_text(_json.dumps(manifest))
    with pytest.raises(ScoringError, match="bucket_days: model 14 vs features 7"):
        check_model_fits(spark, cfg, str(other), "x", fv)


def test_a_new_category_scores_within_the_range_of_known_ones(spark, weekly):
    cfg, _ = weekly
    model_dir, _ = registry.download_version(cfg)
    b = load_bundle(model_dir)
    pdf = _features(spark, cfg, RUN).limit(300).toPandas()
    means = {}
    for country in [*b.stats.vocab["country"], "Atlantis"]:
        x = b.stats.inputs(pdf.assign(country=country))
        means[country] = float(np.mean(b.model.predict(x, verbose=0)))
    known = [v for k, v in means.items() if k != "Atlantis"]
    assert min(known) - 0.02 <= means["Atlantis"] <= max(known) + 0.02, means


def test_probabilities_equal_plain_predict(spark, weekly):
    cfg, _ = weekly
    model_dir, _ = registry.download_version(cfg)
    b = load_bundle(model_dir)
    pdf = _features(spark, cfg, RUN).toPandas()
    network = np.asarray(b.model.predict(b.stats.inputs(pdf), verbose=0)).reshape(-1)
    expected = b.calibrator(b.calibrator.shipped_score(network, pdf))  # the blend's, when the run shipped one
    got = (
        _risk(spark, cfg).where(F.col("snapshot_date") == F.lit(RUN)).select("user_id", "churn_probability").toPandas()
    )
    merged = pd.DataFrame({"user_id": pdf.user_id, "expected": np.clip(expected, 0, 1)}).merge(got, on="user_id")
    assert len(merged) == len(pdf)
    np.testing.assert_allclose(merged.churn_probability, merged.expected, atol=1e-5)


def test_model_loaded_once_per_python_worker(spark, weekly):
    cfg, _ = weekly
    model_dir, _ = registry.download_version(cfg)
    ref = ship_model(spark, model_dir, cfg.path("tmp", "ship"))

    def probe(batches):
        import os as _os

        from churn_spark import predict

        for pdf in batches:
            get_bundle(ref)
            yield pd.DataFrame({"pid": [_os.getpid()], "loads": [predict.LOADS[ref]], "rows": [len(pdf)]})

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "50")
    out = _features(spark, cfg, RUN).repartition(4).mapInPandas(probe, "pid long, loads long, rows long").toPandas()
    assert len(out) > out.pid.nunique()  # many batches per worker ...
    assert out.groupby("pid").loads.max().max() == 1  # ... but one load each


def test_catalog_table_and_latest_view(spark, weekly):
    from churn_spark.bi_catalog import Catalog  # the jobs no longer write a catalog; the SQL server's code does

    cfg, _ = weekly
    Catalog(spark, cfg).refresh()
    n = spark.sql(f"SELECT count(*) FROM {cfg.scoring.catalog_table} WHERE snapshot_date = DATE'{RUN}'").first()[0]
    assert n == _features(spark, cfg, RUN).count()
    tiers = spark.sql("SELECT risk_tier, count(*) n FROM churn.churn_risk_latest GROUP BY risk_tier").collect()
    assert sum(r.n for r in tiers) == n


def test_rerun_skips_completed_steps(spark, weekly):
    cfg, log = weekly
    version = (
        _risk(spark, cfg)
        .sparkSession.sql(f"DESCRIBE HISTORY delta.`{Path(cfg.risk_table_path).resolve()}`")
        .agg(F.max("version"))
        .first()[0]
    )
    again = pipeline.weekly(spark, cfg, RUN)
    assert again["steps"] == json.loads(json.dumps(log["steps"], default=str))
    after = (
        spark.sql(f"DESCRIBE HISTORY delta.`{Path(cfg.risk_table_path).resolve()}`").agg(F.max("version")).first()[0]
    )
    assert after == version


def test_rescoring_replaces_only_its_partition_and_time_travel_keeps_the_old(spark, weekly):
    cfg, _ = weekly
    other = dt.date(2026, 10, 3)  # the test snapshot: also scoreable
    v0 = spark.sql(f"DESCRIBE HISTORY delta.`{Path(cfg.risk_table_path).resolve()}`").agg(F.max("version")).first()[0]
    scored_at_v0 = {
        r.scored_at
        for r in _risk(spark, cfg, v0)
        .where(F.col("snapshot_date") == F.lit(other))
        .select("scored_at")
        .distinct()
        .collect()
    }
    first_other = score(spark, cfg, snapshot=other)
    assert first_other.table_version == v0 + 1
    before = _risk(spark, cfg, first_other.table_version)
    snap = lambda df, d: df.where(F.col("snapshot_date") == F.lit(d)).drop("scored_at", "run_id")  # noqa: E731
    cols = ["user_id", "churn_probability", "risk_tier", "risk_rank", "top_reasons"]
    run_rows = snap(before, RUN).select(cols).toPandas().sort_values("user_id").reset_index(drop=True)
    other_rows = snap(before, other).select(cols).toPandas().sort_values("user_id").reset_index(drop=True)
    again = score(spark, cfg, snapshot=RUN)
    assert again.table_version == first_other.table_version + 1
    now = _risk(spark, cfg)
    pd.testing.assert_frame_equal(
        snap(now, RUN).select(cols).toPandas().sort_values("user_id").reset_index(drop=True), run_rows
    )  # same rows, same values, reasons deterministic
    pd.testing.assert_frame_equal(
        snap(now, other).select(cols).toPandas().sort_values("user_id").reset_index(drop=True), other_rows
    )  # the other snapshot is untouched
    assert now.where(F.col("snapshot_date").isin(RUN, other)).count() == len(run_rows) + len(other_rows)
    old = _risk(spark, cfg, v0)  # time travel: the table as it was before this test scored `other`
    assert {
        r.scored_at for r in old.where(F.col("snapshot_date") == F.lit(other)).select("scored_at").distinct().collect()
    } == scored_at_v0


def test_reasons_point_at_the_planted_channel(spark, weekly):
    """A hand-made user whose orders stopped four weeks ago gets an order-related reason; a steady one does not."""
    cfg, _ = weekly
    model_dir, _ = registry.download_version(cfg)
    b = load_bundle(model_dir)
    T, C = b.stats.n_buckets, len(b.stats.channels)
    ch = b.stats.channels
    steady = np.zeros((T, C))
    for name, v in {
        "orders": 1,
        "spend": 60,
        "items": 2,
        "views": 12,
        "carts": 2,
        "favourites": 1,
        "searches": 4,
        "reviews": 0.3,
        "rating_mean": 4.5,
        "active_days": 4,
    }.items():
        steady[:, ch.index(name)] = v
    stopped = steady.copy()
    for name in ("orders", "spend", "items", "reviews", "rating_mean"):
        stopped[-4:, ch.index(name)] = 0
    stopped[-4:, ch.index("active_days")] = 2
    static = {
        "tenure_days": 400.0,
        "lifetime_orders": 40.0,
        "lifetime_spend": 2400.0,
        "mean_order_value": 60.0,
        "days_since_last_event": 1.0,
    }
    # the same story in the long monthly view (about 4 weeks a month) and in the purchase rhythm: 40 purchase days
    # over 400 days, every 10 days; the stopped user is 29 days past their last one
    L = b.stats.long_buckets
    long_steady, long_stopped = np.tile(steady[-1] * 4, (L, 1)), np.tile(steady[-1] * 4, (L, 1))
    long_stopped[-1] = stopped[-1] * 4
    rhythm = {"purchase_days": 40.0, "days_since_first_purchase": 400.0, "gap_mean_days": 10.0, "gap_std_days": 2.0}
    rows = pd.DataFrame(
        [
            {"user_id": "steady", "sequence": steady.reshape(-1).tolist(), **static, "days_since_last_order": 3.0,
             "long_sequence": long_steady.reshape(-1).tolist(), **rhythm, "overdue_ratio": 0.3},
            {"user_id": "stopped", "sequence": stopped.reshape(-1).tolist(), **static, "days_since_last_order": 29.0,
             "long_sequence": long_stopped.reshape(-1).tolist(), **rhythm, "overdue_ratio": 2.9},
        ]
    )  # fmt: skip
    rows["country"], rows["channel"] = "DE", "organic"
    df = spark.createDataFrame(rows[["user_id", "sequence", "long_sequence", *FEATURE_STATIC, "country", "channel"]])
    ref = ship_model(spark, model_dir, cfg.path("tmp", "ship"))
    out = {r.user_id: r for r in score_frame(df, ref, ["user_id"], reasons=ReasonSettings()).collect()}
    # the model ranks on the raw score; the calibrated probability is monotone in it (and may tie, e.g. at 0)
    assert out["stopped"].raw_probability > out["steady"].raw_probability
    assert out["stopped"].churn_probability >= out["steady"].churn_probability
    order_codes = ("orders_", "spend_", "items_", "days_since_last_order")
    assert any(code.startswith(order_codes) for code in out["stopped"].top_reasons), out["stopped"].top_reasons
    # true statements only: the steady user's rates did not change; neither user reviewed recently (stopped) or
    # badly (steady rates 4.5), so no review code may appear whatever the model attributes
    assert not any("_down_" in c or "_up_" in c for c in out["steady"].top_reasons), out["steady"].top_reasons
    for user in ("steady", "stopped"):
        assert not any(c.startswith(("bad_review", "rating_mean_")) for c in out[user].top_reasons), out[user]
    again = {r.user_id: r.top_reasons for r in score_frame(df, ref, ["user_id"], reasons=ReasonSettings()).collect()}
    assert again["stopped"] == out["stopped"].top_reasons  # deterministic


def test_missing_or_corrupt_model_fails_clearly_and_writes_nothing(spark, weekly):
    cfg, _ = weekly
    version = (
        spark.sql(f"DESCRIBE HISTORY delta.`{Path(cfg.risk_table_path).resolve()}`").agg(F.max("version")).first()[0]
    )
    with pytest.raises(ModelIntegrityError, match="has no version 99"):
        score(spark, cfg, snapshot=RUN, model_version="99")
    model_dir, _ = registry.download_version(cfg)
    backup = Path(str(model_dir) + ".bak")
    shutil.copytree(model_dir, backup)
    try:
        with open(Path(model_dir) / "weights.h5", "r+b") as f:
            f.seek(200)
            f.write(b"\x00corrupt\x00")
        with pytest.raises(ModelIntegrityError, match="checksum"):
            score(spark, cfg, snapshot=RUN)
        os.remove(Path(model_dir) / "weights.h5")
        with pytest.raises(ModelIntegrityError, match="missing"):
            score(spark, cfg, snapshot=RUN)
    finally:
        shutil.rmtree(model_dir)
        shutil.move(backup, model_dir)
    after = (
        spark.sql(f"DESCRIBE HISTORY delta.`{Path(cfg.risk_table_path).resolve()}`").agg(F.max("version")).first()[0]
    )
    assert after == version


def test_snapshot_without_rows_is_a_clear_error(spark, weekly):
    cfg, _ = weekly
    with pytest.raises(ScoringError, match="no feature rows"):
        score(spark, cfg, snapshot=dt.date(2020, 1, 1))


def test_risk_table_reads_without_spark_the_same_as_with_spark(spark, weekly):
    from churn_spark.delta_reader import read_delta

    cfg, _ = weekly
    got = read_delta(cfg.risk_table_path, filters={"snapshot_date": RUN.isoformat()})
    want = _risk(spark, cfg).where(F.col("snapshot_date") == F.lit(RUN)).toPandas()
    assert len(got) == len(want) > 0 and set(got.snapshot_date) == {RUN}
    cols = ["user_id", "churn_probability", "risk_tier", "risk_rank"]
    pd.testing.assert_frame_equal(
        got[cols].sort_values("user_id").reset_index(drop=True),
        want[cols].sort_values("user_id").reset_index(drop=True),
        check_dtype=False,
    )
    first = read_delta(cfg.risk_table_path, version=0)  # time travel without Spark
    assert len(first) == len(_risk(spark, cfg, 0).toPandas())
