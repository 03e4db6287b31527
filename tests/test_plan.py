"""The snapshot plan: label windows of train, validation and test never overlap across splits. Pure Python."""

import datetime as dt

import pytest

from churn_spark.feature_spec import check_plan, describe_plan, label_window, snapshot_plan

RUN = dt.date(2026, 6, 1)


def _windows(plan, horizon, split):
    return [label_window(s, horizon) for s, sp in plan.items() if sp == split]


def _overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@pytest.mark.parametrize("horizon,step,n", [(30, 28, 6), (30, 7, 6), (90, 28, 6), (7, 7, 3), (90, 7, 10), (1, 1, 5)])
def test_label_windows_are_disjoint_across_splits(horizon, step, n):
    plan = snapshot_plan(RUN, horizon, step, n)
    assert sorted(plan.values()).count("train") == n - 2 and len(plan) == n + 1
    test, val, train = (_windows(plan, horizon, s) for s in ("test", "validation", "train"))
    assert len(test) == len(val) == 1
    assert test[0][1] == RUN  # the newest labels are complete exactly on the run date
    assert not any(_overlap(w, test[0]) for w in val + train)
    assert not any(_overlap(w, val[0]) for w in train)
    # train snapshots are step days apart, the newest one a whole horizon before validation
    days = sorted((s for s, sp in plan.items() if sp == "train"), reverse=True)
    assert days[0] == RUN - dt.timedelta(days=3 * horizon)
    assert all((a - b).days == step for a, b in zip(days, days[1:]))


def test_default_plan_dates():
    plan = snapshot_plan(RUN, 30, 28, 6)
    assert {s.isoformat(): sp for s, sp in plan.items()} == {
        "2026-06-01": "score",
        "2026-05-02": "test",
        "2026-04-02": "validation",
        "2026-03-03": "train",
        "2026-02-03": "train",
        "2026-01-06": "train",
        "2025-12-09": "train",
    }


def test_overlapping_plan_is_refused_naming_the_snapshots():
    # the old rule (R - H - i * step with step < H) put validation inside test's label window
    old = {RUN: "score", dt.date(2026, 5, 2): "test", dt.date(2026, 4, 18): "validation", dt.date(2026, 3, 7): "train"}
    with pytest.raises(ValueError) as e:
        check_plan(old, 30)
    msg = str(e.value)
    assert "validation snapshot 2026-04-18 [2026-04-18, 2026-05-18)" in msg and "test snapshot 2026-05-02" in msg
    assert "train" not in msg  # the 2026-03-07 train window ends 2026-04-06, before validation starts
    check_plan(old, 14)  # with a 14-day horizon the same dates are fine
    # train windows may overlap each other
    check_plan({dt.date(2026, 1, 1): "train", dt.date(2026, 1, 2): "train", dt.date(2026, 3, 1): "test"}, 30)


def test_nonsensical_values_are_refused():
    with pytest.raises(ValueError, match="horizon_days"):
        snapshot_plan(RUN, 0, 28, 6)
    with pytest.raises(ValueError, match="step_days"):
        snapshot_plan(RUN, 30, 0, 6)


def test_describe_plan_lists_split_snapshot_and_label_window_newest_first():
    lines = describe_plan(snapshot_plan(RUN, 30, 28, 3), 30)
    assert lines == [
        "score      snapshot 2026-06-01  label window [2026-06-01, 2026-07-01)"
        " (not yet observable: scored, not labelled)",
        "test       snapshot 2026-05-02  label window [2026-05-02, 2026-06-01)",
        "validation snapshot 2026-04-02  label window [2026-04-02, 2026-05-02)",
        "train      snapshot 2026-03-03  label window [2026-03-03, 2026-04-02)",
    ]
