"""Realised-outcome monitoring and the drift table: pure logic on hand-made data (no Spark)."""

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest

from churn_spark import monitoring as mon
from churn_spark.drift_table import bin_index, score_edges, score_psi


def test_deciles_rank_by_score_and_ties_share_a_decile():
    s = np.arange(20, dtype=float)  # 0 lowest .. 19 highest
    d = mon.score_deciles(s)
    assert d.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10]
    tied = mon.score_deciles(np.array([5.0, 5.0, 5.0, 1.0]))
    assert tied.tolist() == [10, 10, 10, 3]  # 3 users share the top: the 4th has 75 % above it
    rev = mon.score_deciles(s[::-1])
    assert rev.tolist() == d[::-1].tolist()  # order of rows never matters


def test_calibration_by_decile_and_error():
    y = np.array([0, 0, 1, 1], float)
    p = np.array([0.1, 0.3, 0.6, 0.8])
    cal = mon.calibration_by_decile(y, p, p, n=2)
    assert cal == [
        {"decile": 1, "users": 2, "mean_predicted": pytest.approx(0.2), "realised_rate": 0.0},
        {"decile": 2, "users": 2, "mean_predicted": pytest.approx(0.7), "realised_rate": 1.0},
    ]
    assert mon.calibration_error(cal) == pytest.approx((2 * 0.2 + 2 * 0.3) / 4)
    assert math.isnan(mon.calibration_error([]))


def test_high_tier_precision_and_recall():
    y = [1, 1, 0, 1, 0, 0]
    tiers = ["high", "high", "high", "low", "medium", "low"]
    assert mon.tier_precision_recall(y, tiers) == (3, pytest.approx(2 / 3), pytest.approx(2 / 3))
    n, prec, rec = mon.tier_precision_recall([0, 0], ["low", "low"])
    assert n == 0 and math.isnan(prec) and math.isnan(rec)


@pytest.mark.parametrize(
    "realised,test,margin,flag",
    [
        (0.70, 0.80, 0.05, True),
        (0.76, 0.80, 0.05, False),
        (0.75, 0.80, 0.05, False),  # exactly at the margin: no
        (float("nan"), 0.8, 0.05, False),
        (0.5, None, 0.05, False),
        (0.79, 0.80, 0.0, True),
    ],
)
def test_auc_flag(realised, test, margin, flag):
    assert mon.auc_below_test(realised, test, margin) is flag


def _frame():
    # 8 users of model "3": 4 on the action list (2 contacted, 2 control), 4 not on it
    return pd.DataFrame(
        {
            "model_version": ["3"] * 8,
            "label": [1, 1, 0, 1, 0, 0, 1, 0],
            "churn_probability": [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1],
            "raw_score": [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
            "risk_tier": ["high", "high", "medium", "medium", "low", "low", "low", "low"],
            "control": [False, True, False, True, None, None, None, None],
        }
    )


def test_performance_rows_groups_metrics_and_uplift():
    rows = {r["group"]: r for r in mon.performance_rows(_frame(), {"3": 0.95}, 0.05)}
    assert set(rows) == {"all", "contacted", "control", "untreated"}
    a = rows["all"]
    assert (a["users"], a["churners"], a["realised_churn_rate"]) == (8, 4, 0.5)
    # positives at ranks 1, 2, 4, 7 of 8: 4 + 4 + 3 + 1 = 12 of 16 (positive, negative) pairs ordered right
    assert a["roc_auc"] == pytest.approx(12 / 16)
    assert a["high_tier_users"] == 2 and a["precision_high"] == 1.0 and a["recall_high"] == 0.5
    assert a["test_roc_auc"] == 0.95 and a["auc_below_test"] is True and a["uplift"] is None
    assert len(a["calibration"]) == 8 and a["calibration"][-1]["decile"] == 10
    assert rows["contacted"]["users"] == 2 and rows["contacted"]["realised_churn_rate"] == 0.5  # users 1, 3
    assert rows["control"]["realised_churn_rate"] == 1.0  # users 2, 4
    assert rows["contacted"]["uplift"] == pytest.approx(0.5)  # control 100 % - contacted 50 %
    assert rows["untreated"]["users"] == 6 and rows["untreated"]["churners"] == 3


def test_performance_rows_without_actions_has_only_all_and_unknown_test_auc_never_flags():
    f = _frame().drop(columns="control")
    rows = mon.performance_rows(f, {}, 0.05)
    assert [r["group"] for r in rows] == ["all"]
    assert rows[0]["test_roc_auc"] is None and rows[0]["auc_below_test"] is False


def test_matured_snapshots():
    run = dt.date(2026, 11, 2)
    snaps = [run, run - dt.timedelta(days=29), run - dt.timedelta(days=30), run - dt.timedelta(days=200)]
    assert mon.matured(snaps, run, 30, 182) == [run - dt.timedelta(days=30)]


def test_test_roc_auc_by_version(tmp_path):
    (tmp_path / "2026-10-05").mkdir()
    (tmp_path / "2026-10-05" / "metrics.json").write_text(
        json.dumps({"model_version": "1", "models": {"deep": {"roc_auc": 0.81}}})
    )
    (tmp_path / "2026-10-12").mkdir()
    (tmp_path / "2026-10-12" / "metrics.json").write_text(
        json.dumps(
            {
                "model_version": "2",
                "models": {"deep": {"roc_auc": 0.77}},
                "scored_by": {"model_version": "0", "test_metrics": {"roc_auc": 0.7}},
            }
        )
    )
    assert mon.test_roc_auc_by_version(str(tmp_path)) == {"0": 0.7, "1": 0.81, "2": 0.77}


def test_score_psi_bins_like_the_channel_drift():
    ref = np.arange(1, 11, dtype=float)  # 1..10
    edges = score_edges(ref)
    assert len(edges) == 9
    assert bin_index([edges[0], edges[0] + 1e-9], edges).tolist() == [0, 1]  # on an edge: the lower bin
    same = {int(b): int(n) for b, n in zip(*np.unique(bin_index(ref, edges), return_counts=True))}
    value, n_e, n_a, k = score_psi(ref, same, edges)
    assert value == pytest.approx(0.0) and (n_e, n_a, k) == (10, 10, 10)
    shifted, *_ = score_psi(ref, {9: 10}, edges)  # everybody in the top bin
    e = np.full(10, 0.1)
    a = np.maximum(np.array([0] * 9 + [1.0]), 1e-4)
    assert shifted == pytest.approx(float(np.sum((a - e) * np.log(a / e))))
