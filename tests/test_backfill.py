"""Backfill, risk_delta / newly_high across snapshots and the action list, on a copy of the weekly run's tables.

The session's ``weekly_run`` is never written to: its feature and risk tables are copied into this module's own
work_dir, and the lake and the MLflow registry are only read.
"""

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import WEEKLY_SMALL, make_config
from pyspark.sql import functions as F

from churn_spark import actions as A
from churn_spark.backfill import BackfillError, backfill, snapshot_dates
from churn_spark.delta_util import latest_version
from churn_spark.score import score

pytestmark = pytest.mark.slow
RUN = dt.date(2026, 11, 2)
D14, D7, D21 = RUN - dt.timedelta(days=14), RUN - dt.timedelta(days=7), RUN - dt.timedelta(days=21)


def _partition(spark, cfg, snapshot, version=None):
    r = spark.read.format("delta")
    if version is not None:
        r = r.option("versionAsOf", version)
    return r.load(cfg.risk_table_path).where(F.col("snapshot_date") == F.lit(snapshot)).toPandas().set_index("user_id")


@pytest.fixture(scope="module")
def run(spark, weekly_run, tmp_path_factory):
    from delta.tables import DeltaTable

    src, log = weekly_run
    work = tmp_path_factory.mktemp("backfill")
    versions = {  # as the weekly run left them: other modules (reliability) may have written to them since
        src.features_path: log["steps"]["build_sequences"]["features_version"],
        src.risk_table_path: log["steps"]["score"]["risk_table_version"],
    }
    for table, version in versions.items():
        shutil.copytree(table, work / "tables" / Path(table).name)
        copy = DeltaTable.forPath(spark, str(work / "tables" / Path(table).name))
        if int(copy.history(1).first()["version"]) != version:
            copy.restoreToVersion(version)
    cfg = make_config(
        work, *WEEKLY_SMALL, f"lake_root={Path(src.lake_dir).resolve()}", f"registry.tracking_uri={src.tracking_uri}"
    )
    out = {
        "cfg": cfg,
        "risk_v0": latest_version(spark, cfg.risk_table_path),
        "features_v0": latest_version(spark, cfg.features_path),
    }
    out["first"] = backfill(spark, cfg, D14, D7, every=7)
    out["after_first"] = latest_version(spark, cfg.risk_table_path)
    out["p14"], out["p7"] = _partition(spark, cfg, D14), _partition(spark, cfg, D7)
    out["again"] = backfill(spark, cfg, D14, D7, every=7)
    out["after_again"] = latest_version(spark, cfg.risk_table_path)
    out["rescored"] = score(spark, cfg, snapshot=RUN, run_id="rescore")  # previous snapshot now: D7
    out["p0"] = _partition(spark, cfg, RUN)
    out["resumed"] = backfill(spark, cfg, D21, D7, every=7)
    return out


def test_snapshot_dates_and_bad_ranges():
    assert snapshot_dates(D21, RUN, 7) == [D21, D14, D7, RUN]
    assert snapshot_dates(D21, RUN - dt.timedelta(days=1), 7) == [D21, D14, D7]
    with pytest.raises(BackfillError, match="before"):
        snapshot_dates(RUN, D7, 7)
    with pytest.raises(BackfillError, match="every"):
        snapshot_dates(D7, RUN, 0)


def test_backfill_builds_missing_features_and_commits_once_per_snapshot(spark, run):
    cfg, first = run["cfg"], run["first"]
    assert sorted(first["scored"]) == [D14.isoformat(), D7.isoformat()] and first["skipped"] == []
    assert first["model_version"] == "1" and first["features_version"] == run["features_v0"] + 1
    assert run["after_first"] == run["risk_v0"] + 2  # one commit per snapshot
    hist = (
        spark.sql(f"DESCRIBE HISTORY delta.`{Path(cfg.risk_table_path).resolve()}`")
        .where(F.col("version") > run["risk_v0"])
        .where(F.col("version") <= run["after_first"])
        .collect()
    )
    assert sorted(h["userMetadata"].count("backfill-") for h in hist) == [1, 1]
    feats = spark.read.format("delta").load(cfg.features_path)
    new = feats.where(F.col("snapshot_date").isin(D14, D7))
    assert new.count() > 100 and new.where(F.col("label").isNotNull()).count() == 0  # no labels on backfilled rows
    assert (
        feats.where(F.col("snapshot_date") == F.lit(RUN - dt.timedelta(days=30))).where(F.col("label").isNull()).count()
        == 0
    )  # the weekly run's test snapshot is untouched
    assert (
        spark.read.format("delta")
        .load(A.actions_table_path(cfg))
        .where(F.col("snapshot_date").isin(D14, D7, D21))
        .count()
        == 0
    )  # no action lists for the past


def test_backfill_is_idempotent_and_resumable(spark, run):
    cfg = run["cfg"]
    assert run["again"]["scored"] == {} and run["again"]["skipped"] == [D14.isoformat(), D7.isoformat()]
    assert run["after_again"] == run["after_first"]  # nothing written
    resumed = run["resumed"]
    assert list(resumed["scored"]) == [D21.isoformat()] and resumed["skipped"] == [D14.isoformat(), D7.isoformat()]
    before = latest_version(spark, cfg.risk_table_path)
    forced = backfill(spark, cfg, D7, D7, force=True)
    assert list(forced["scored"]) == [D7.isoformat()] and latest_version(spark, cfg.risk_table_path) == before + 1
    again = _partition(spark, cfg, D7)
    cols = ["churn_probability", "risk_tier", "risk_rank", "lifecycle", "expected_value_at_risk", "risk_delta"]
    assert again[cols].sort_index().equals(run["p7"][cols].sort_index())  # the same partition, replaced


def test_risk_delta_and_newly_high_compare_with_the_previous_snapshot(run):
    p14, p7, p0 = run["p14"], run["p7"], run["p0"]
    assert p14["risk_delta"].isna().all() and p14["newly_high"].isna().all()  # nothing before D14 in the table
    for now, prev in ((p7, p14), (p0, p7)):
        both = now.index.intersection(prev.index)
        assert len(both) > 100 and len(now.index.difference(prev.index)) > 0
        want = now.loc[both, "churn_probability"] - prev.loc[both, "churn_probability"]
        np.testing.assert_allclose(now.loc[both, "risk_delta"].to_numpy(float), want.to_numpy(float), atol=2e-6)
        assert now.drop(both)["risk_delta"].isna().all()
        was_high = (prev["risk_tier"] == "high").reindex(now.index, fill_value=False)
        assert (now["newly_high"].astype(bool) == ((now["risk_tier"] == "high") & ~was_high)).all()
        assert now["newly_high"].astype(bool).sum() < (now["risk_tier"] == "high").sum()


def test_lapsed_users_rank_after_savable_users_and_the_action_list_holds_the_savable_high_tier(spark, run):
    cfg, p0 = run["cfg"], run["p0"]
    lapsed = p0[p0["lifecycle"] == "lapsed"]
    savable = p0[p0["lifecycle"] != "lapsed"]
    assert len(lapsed) > 0 and (lapsed["risk_tier"] == "lapsed").all() and lapsed["risk_percentile"].isna().all()
    assert lapsed["risk_rank"].min() > savable["risk_rank"].max()
    assert set(savable.loc[savable["risk_tier"] == "high", "lifecycle"]) == {"at_risk"}
    assert (p0["expected_value_at_risk"] >= 0).all()
    acts = (
        spark.read.format("delta")
        .load(A.actions_table_path(cfg))
        .where(F.col("snapshot_date") == F.lit(RUN))
        .toPandas()
        .sort_values("value_rank")
    )
    assert run["rescored"].actions["listed"] == len(acts)
    high = savable[savable["risk_tier"] == "high"]
    assert sorted(acts["user_id"]) == sorted(high.index)  # budget 1000 > high tier: everybody listed
    assert (np.diff(acts["expected_value_at_risk"].to_numpy()) <= 0).all()
    want_control = [A.control_draw(u, RUN) < cfg.actions.control_share for u in acts["user_id"]]
    assert list(acts["control"]) == want_control
    assert list(acts["action"]) == [
        A.match_action(list(c), cfg.actions.rules, cfg.actions.default_action)[0] for c in acts["top_reasons"]
    ]
