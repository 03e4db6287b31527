"""Distributed ranks equal a whole-group rank computed in pandas, and no ranking step runs a snapshot in one task."""

import datetime as dt
import re

import numpy as np
import pandas as pd
from pyspark.sql import functions as F
from test_actions_spark import _scored
from test_lifecycle import RULE

from churn_spark import actions as A
from churn_spark.config import ActionsConf, ScoringConf
from churn_spark.ranking import rank_in_groups
from churn_spark.score import risk_rows

SNAPS = [dt.date(2026, 10, 3), dt.date(2026, 11, 2)]


def _frame(spark, n=600, seed=3):
    rng = np.random.default_rng(seed)
    pdf = pd.DataFrame(
        {
            "user_id": [f"u{i:04d}" for i in range(n)],
            "snapshot_date": [SNAPS[i % 2] for i in range(n)],
            "lapsed": rng.random(n) < 0.3,
            "score": rng.integers(0, 40, n) / 40.0,  # many ties
            "flag": rng.random(n) < 0.5,
        }
    )
    pdf.loc[::37, "score"] = np.nan  # nulls sort last (descending) / first (ascending)
    sdf = spark.createDataFrame(pdf).withColumn("score", F.when(~F.isnan("score"), F.col("score")))
    return pdf, sdf


def test_ranks_and_running_sums_equal_a_whole_group_computation(spark):
    pdf, sdf = _frame(spark)
    for buckets in (1, 3, 9):
        got = (
            rank_in_groups(
                sdf,
                ["snapshot_date", "lapsed"],
                [("score", False)],
                rank_col="r",
                size_col="n",
                buckets=buckets,
            )
            .toPandas()
            .set_index("user_id")
            .sort_index()
        )
        want = pdf.copy()
        # pandas: descending, nulls last, ties share the minimum rank (what F.rank() gives)
        key = want["score"].fillna(-np.inf)
        want["r"] = key.groupby([want["snapshot_date"], want["lapsed"]]).rank(method="min", ascending=False)
        want["n"] = want.groupby(["snapshot_date", "lapsed"])["user_id"].transform("size")
        want = want.set_index("user_id").sort_index()
        assert got["r"].tolist() == want["r"].astype(int).tolist(), buckets
        assert got["n"].tolist() == want["n"].tolist()
    # a unique order: the rank is a row number and the running sum counts the rows strictly before
    got = (
        rank_in_groups(
            sdf,
            ["snapshot_date"],
            [("score", True), ("user_id", True)],
            rank_col="r",
            running={"before": F.col("flag").cast("long")},
            buckets=5,
        )
        .toPandas()
        .set_index("user_id")
    )
    for snap, g in pdf.assign(key=pdf["score"].fillna(-np.inf)).groupby("snapshot_date"):
        g = g.sort_values(["key", "user_id"])
        assert got.loc[g["user_id"], "r"].tolist() == list(range(1, len(g) + 1)), snap
        before = np.concatenate([[0], np.cumsum(g["flag"].astype(int).to_numpy())[:-1]])
        assert got.loc[g["user_id"], "before"].tolist() == before.tolist()


WINDOW = re.compile(r"Window \[.*\], \[(.*?)\], \[.*?\]\s*$")


def _plan(df) -> str:
    return df._jdf.queryExecution().executedPlan().toString()


def _assert_no_single_task_step(df, name):
    """No exchange to a single partition, and every window partitioned by more than the snapshot (a bucket or a
    user id), so no task ever holds a whole snapshot."""
    plan = _plan(df)
    assert "SinglePartition" not in plan, f"{name}: single-partition exchange\n{plan}"
    specs = [m.group(1) for line in plan.splitlines() if (m := WINDOW.search(line))]
    for spec in specs:
        assert re.search(r"\b(_bucket|user_id|_raw)#", spec), f"{name}: a window over [{spec}]\n{plan}"
    return specs


def test_risk_rows_and_action_list_have_no_single_task_step(spark):
    from test_lifecycle import NAMES

    raw = {n: 1.0 - i / 20 for i, n in enumerate(NAMES)}
    scored, _ = _scored(spark, raw)
    risk = risk_rows(scored, ScoringConf(), "m", "7", 3, "run", dt.datetime(2026, 11, 2), RULE, None)
    assert _assert_no_single_task_step(risk, "churn_risk")  # it does rank with windows, over buckets
    actions = A.build_actions(risk, ActionsConf(contact_budget=2), 3, "run", dt.datetime(2026, 11, 2))
    assert _assert_no_single_task_step(actions, "churn_actions")
    # the checker itself: a plain snapshot window is caught
    from pyspark.sql import Window

    bad = risk.withColumn("x", F.rank().over(Window.partitionBy("snapshot_date").orderBy("raw_score")))
    try:
        _assert_no_single_task_step(bad, "bad")
    except AssertionError:
        pass
    else:
        raise AssertionError("a window over the snapshot alone was not caught")
