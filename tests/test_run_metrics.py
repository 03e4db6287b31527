"""metrics.json: one pydantic schema for the writer (training, validation) and the reader (the report)."""

import json

import numpy as np
import pytest

from churn_spark.run_metrics import MetricsFileError, read_metrics, write_metrics


def _metrics():
    return {
        "run_date": "2026-11-02",
        "features_version": np.int64(4),
        "model_name": "churn-spark-cnn-rnn",
        "snapshots": {"test": ["2026-10-03"], "train": ["2026-08-04", "2026-07-07"]},
        "models": {"deep": {"roc_auc": np.float64(0.81), "n_users": np.int64(900), "lift_top10": float("nan")}},
        "validation": {"deep": {"brier_raw": 0.2, "brier_calibrated_cv": 0.19, "threshold": 0.4}},
        "tiers": {"mode": "share", "test": {"high": {"users": 90, "churn_rate": 0.7}}},
        "training": {"ranks": [{"rank": 0, "host": "h", "samples_per_s": np.float32(120.5)}], "epochs": 3},
        "model_version": 7,
    }


def test_roundtrip_is_strict_json_with_python_values(tmp_path):
    path = tmp_path / "metrics.json"
    written = write_metrics(path, _metrics())
    text = path.read_text()
    assert "NaN" not in text and json.loads(text) == written == read_metrics(path)
    assert written["model_version"] == "7" and written["models"]["deep"]["n_users"] == 900
    assert written["models"]["deep"]["lift_top10"] is None and written["gate"] is None
    assert written["snapshots"]["train"] == ["2026-08-04", "2026-07-07"]


def test_the_verdict_keeps_its_extra_keys(tmp_path):
    path = tmp_path / "metrics.json"
    m = {**_metrics(), "gate": {"promoted": True, "status": "PROMOTED", "interval": (0.01, 0.05), "rows": 800}}
    written = write_metrics(path, m)
    assert written["gate"]["status"] == "PROMOTED" and written["gate"]["interval"] == [0.01, 0.05]


@pytest.mark.parametrize(
    "change,key",
    [
        ({"run_date": "yesterday"}, "run_date"),
        ({"models": {"deep": {"roc_auc": "high"}}}, "roc_auc"),
        ({"unknown_section": 1}, "unknown_section"),
        ({"training": {"ranks": [{"host": "h"}]}}, "rank"),
    ],
)
def test_a_file_that_does_not_match_names_the_file_and_key(tmp_path, change, key):
    path = tmp_path / "metrics.json"
    with pytest.raises(MetricsFileError, match=key):
        write_metrics(path, {**_metrics(), **change})
    assert not path.exists()  # nothing half-written
    path.write_text(json.dumps({**json.loads(json.dumps(_metrics(), default=lambda o: o.item())), **change}))
    with pytest.raises(MetricsFileError) as e:
        read_metrics(path)
    assert str(path) in str(e.value) and key in str(e.value)
