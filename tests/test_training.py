"""Horovod training on Spark (2 real ranks on local[2]) with baselines, calibration, MLflow, gate and resume."""

import json
import zlib
from pathlib import Path

import pytest
from conftest import make_config
from planted import OVERRIDES, RUN, write_planted

from churn_spark import registry
from churn_spark.pipeline import build_sequences
from churn_spark.promotion import gate, validate
from churn_spark.staging import staging_dir
from churn_spark.train import load_splits, train

pytestmark = pytest.mark.slow
SEARCH = "training.search=[{dropout: 0.3, rnn_units: 4, epochs: 3}]"  # one short extra trial, in the shared fixture


@pytest.fixture(scope="module")
def planted(spark, tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp("planted"), *OVERRIDES, SEARCH)
    write_planted(spark, cfg.lake_dir)
    built = build_sequences(spark, cfg, RUN)
    result = train(spark, cfg, RUN, built["features_version"])
    verdict = validate(spark, cfg, RUN, result.model_version)
    return cfg, built, result, verdict


def test_both_ranks_trained_with_identical_final_weights(planted):
    _, _, r, _ = planted
    assert [x["rank"] for x in r.ranks] == [0, 1]
    assert all(x["size"] == 2 for x in r.ranks)
    assert r.ranks[0]["weights_digest"] == r.ranks[1]["weights_digest"]
    assert all(x["epochs_run"] >= 2 and x["samples_per_s"] > 0 for x in r.ranks)
    assert r.ranks[0]["pid"] != r.ranks[1]["pid"]


def test_deep_model_finds_the_trend_that_rfm_cannot_see(planted):
    _, _, r, _ = planted
    m = r.metrics["models"]
    assert m["deep"]["roc_auc"] > 0.8, m["deep"]
    assert m["deep"]["roc_auc"] > m["lr_rfm"]["roc_auc"] + 0.15, (m["deep"]["roc_auc"], m["lr_rfm"]["roc_auc"])
    assert m["deep"]["n_users"] == m["lr_rfm"]["n_users"] == m["gbt"]["n_users"] > 100
    for key in (
        "pr_auc",
        "log_loss",
        "brier",
        "precision",
        "recall",
        "f1",
        "precision_top10",
        "recall_top20",
        "lift_top10",
        "base_rate",
    ):
        assert key in m["deep"]


def test_search_keeps_the_trial_with_the_best_validation_loss(planted):
    """Two trials, each its own Horovod job and MLflow child run; the lower cross-fitted validation log loss wins."""
    import mlflow

    cfg, _, r, _ = planted
    trials = r.metrics["model_selection"]["search"]
    assert [t["trial"] for t in trials] == [0, 1] and trials[1]["overrides"] == {
        "dropout": 0.3,
        "rnn_units": 4,
        "epochs": 3,
    }
    losses = [t["val_log_loss_cv"] for t in trials]
    best = int(losses[1] < losses[0])
    assert [t["chosen"] for t in trials] == [i == best for i in (0, 1)]
    assert r.model_dir == trials[best]["model_dir"]
    assert r.metrics["training"]["history"]  # the chosen trial's history
    registry.client(cfg)
    children = mlflow.search_runs(
        experiment_ids=[registry.experiment_id(cfg)], filter_string=f"tags.mlflow.parentRunId = '{r.run_id}'"
    )
    assert sorted(children["tags.chosen"]) == ["false", "true"] and len(children) == 2
    assert "metrics.val_log_loss_cv" in children and "metrics.roc_auc" not in children  # validation only


def test_blend_decision_is_recorded_and_shipped_as_decided(planted):
    """The blend is chosen on validation (cross-fitted log loss) and the bundle ships what was chosen."""
    from churn_spark.bundle import load_bundle

    _, _, r, _ = planted
    b = r.metrics["model_selection"]["blend"]
    assert b["chosen"] == (b["blend_log_loss_cv"] < b["network_log_loss_cv"])
    assert r.metrics["shipped_model"] == ("blend" if b["chosen"] else "deep")
    assert "blend" in r.metrics["models"] and "roc_auc_gain_vs_lr_rfm" in r.metrics["models"]["blend"]
    assert bool(load_bundle(r.model_dir).calibrator.blend) == b["chosen"]
    assert r.metrics["model_selection"]["btyd"]["rows"] > 0


def test_cross_fitted_calibration_reduces_brier_on_validation(planted):
    """Class weighting skews the raw probabilities; calibration measured on held-out folds must still fix that."""
    _, _, r, _ = planted
    v = r.metrics["validation"]["deep"]
    assert v["brier_calibrated_cv"] < v["brier_raw"]


def test_temporal_split_never_trains_on_the_test_snapshot(planted, spark):
    cfg, built, r, _ = planted
    snaps = r.metrics["snapshots"]
    assert snaps["test"] == ["2026-05-02"] and snaps["validation"] == ["2026-04-02"]
    assert sorted(snaps["train"]) == ["2026-02-03", "2026-03-03"]
    assert max(snaps["train"]) < min(snaps["validation"]) < min(snaps["test"])
    splits = load_splits(spark, cfg, RUN, built["features_version"])
    assert {str(x[0]) for x in splits["train"].select("snapshot_date").distinct().collect()} == set(snaps["train"])


def test_mlflow_run_registered_version_and_champion(planted):
    cfg, built, r, verdict = planted
    c = registry.client(cfg)
    run = c.get_run(r.run_id)
    assert run.data.metrics["deep_test_roc_auc"] == pytest.approx(r.metrics["models"]["deep"]["roc_auc"])
    assert "lr_rfm_test_roc_auc" in run.data.metrics and "gbt_test_pr_auc" in run.data.metrics
    assert run.data.params["features_version"] == str(built["features_version"])
    assert "samples_per_s_rank1" in run.data.metrics
    assert r.model_version == "1" and verdict["promoted"] and verdict["reason"] == "no champion yet"
    assert str(registry.champion(cfg).version) == "1"
    mv = registry.model_version(cfg, "1")
    assert mv.tags["validation_status"] == "PROMOTED" and "no champion yet" in mv.description
    model_dir, version = registry.download_version(cfg)  # artifacts incl. calibrator, verified checksums
    assert version == "1" and (Path(model_dir) / "calibrator.json").is_file()
    from churn_spark.bundle import bundle_digest, verify_bundle

    assert Path(model_dir).name == bundle_digest(model_dir)[:16]  # the local cache is keyed by content
    trained_with = verify_bundle(model_dir)["info"]["training"]
    assert run.data.params["training.learning_rate"] == str(trained_with["learning_rate"])
    saved = json.loads(Path(cfg.path("runs", RUN.isoformat(), "metrics.json")).read_text())
    assert saved["models"]["deep"]["roc_auc"] == r.metrics["models"]["deep"]["roc_auc"]


def _candidate(cfg, scores):
    import pandas as pd

    return pd.read_csv(Path(cfg.path("runs", RUN.isoformat(), "test_scores.csv"))).assign(**scores(pd))


def test_gate_promotes_only_beyond_the_bootstrap_interval(planted, spark):
    cfg, built, r, _ = planted
    test_df = load_splits(spark, cfg, RUN, built["features_version"])["test"]
    contract = cfg.feature_contract

    def crc_noise(d):
        return d["user_id"].astype(str).map(lambda u: zlib.crc32(u.encode()) % 97 / 97.0)

    noise = _candidate(cfg, lambda pd: {"deep": crc_noise, "deep_calibrated": crc_noise})
    worse = gate(spark, cfg, noise, test_df, contract)
    assert worse["promoted"] is False and worse["champion_version"] == "1" and worse["comparable"] is True
    assert worse["interval"][1] < 0  # a random ranking is clearly worse than the champion
    assert worse["champion"] == pytest.approx(r.metrics["models"]["deep"][cfg.registry.gate_metric], abs=0.02)
    same = _candidate(cfg, lambda pd: {})  # the champion's own test scores: improvement exactly 0
    tie = gate(spark, cfg, same, test_df, contract)
    assert tie["interval"] == pytest.approx([0.0, 0.0], abs=1e-6) and tie["promoted"] is False  # a tie: no gain
    lenient = make_config(Path(cfg.work_dir), *OVERRIDES, "registry.gate_margin=-0.01")
    assert gate(spark, lenient, same, test_df, contract)["promoted"] is True  # 0 clears a margin of -0.01
    strict = make_config(Path(cfg.work_dir), *OVERRIDES, "registry.gate_min_relative_change=0.5")
    d = gate(spark, strict, same, test_df, contract)
    assert d["promoted"] is False and d["required"] == pytest.approx(0.5 * d["champion"])
    assert "interval" in d["reason"]


def test_gate_calls_a_champion_of_another_feature_contract_not_comparable(planted, spark):
    cfg, built, _, _ = planted
    test_df = load_splits(spark, cfg, RUN, built["features_version"])["test"]
    other = {**cfg.feature_contract, "bucket_days": 14}
    cand = _candidate(cfg, lambda pd: {})
    d = gate(spark, cfg, cand, test_df, other)
    assert d["comparable"] is False and d["promoted"] is True and "bucket_days: model 7 vs features 14" in d["reason"]
    strict = make_config(Path(cfg.work_dir), *OVERRIDES, "registry.incompatible_champion=refuse")
    d = gate(spark, strict, cand, test_df, other)
    assert d["comparable"] is False and d["promoted"] is False and "refused" in d["reason"]


def test_too_little_data_refuses_to_train(planted, spark):
    from churn_spark.train import TrainingError

    cfg, built, _, _ = planted
    picky = make_config(Path(cfg.work_dir), *OVERRIDES, "training.min_users_per_split=100000")
    with pytest.raises(TrainingError, match="min_users_per_split=100000"):
        train(spark, picky, RUN, built["features_version"])


def test_rerun_resumes_from_the_rank0_checkpoint(planted, spark):
    cfg, built, first, _ = planted
    staged = Path(staging_dir(cfg, RUN, built["features_version"]))
    assert not staged.exists()  # deleted once the model was registered (a rerun after a failure reuses it)
    again = train(spark, cfg, RUN, built["features_version"])
    assert (first.metrics["training"]["staged"], again.metrics["training"]["staged"]) == ("written", "written")
    assert not staged.exists()
    assert all(x["resumed"] and x["restored_optimizer_step"] > 0 for x in again.ranks)
    assert all(x["epochs_run"] == 0 for x in again.ranks)  # the finished run is not retrained
    assert again.ranks[0]["weights_digest"] == first.ranks[0]["weights_digest"]
    assert again.model_version == "2" and str(registry.alias(cfg, registry.CHALLENGER).version) == "2"
    verdict = validate(spark, cfg, RUN)  # the challenger alias by default
    assert verdict["challenger_version"] == "2" and verdict["comparable"] is True
    assert not verdict["promoted"]  # equal, not better: the champion stays
    assert verdict["interval"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert str(registry.champion(cfg).version) == "1"
    assert registry.model_version(cfg, "2").tags["validation_status"] == "REJECTED"


def test_dry_run_validation_records_but_does_not_promote(planted, spark):
    cfg, built, first, _ = planted
    dry = make_config(
        Path(cfg.work_dir), *OVERRIDES, "registry.validation_mode=dry_run", "registry.incompatible_champion=promote"
    )
    champion_before = str(registry.champion(cfg).version)
    verdict = validate(spark, dry, RUN, first.model_version)
    assert verdict["mode"] == "dry_run" and verdict["promoted"] is False
    assert str(registry.champion(cfg).version) == champion_before


def test_registered_version_is_a_real_mlflow_model_with_the_scorers_probabilities(planted, spark, tmp_path):
    """mlflow.pyfunc.load_model and `mlflow models predict` on a registered version give the project scorer's
    probabilities on the same rows."""
    import os
    import subprocess
    import sys

    import mlflow.pyfunc
    import numpy as np

    from churn_spark.predict import score_frame, ship_model

    cfg, built, _, _ = planted
    registry.client(cfg)  # points mlflow at the run's tracking store
    rows = load_splits(spark, cfg, RUN, built["features_version"])["test"].orderBy("user_id").limit(40)
    pdf = rows.toPandas()
    model_dir, _ = registry.download_version(cfg, "1")
    want = score_frame(rows, ship_model(spark, model_dir, cfg.path("tmp", "ship")), ["user_id"]).toPandas()
    want = want.set_index("user_id").loc[pdf["user_id"]]
    uri = f"models:/{cfg.registry.model_name}/1"
    got = mlflow.pyfunc.load_model(uri).predict(pdf)
    np.testing.assert_allclose(got["churn_probability"], want["churn_probability"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["raw_score"], want["raw_probability"], rtol=1e-5, atol=1e-7)
    inp = tmp_path / "rows.json"
    rows = pdf.drop(columns=["label", "snapshot_date", "split"], errors="ignore")
    inp.write_text(json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split"))}))  # MLflow 2 protocol
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "predict",
            "-m",
            uri,
            "-i",
            str(inp),
            "-t",
            "json",
            "--env-manager",
            "local",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": cfg.tracking_uri},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    preds = json.loads(out.stdout[out.stdout.index("{") :])["predictions"]
    np.testing.assert_allclose([p["churn_probability"] for p in preds], want["churn_probability"], rtol=1e-5, atol=1e-7)
