"""Static model inputs: rhythm columns, BG/NBD inputs from a feature row, and bundles written before them."""

import json

import numpy as np
import pandas as pd
import pytest

from churn_spark.btyd import BGNBDParams, expected_purchases, prob_alive
from churn_spark.btyd_inputs import BTYD_INPUTS, btyd_values, rfm_columns
from churn_spark.feature_spec import FEATURE_STATIC, NUMERIC_STATIC
from churn_spark.preprocess import FeatureStats

PARAMS = {"r": 0.3, "alpha": 40.0, "a": 0.7, "b": 2.0}  # days


def _row(**kw):
    base = {c: 0.0 for c in FEATURE_STATIC}
    base.update(country="DE", channel="web", sequence=[0.0] * 2)
    base.update(kw)
    return base


def _stats(**kw):
    numeric = kw.pop("numeric_inputs", FEATURE_STATIC + BTYD_INPUTS)
    return FeatureStats(
        channels=["orders"],
        n_buckets=2,
        seq_mean=[0.0],
        seq_std=[1.0],
        static_mean=[0.0] * len(numeric),
        static_std=[1.0] * len(numeric),
        vocab={"country": ["DE"], "channel": ["web"]},
        numeric_inputs=numeric,
        **kw,
    )


def test_rfm_of_a_feature_row():
    """4 purchase days, the first 100 and the last 10 days before S: 3 repeats, t_x = 90, T = 100."""
    x, t_x, T = rfm_columns([4.0], [100.0], [10.0])
    assert (x[0], t_x[0], T[0]) == (3.0, 90.0, 100.0)


def test_btyd_inputs_follow_the_fitted_model_and_the_horizon():
    p = BGNBDParams(**PARAMS)
    got = btyd_values(PARAMS, 90, [3.0, 0.0], [90.0, 0.0], [100.0, 30.0])
    np.testing.assert_allclose(got[:, 0], prob_alive(p, [3.0, 0.0], [90.0, 0.0], [100.0, 30.0]))
    np.testing.assert_allclose(got[:, 1], expected_purchases(p, 90, [3.0, 0.0], [90.0, 0.0], [100.0, 30.0]))
    assert got[1, 0] == 1.0  # no repeat yet: alive by the model's assumption
    # a long silence after a fast rhythm lowers P(alive); a longer horizon raises the expected purchases
    silent = btyd_values(PARAMS, 90, [3.0], [10.0], [100.0])
    assert silent[0, 0] < got[0, 0]
    assert btyd_values(PARAMS, 180, [3.0], [90.0], [100.0])[0, 1] > got[0, 1]


def test_without_a_fit_the_btyd_inputs_are_fixed():
    np.testing.assert_array_equal(btyd_values(None, 90, [0.0, 5.0], [0.0, 3.0], [5.0, 9.0]), [[1, 0], [1, 0]])


def test_static_tensor_carries_rhythm_and_btyd_inputs():
    stats = _stats(btyd_fit={"params": PARAMS}, horizon_days=90)
    pdf = pd.DataFrame([_row(purchase_days=4.0, days_since_first_purchase=100.0, days_since_last_order=10.0)])
    raw = stats.numeric_values(pdf)
    assert raw.shape == (1, len(FEATURE_STATIC) + 2)
    expected = btyd_values(PARAMS, 90, [3.0], [90.0], [100.0])[0]
    np.testing.assert_allclose(raw[0, -2:], expected)
    assert stats.static_tensor(pdf).shape == (1, stats.n_static)
    assert stats.static_names[: len(NUMERIC_STATIC)] == NUMERIC_STATIC  # reasons index the RFM statics first


def test_stats_written_before_the_rhythm_features_keep_their_six_inputs():
    stats = _stats(numeric_inputs=list(NUMERIC_STATIC))
    old = json.loads(stats.to_json())
    for key in ("numeric_inputs", "btyd_fit", "horizon_days"):
        old.pop(key)
    restored = FeatureStats.from_json(json.dumps(old))
    assert restored.numeric_inputs == NUMERIC_STATIC
    pdf = pd.DataFrame([{c: 1.0 for c in NUMERIC_STATIC} | {"country": "DE", "channel": "web"}])
    assert restored.static_tensor(pdf).shape == (1, len(NUMERIC_STATIC) + 4)


@pytest.mark.parametrize("missing", ["purchase_days", "days_since_first_purchase"])
def test_a_row_without_rhythm_columns_is_refused(missing):
    stats = _stats(btyd_fit={"params": PARAMS}, horizon_days=90)
    pdf = pd.DataFrame([_row()]).drop(columns=[missing])
    with pytest.raises(KeyError):
        stats.numeric_values(pdf)


def test_training_statistics_equal_numpy_on_hand_made_rows(spark):
    """Channel moments of both sequences (flat, time-major: position i is channel i % C; summed per Arrow batch, the
    batches added by Spark) and the static moments equal a direct numpy computation over all rows at once;
    negatives count as 0 like the model's input."""
    from churn_spark.preprocess import compute_stats

    rows = [
        _row(sequence=[1.0, 0.0, 3.0, 2.0, 0.0, 7.0], long_sequence=[4.0, 1.0, 0.0, 0.0], lifetime_orders=3.0),
        _row(sequence=[0.0, 5.0, 0.0, 0.0, -1.0, 0.0], long_sequence=[2.0, 2.0, 9.0, 0.0], lifetime_orders=0.0),
        _row(sequence=[2.0, 2.0, 2.0, 2.0, 2.0, 2.0], long_sequence=[0.0, 0.0, 0.0, 0.0], lifetime_orders=12.0),
    ]
    pdf = pd.DataFrame(rows)
    rows_df = spark.createDataFrame(pdf).repartition(3)  # several batches: their partial sums must add up
    stats = compute_stats(rows_df, ["a", "b"], 3, 7, long_buckets=2, long_bucket_days=30)

    def moments(column):
        x = np.log1p(np.maximum(np.stack(pdf[column].to_list()), 0.0)).reshape(len(pdf), -1, 2)
        return x.mean(axis=(0, 1)), x.std(axis=(0, 1))

    for column, mean, std in (
        ("sequence", stats.seq_mean, stats.seq_std),
        ("long_sequence", stats.long_mean, stats.long_std),
    ):
        want_mean, want_std = moments(column)
        np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
        np.testing.assert_allclose(std, want_std, rtol=1e-9)
    i = FEATURE_STATIC.index("lifetime_orders")
    np.testing.assert_allclose(stats.static_mean[i], np.log1p(pdf["lifetime_orders"]).mean(), rtol=1e-12)
    np.testing.assert_allclose(stats.static_std[i], np.log1p(pdf["lifetime_orders"]).std(ddof=0), rtol=1e-9)
    assert stats.static_std[FEATURE_STATIC.index("gap_std_days")] == 1.0  # constant in training: not scaled


def test_training_statistics_of_no_rows_are_neutral(spark):
    """An empty training frame (a bug upstream, refused earlier by check_enough_data) still gives mean 0 and std 1,
    never a division by zero."""
    from churn_spark.preprocess import compute_stats

    empty = spark.createDataFrame(pd.DataFrame([_row(sequence=[0.0] * 6, long_sequence=[0.0] * 4)])).limit(0)
    stats = compute_stats(empty, ["a", "b"], 3, 7, long_buckets=2, long_bucket_days=30)
    assert stats.seq_mean == [0.0, 0.0] and stats.seq_std == [1.0, 1.0]
    assert stats.long_mean == [0.0, 0.0] and stats.long_std == [1.0, 1.0]
