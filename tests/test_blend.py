"""The blend of the network with lr_rfm: chosen on validation only when it wins there, and shippable exactly."""

import numpy as np
import pandas as pd
import pytest

from churn_spark.blend import Blend, LinearRFM, choose_blend, log_loss
from churn_spark.calibration import Calibrator
from churn_spark.feature_spec import NUMERIC_STATIC, aggregate_spec, channels_for

N = 4000


def _signals(seed=0):
    """Churn driven by two independent signals; the "network" sees only the first, "lr" only the second."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=N), rng.normal(size=N)
    y = (rng.random(N) < 1 / (1 + np.exp(-(1.5 * a + 1.0 * b)))).astype(float)
    p_net = 1 / (1 + np.exp(-(1.2 * a)))
    return rng, a, b, y, p_net


def test_blend_is_not_chosen_when_the_baseline_adds_nothing():
    rng, _, _, y, p_net = _signals()
    p_noise = rng.uniform(0.05, 0.95, N)  # a "baseline" unrelated to churn
    chosen, evidence, _ = choose_blend(p_net, p_noise, y, calibration="platt", folds=5, seed=0)
    assert not chosen
    assert evidence["blend_log_loss_cv"] >= evidence["network_log_loss_cv"]


def test_blend_is_chosen_when_the_baseline_carries_other_signal():
    _, _, b, y, p_net = _signals(2)
    p_lr = 1 / (1 + np.exp(-b))
    chosen, evidence, (intercept, weights) = choose_blend(p_net, p_lr, y, calibration="isotonic", folds=5, seed=0)
    assert chosen
    assert evidence["blend_log_loss_cv"] < evidence["network_log_loss_cv"] - 0.02
    assert weights[0] > 0 and weights[1] > 0  # both inputs raise the churn probability


def test_blend_is_not_chosen_when_it_would_turn_the_network_around():
    """A blend that wins only by inverting the network would make the network's reason codes false: refused."""
    _, a, b, y, _ = _signals(3)
    inverted = 1 / (1 + np.exp(1.2 * a))
    chosen, evidence, (_, weights) = choose_blend(
        inverted, 1 / (1 + np.exp(-b)), y, calibration="isotonic", folds=5, seed=0
    )
    assert weights[0] < 0 and evidence["blend_log_loss_cv"] < evidence["network_log_loss_cv"]
    assert not chosen


def _rows(n, seed=0):
    rng = np.random.default_rng(seed)
    channels = channels_for(["orders"])
    T = 4
    pdf = pd.DataFrame({c: rng.integers(0, 60, n).astype(float) for c in NUMERIC_STATIC})
    pdf["sequence"] = [list(rng.poisson(0.7, T * len(channels)).astype(float)) for _ in range(n)]
    pdf["label"] = (rng.random(n) < 1 / (1 + np.exp(-(pdf["days_since_last_order"] - 30) / 10))).astype(float)
    pdf["user_id"] = [f"u{i}" for i in range(n)]
    return pdf, channels, T


def test_numpy_lr_rfm_reproduces_the_spark_pipeline(spark):
    """The shipped blend recomputes lr_rfm in the scoring UDF: it must equal Spark's probability for every row."""
    from churn_spark.baselines import fit_baselines, predict_baseline
    from churn_spark.config import TrainingConf

    pdf, channels, T = _rows(300)
    df = spark.createDataFrame(pdf)
    t = TrainingConf(gbt_max_iter=2)
    models = fit_baselines(df, channels, T, t, recent_buckets=2)
    want = predict_baseline(models["lr_rfm"], df, channels, T, recent_buckets=2).toPandas().sort_values("user_id")
    numpy_lr = LinearRFM.from_pipeline(models["lr_rfm"], channels, T, 2)
    assert [name for name, _, _ in aggregate_spec(channels, T, 2)][: len(NUMERIC_STATIC)] == [
        f"log_{c}" for c in NUMERIC_STATIC
    ]
    got = numpy_lr.probability(pdf.set_index("user_id").loc[want["user_id"]].reset_index())
    np.testing.assert_allclose(got, want["probability"].to_numpy(), rtol=1e-9, atol=1e-12)


def test_a_bundle_calibrator_with_a_blend_scores_feature_rows():
    pdf, channels, T = _rows(50, seed=3)
    k = len(aggregate_spec(channels, T, 2))
    lr = LinearRFM(channels, T, 2, [0.0] * k, [1.0] * k, [0.1] * k, -1.0)
    blend = Blend(0.2, [0.8, 0.5], lr)
    cal = Calibrator.from_dict(Calibrator(blend=blend.to_dict()).to_dict())  # JSON round trip, as in a bundle
    p_net = np.linspace(0.05, 0.95, 50)
    score = cal.shipped_score(p_net, pdf)
    np.testing.assert_allclose(score, blend.combine(p_net, lr.probability(pdf)))
    np.testing.assert_array_equal(cal(score), score)  # the blend is its own calibration
    assert Calibrator().shipped_score(p_net, pdf) is p_net  # no blend: the network's output


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_log_loss_is_finite_at_the_edges(p):
    assert np.isfinite(log_loss(np.array([0.0, 1.0]), np.array([p, p])))
