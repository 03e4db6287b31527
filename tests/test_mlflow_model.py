"""The bundle as an MLflow pyfunc model ("models from code", no pickle): same probabilities as the project's own
scoring path on the same rows, and a bundle with a wrong checksum is refused on load."""

import json

import numpy as np
import pandas as pd
import pytest

from churn_spark.bundle import ModelIntegrityError, load_bundle, save_bundle
from churn_spark.calibration import Calibrator
from churn_spark.feature_spec import NUMERIC_STATIC
from churn_spark.mlflow_model import bundle_dir_of, save_pyfunc
from churn_spark.model import build_model
from churn_spark.predict import raw_probability
from churn_spark.preprocess import FeatureStats


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    stats = FeatureStats(
        channels=["orders", "active_days"],
        n_buckets=4,
        seq_mean=[0.2, 0.3],
        seq_std=[1.0, 1.0],
        static_mean=[1.0] * 6,
        static_std=[1.0] * 6,
        vocab={"country": ["DE"], "channel": ["web"]},
    )
    model = build_model(4, 2, stats.n_static, conv_filters=4, rnn_units=4, dense_units=4)
    d = tmp_path_factory.mktemp("bundle")
    save_bundle(str(d), model, stats, Calibrator("platt", a=1.5, b=-0.2))
    return str(d)


def _rows(n=7):
    rng = np.random.default_rng(0)
    pdf = pd.DataFrame({c: rng.integers(0, 50, n).astype(float) for c in NUMERIC_STATIC})
    pdf["sequence"] = [rng.poisson(1.0, 8).astype(float).tolist() for _ in range(n)]
    pdf["country"], pdf["channel"] = ["DE", "FR", "DE", "DE", "XX", "DE", "DE"][:n], "web"
    return pdf


def test_pyfunc_gives_the_scorers_probabilities_and_verifies_the_bundle(bundle_dir, tmp_path):
    import mlflow.pyfunc

    path = save_pyfunc(bundle_dir, str(tmp_path / "pyfunc"))
    assert (tmp_path / "pyfunc" / "MLmodel").is_file() and not list((tmp_path / "pyfunc").rglob("*.pkl"))
    inner = bundle_dir_of(path)
    assert "artifacts" in inner and (tmp_path / "pyfunc" / inner / "manifest.json").is_file()
    rows = _rows()
    got = mlflow.pyfunc.load_model(path).predict(rows)
    b = load_bundle(bundle_dir)
    raw = raw_probability(b, b.stats.inputs(rows))
    np.testing.assert_allclose(got["raw_score"].to_numpy(), raw, rtol=1e-6)
    np.testing.assert_allclose(got["churn_probability"].to_numpy(), b.calibrator(raw), rtol=1e-6)
    stats = tmp_path / "pyfunc" / inner / "stats.json"
    stats.write_text(json.dumps({**json.loads(stats.read_text()), "clip": 99.0}))  # tampered
    with pytest.raises(ModelIntegrityError, match="checksum of stats.json"):
        mlflow.pyfunc.load_model(path)
