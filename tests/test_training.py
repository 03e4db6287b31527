"""Horovod training on Spark (2 real ranks on local[2]) with baselines, calibration, MLflow, gate and resume."""
import json
from pathlib import Path

import pytest

from churn_spark import registry
from churn_spark.pipeline import build_sequences
from churn_spark.train import gate, load_splits, train
from conftest import make_config
from planted import OVERRIDES, RUN, write_planted

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planted(spark, tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp("planted"), *OVERRIDES)
    write_planted(spark, cfg.lake_dir)
    built = build_sequences(spark, cfg, RUN)
    result = train(spark, cfg, RUN, built["features_version"])
    return cfg, built, result


def test_both_ranks_trained_with_identical_final_weights(planted):
    _, _, r = planted
    assert [x["rank"] for x in r.ranks] == [0, 1]
    assert all(x["size"] == 2 for x in r.ranks)
    assert r.ranks[0]["weights_digest"] == r.ranks[1]["weights_digest"]
    assert all(x["epochs_run"] >= 2 and x["samples_per_s"] > 0 for x in r.ranks)
    assert r.ranks[0]["pid"] != r.ranks[1]["pid"]


def test_deep_model_finds_the_trend_that_rfm_cannot_see(planted):
    _, _, r = planted
    m = r.metrics["models"]
    assert m["deep"]["roc_auc"] > 0.8, m["deep"]
    assert m["deep"]["roc_auc"] > m["lr_rfm"]["roc_auc"] + 0.15, (m["deep"]["roc_auc"], m["lr_rfm"]["roc_auc"])
    assert m["deep"]["n_users"] == m["lr_rfm"]["n_users"] == m["gbt"]["n_users"] > 100
    for key in ("pr_auc", "log_loss", "brier", "precision", "recall", "f1", "precision_top10", "recall_top20",
                "lift_top10", "base_rate"):
        assert key in m["deep"]


def test_calibration_reduces_brier_on_validation(planted):
    _, _, r = planted
    v = r.metrics["validation"]["deep"]
    assert v["brier_calibrated"] < v["brier_raw"]


def test_temporal_split_never_trains_on_the_test_snapshot(planted, spark):
    cfg, built, r = planted
    snaps = r.metrics["snapshots"]
    assert snaps["test"] == ["2026-05-02"] and snaps["validation"] == ["2026-04-04"]
    assert max(snaps["train"]) < min(snaps["validation"]) < min(snaps["test"])
    splits = load_splits(spark, cfg, RUN, built["features_version"])
    assert {str(x[0]) for x in splits["train"].select("snapshot_date").distinct().collect()} == set(snaps["train"])


def test_mlflow_run_registered_version_and_champion(planted):
    cfg, built, r = planted
    c = registry.client(cfg)
    run = c.get_run(r.run_id)
    assert run.data.metrics["deep_test_roc_auc"] == pytest.approx(r.metrics["models"]["deep"]["roc_auc"])
    assert "lr_rfm_test_roc_auc" in run.data.metrics and "gbt_test_pr_auc" in run.data.metrics
    assert run.data.params["features_version"] == str(built["features_version"])
    assert "samples_per_s_rank1" in run.data.metrics
    assert r.model_version == "1" and r.promoted
    assert str(registry.champion(cfg).version) == "1"
    model_dir, version = registry.download_version(cfg)  # artifacts incl. calibrator, verified checksums
    assert version == "1" and (Path(model_dir) / "calibrator.json").is_file()
    saved = json.loads(Path(cfg.path("runs", RUN.isoformat(), "metrics.json")).read_text())
    assert saved["models"]["deep"]["roc_auc"] == r.metrics["models"]["deep"]["roc_auc"]


def test_gate_refuses_a_worse_model_on_the_same_test_snapshot(planted, spark):
    cfg, built, r = planted
    test_df = load_splits(spark, cfg, RUN, built["features_version"])["test"]
    worse = gate(spark, cfg, candidate_metric=0.05, test_df=test_df)
    assert worse["promoted"] is False and worse["champion_version"] == "1"
    assert worse["champion"] == pytest.approx(r.metrics["models"]["deep"][cfg.registry.gate_metric], abs=0.02)
    better = gate(spark, cfg, candidate_metric=worse["champion"] + 0.01, test_df=test_df)
    assert better["promoted"] is True


def test_rerun_resumes_from_the_rank0_checkpoint(planted, spark):
    cfg, built, first = planted
    again = train(spark, cfg, RUN, built["features_version"])
    assert all(x["resumed"] for x in again.ranks)
    assert all(x["epochs_run"] == 0 for x in again.ranks)  # the finished run is not retrained
    assert again.ranks[0]["weights_digest"] == first.ranks[0]["weights_digest"]
    assert again.model_version == "2"
    assert not again.promoted  # equal, not better: the champion stays
    assert str(registry.champion(cfg).version) == "1"
