"""Fast unit tests (no Spark job, no training) for the logic that decides ranks, tiers, metrics, calibration quality,
promotion, data sufficiency and model/feature compatibility -- each on hand-made inputs."""

import numpy as np
import pandas as pd
import pytest

from churn_spark.calibration import Calibrator, cross_fitted
from churn_spark.config import load_config
from churn_spark.feature_spec import contract_differences, feature_contract, recent_buckets
from churn_spark.metrics import classification_report, paired_bootstrap, top_share
from churn_spark.preprocess import FeatureStats, _safe_std
from churn_spark.tiers import assign_tiers, realised_by_tier, share_above, share_bounds
from churn_spark.train import SPLITS, TrainingError, check_enough_data, weights_key


# ---- ranking metrics do not depend on row order; they use the raw score ------------------------------------
def test_top_share_counts_ties_by_expected_share_whatever_the_row_order():
    y = np.array([1, 0, 0, 1, 1, 0, 0, 0, 0, 0], float)
    s = np.array(
        [0.9, 0.8, 0.8, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    )  # 3 users tie for places 2-4; the top 20% is 2 users
    p, r = top_share(y, s, 0.2)
    assert p == pytest.approx((1 + 1 / 3) / 2) and r == pytest.approx((1 + 1 / 3) / 3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        i = rng.permutation(len(y))
        assert top_share(y[i], s[i], 0.2) == pytest.approx((p, r))


def test_report_ranks_on_raw_score_and_measures_probabilities_calibrated():
    y = np.array([1, 1, 0, 0, 1, 0], float)
    raw = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    plateau = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5])  # an isotonic plateau: every user equal after calibration
    m = classification_report(y, plateau, 0.5, score=raw)
    assert m["roc_auc"] == pytest.approx(7 / 9)  # from the raw score, not 0.5 from the plateau
    assert m["brier"] == pytest.approx(0.25) and m["log_loss"] == pytest.approx(np.log(2))
    shuffled = np.random.default_rng(1).permutation(6)
    assert classification_report(y[shuffled], plateau[shuffled], 0.5, score=raw[shuffled]) == pytest.approx(m)


# ---- calibration quality is measured on rows the calibrator did not see ---------------------------------------
def test_cross_fitted_calibration_can_be_worse_than_raw():
    rng = np.random.default_rng(3)
    p = rng.random(200)
    y = (rng.random(200) < 0.5).astype(float)  # scores carry no information
    in_sample = np.mean((Calibrator.fit("isotonic", p, y)(p) - y) ** 2)
    cv = np.mean((cross_fitted("isotonic", p, y, 5) - y) ** 2)
    assert in_sample < 0.25 < cv  # on its own data isotonic "improves" noise; cross-fitted it does not


# ---- tiers ---------------------------------------------------------------------------------------------------
def test_share_tiers_follow_the_shares_and_ties_share_a_tier():
    s = np.arange(100, 0, -1, dtype=float)  # 100 distinct scores, best first
    t = assign_tiers("share", s, s / 100, {"high": 0.1, "medium": 0.2}, {})
    assert (t[:10] == "high").all() and (t[10:30] == "medium").all() and (t[30:] == "low").all()
    s[9:12] = s[9]  # users 10-12 tie at the high boundary: all high
    t = assign_tiers("share", s, s / 100, {"high": 0.1, "medium": 0.2}, {})
    assert (t[9:12] == "high").all() and list(share_above(np.array([3.0, 3.0, 1.0]))) == [0, 0, pytest.approx(2 / 3)]


def test_share_tiers_split_a_high_base_rate_population_where_cutoffs_do_not():
    p = np.linspace(0.8, 0.99, 1000)  # a shop where almost everybody lapses
    by_cutoff = assign_tiers("probability", p, p, {}, {"high": 0.5, "medium": 0.25})
    by_share = assign_tiers("share", p, p, {"high": 0.1, "medium": 0.2}, {})
    assert (by_cutoff == "high").mean() == 1.0
    assert (by_share == "high").mean() == pytest.approx(0.1) and (by_share == "medium").mean() == pytest.approx(0.2)


def test_tier_shares_must_not_exceed_one_and_realised_rates_are_per_tier():
    assert share_bounds({"high": 0.1, "medium": 0.2}) == [("high", 0.1), ("medium", pytest.approx(0.3))]
    with pytest.raises(ValueError):
        share_bounds({"high": 0.6, "medium": 0.5})
    r = realised_by_tier(
        np.array(["high", "high", "low"], object), np.array([1.0, 0.0, 0.0]), np.array([0.9, 0.7, 0.1])
    )
    assert r == {
        "high": {"users": 2, "churn_rate": 0.5, "mean_probability": pytest.approx(0.8)},
        "low": {"users": 1, "churn_rate": 0.0, "mean_probability": pytest.approx(0.1)},
    }


# ---- the gate: improvement larger than noise -------------------------------------------------------------------
def _sample(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    good = np.clip(0.3 + 0.5 * (y - 0.3) + rng.normal(0, 0.15, n), 0.01, 0.99)
    weak = np.clip(0.3 + 0.1 * (y - 0.3) + rng.normal(0, 0.15, n), 0.01, 0.99)
    return y, good, weak


def test_paired_bootstrap_promotes_a_clearly_better_model_only():
    y, good, weak = _sample()
    obs, lo, hi = paired_bootstrap("pr_auc", y, good, good, weak, weak, 100, 0.95)
    assert lo > 0.05 and lo <= obs <= hi
    obs, lo, hi = paired_bootstrap("pr_auc", y, good, good, good, good, 100, 0.95)
    assert obs == 0 and lo == 0 and hi == 0  # identical models: never promoted with margin 0
    y11, g11, w11 = _sample(n=11, seed=5)  # a tiny test set: the interval spans zero whatever the point estimate
    obs, lo, hi = paired_bootstrap("pr_auc", y11, g11, g11, w11, w11, 200, 0.95)
    assert lo <= 0.0 < hi


def test_gain_over_the_linear_baseline_with_its_interval(tmp_path):
    """Each model's ROC-AUC gain over lr_rfm on the same test rows, with an interval that says whether it is real."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from churn_spark.config import load_config
    from churn_spark.evaluation import gain_over_baseline

    y, good, weak = _sample()
    test = pd.DataFrame({"deep": good, "deep_calibrated": good, "gbt": weak, "gbt_calibrated": weak})
    test["lr_rfm"] = test["lr_rfm_calibrated"] = weak
    out = gain_over_baseline(test, y, ["deep", "gbt"], load_config(None, [f"work_dir={tmp_path}"]))
    d = out["deep"]
    assert d["roc_auc_gain_vs_lr_rfm"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, weak))
    assert 0 < d["roc_auc_gain_vs_lr_rfm_lo"] <= d["roc_auc_gain_vs_lr_rfm"] <= d["roc_auc_gain_vs_lr_rfm_hi"]
    g = out["gbt"]  # the same scores as the baseline: no gain, and an interval that cannot claim one
    assert g["roc_auc_gain_vs_lr_rfm"] == g["roc_auc_gain_vs_lr_rfm_lo"] == g["roc_auc_gain_vs_lr_rfm_hi"] == 0


def test_paired_bootstrap_orients_lower_is_better_metrics():
    y, good, weak = _sample()
    obs, lo, _ = paired_bootstrap("log_loss", y, good, good, weak, weak, 50, 0.9)
    assert obs > 0 and lo > 0  # positive = candidate better, also for log loss


# ---- too little data -------------------------------------------------------------------------------------------
def test_too_little_labelled_data_is_a_clear_refusal():
    t = load_config().training
    ok = {s: {"users": 500, "positives": 100} for s in SPLITS}
    check_enough_data(ok, t)
    tiny = {**ok, "test": {"users": 11, "positives": 4}}
    with pytest.raises(TrainingError, match="test has 11 labelled users < training.min_users_per_split"):
        check_enough_data(tiny, t)
    no_neg = {**ok, "validation": {"users": 500, "positives": 495}}
    with pytest.raises(TrainingError, match="validation has 5 non-churners"):
        check_enough_data(no_neg, t)


def test_checkpoints_are_keyed_by_the_settings_the_weights_depend_on():
    t = load_config().training.model_dump()
    assert weights_key(t) == weights_key({**t, "timeout_s": 99, "gbt_max_iter": 3})
    assert weights_key(t) != weights_key({**t, "learning_rate": 0.1})


# ---- inputs the model never saw --------------------------------------------------------------------------------
def _stats(**kw):
    base = dict(
        channels=["orders", "active_days"],
        n_buckets=2,
        seq_mean=[0.5, 0.5],
        seq_std=[_safe_std(0.0), 1.0],
        static_mean=[0.0] * 6,
        static_std=[1.0] * 6,
        vocab={"country": ["DE", "FR"], "channel": ["web"]},
    )
    return FeatureStats(**{**base, **kw})


def test_constant_training_channel_and_extreme_values_stay_bounded():
    assert _safe_std(0.0) == 1.0 and _safe_std(1e-9) == 1.0 and _safe_std(0.3) == 0.3
    st = _stats(clip=5.0)
    x = st.sequence_tensor([[1e9, 1e9, 0.0, 0.0]])
    assert x.max() == pytest.approx(5.0) and np.isfinite(x).all()


def test_unknown_category_uses_the_other_column_and_training_can_flag_rows_as_other():
    st = _stats()
    pdf = pd.DataFrame(
        {
            "tenure_days": [1.0, 1.0],
            "days_since_last_order": [1.0, 1.0],
            "days_since_last_event": [1.0, 1.0],
            "lifetime_orders": [1.0, 1.0],
            "lifetime_spend": [1.0, 1.0],
            "mean_order_value": [1.0, 1.0],
            "country": ["DE", "Atlantis"],
            "channel": ["web", "web"],
        }
    )
    names = st.static_names
    x = st.static_tensor(pdf)
    assert x[1, names.index("country=other")] == 1 and x[0, names.index("country=DE")] == 1
    x = st.static_tensor(pdf, as_other=np.array([True, False]))
    assert x[0, names.index("country=other")] == 1 and x[0, names.index("channel=other")] == 1
    assert x[0, names.index("country=DE")] == 0


# ---- model / feature compatibility and one definition of "recent" ----------------------------------------------
def test_contract_differences_name_what_differs():
    a = feature_contract(["orders", "active_days"], 26, 7)
    assert contract_differences(a, dict(a)) == []
    diffs = contract_differences(a, feature_contract(["orders", "active_days"], 26, 14))
    assert diffs == ["bucket_days: model 7 vs features 14"]
    assert _stats(bucket_days=7).contract()["n_buckets"] == 2


def test_recent_window_has_one_definition_from_config():
    cfg = load_config(overrides=["sequence.recent_days=14", "sequence.bucket_days=7"])
    assert cfg.recent_buckets == 2 == recent_buckets(26, 7, 14)
    assert recent_buckets(4, 7, 365) == 3 and recent_buckets(1, 7, 28) == 1
