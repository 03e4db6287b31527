"""Drift (PSI) behind the report's and the drift table's flags: the arithmetic checked by hand on hand-made counts,
and the Spark aggregation on a tiny hand-made feature table."""

import datetime as dt
import math

import pandas as pd
import pytest

from churn_spark.drift import DriftSkipped, channel_psi, distinct_edges, flagged, psi, psi_table


# ---- drift arithmetic ----------------------------------------------------------------------------------------
def test_psi_identical_is_zero():
    assert psi([10, 20, 30, 40], [10, 20, 30, 40]) == 0.0
    assert psi([10, 20, 30, 40], [1, 2, 3, 4]) == pytest.approx(0.0, abs=1e-12)  # shares, not counts


def test_psi_hand_computed():
    # e = (0.5, 0.5), a = (0.25, 0.75): (0.25-0.5)*ln(0.5) + (0.75-0.5)*ln(1.5) = 0.25*ln 2 + 0.25*ln 1.5
    assert psi([50, 50], [25, 75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi([50, 50], [25, 75]) == pytest.approx(0.274653, abs=1e-6)
    # an empty actual bin is floored at eps, so PSI stays finite: (1e-4 - 0.5) ln(1e-4/0.5) + (1 - 0.5) ln(2)
    assert psi([1, 1], [0, 4]) == pytest.approx((1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(1 / 0.5))
    assert math.isnan(psi([0, 0], [1, 1]))
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3])


def test_distinct_edges_collapse_ties():
    assert distinct_edges([0.0, 0.0, 0.0, 1.5, 1.5, 2.0, float("nan")]) == [0.0, 1.5, 2.0]
    assert distinct_edges([]) == []


def test_psi_table_from_counts():
    counts = {
        ("expected", 0, 0): 50,
        ("expected", 0, 1): 50,
        ("actual", 0, 0): 25,
        ("actual", 0, 1): 75,
        ("expected", 1, 0): 10,
        ("actual", 1, 0): 4,
    }
    t = psi_table(["orders", "views"], [[1.0], []], counts)
    assert t["channel"].tolist() == ["orders", "views"] and t["n_bins"].tolist() == [2, 1]
    assert t["n_expected"].tolist() == [100, 10] and t["n_actual"].tolist() == [100, 4]
    assert t["psi"].iloc[0] == pytest.approx(0.274653, abs=1e-6) and t["psi"].iloc[1] == 0.0
    assert flagged(t, 0.2) == ["orders"] and flagged(t, 0.3) == []
    with pytest.raises(ValueError):
        psi_table(["orders"], [[1.0], [2.0]], counts)


def test_flagged_ignores_nan_and_equal():
    t = pd.DataFrame({"channel": ["a", "b", "c"], "psi": [float("nan"), 0.2, 0.2001]})
    assert flagged(t, 0.2) == ["c"]


# ---- drift on Spark (tiny hand-made feature table) --------------------------------------------------------
def test_channel_psi_on_spark(spark):
    train, score = dt.date(2026, 1, 5), dt.date(2026, 2, 2)
    # C = 2 channels, T = 2 buckets, time-major: [t0c0, t0c1, t1c0, t1c1]
    # training: channel 0 total 0 (45 users) or 3 (55) -> deciles 0 and ln 4: edges [0, ln 4], bins [0], (0, ln4], >ln4
    rows = [(train, [0.0, 0.5, 0.0, 0.5])] * 45 + [(train, [1.0, 0.5, 2.0, 0.5])] * 55
    # score: 20 zeros, 10 threes (one null element counts as 0), 10 nines; channel 1 always totals 1 as in training
    rows += [(score, [0.0, 0.5, 0.0, 0.5])] * 20 + [(score, [None, 0.5, 3.0, 0.5])] * 10
    rows += [(score, [4.0, 0.5, 5.0, 0.5])] * 10
    rows += [(dt.date(2025, 1, 1), [99.0, 0.0, 99.0, 0.0])] * 5  # another snapshot: ignored
    df = spark.createDataFrame(rows, "snapshot_date date, sequence array<double>")
    got = channel_psi(df, [train], score, ["orders", "views"], n_buckets=2)
    assert got["channel"].tolist() == ["orders", "views"]
    assert got["n_expected"].tolist() == [100, 100] and got["n_actual"].tolist() == [40, 40]
    assert got["n_bins"].tolist() == [3, 2]
    assert got["psi"].iloc[0] == pytest.approx(psi([45, 55, 0], [20, 10, 10]), rel=1e-12)
    assert got["psi"].iloc[1] == 0.0
    with pytest.raises(DriftSkipped, match="sequence length"):
        channel_psi(df, [train], score, ["orders"], n_buckets=2)  # 4 elements != 2 buckets * 1 channel
    with pytest.raises(DriftSkipped, match="score snapshot 2026-03-02"):
        channel_psi(df, [train], dt.date(2026, 3, 2), ["orders", "views"], n_buckets=2)
