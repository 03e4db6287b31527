"""The Spark side of lifecycle, risk rows and the action list gives the numpy/Python answers on hand-made rows."""

import datetime as dt

import numpy as np
import pytest
from pyspark.sql import functions as F
from test_lifecycle import NAMES, RULE, RULES, rows

from churn_spark import actions as A
from churn_spark import lifecycle as L
from churn_spark.config import ActionsConf, ScoringConf
from churn_spark.score import RISK_COLUMNS, risk_rows

SNAP = dt.date(2026, 11, 2)
FEATURE_SCHEMA = (
    "user_id string, snapshot_date date, tenure_days double, lifetime_orders double, "
    "days_since_last_order double, days_since_last_event double, sequence array<double>"
)


def _features(spark):
    r = rows()
    data = [
        (
            n,
            SNAP,
            float(r["tenure_days"][i]),
            float(r["lifetime_orders"][i]),
            float(r["days_since_last_order"][i]),
            1.0,
            [float(x) for x in r["sequence"][i]],
        )
        for i, n in enumerate(NAMES)
    ]
    return spark.createDataFrame(data, FEATURE_SCHEMA)


def test_spark_facts_equal_numpy(spark):
    got = L.with_facts(_features(spark), RULE).toPandas().set_index("user_id").loc[NAMES]
    want = L.facts_np(rows(), RULE)
    for col in L.FACTS:
        np.testing.assert_allclose(got[col].to_numpy(float), np.asarray(want[col], float), err_msg=col)


def _scored(spark, raw):
    """Feature rows + facts + model outputs (what the scorer hands to ``risk_rows``)."""
    probs = {n: round(0.5 + raw[n] / 2, 6) for n in NAMES}  # a monotone "calibration"
    out = L.with_facts(_features(spark), RULE)
    p = spark.createDataFrame(
        [(n, float(raw[n]), probs[n], ["views_down_last_4w"]) for n in NAMES],
        "user_id string, raw_probability double, churn_probability double, " "top_reasons array<string>",
    )
    return out.join(p, "user_id").select(
        "user_id", "snapshot_date", *L.FACTS, "raw_probability", "churn_probability", "top_reasons"
    ), probs


def test_risk_rows_rank_and_tier_savable_users_and_price_the_risk(spark):
    raw = {n: 1.0 - i / 20 for i, n in enumerate(NAMES)}  # strictly decreasing in NAMES order
    raw["orders_before_window"] = raw["new_last_week"]  # a tie shares rank and tier
    scored, probs = _scored(spark, raw)
    scoring = ScoringConf(tier_shares={"high": 0.25, "medium": 0.25})
    previous = spark.createDataFrame(
        [("new_last_week", 0.6, "medium"), ("regular_silent_30d", 0.9, "high")],
        "user_id string, _prev_probability double, _prev_tier string",
    )
    out = risk_rows(scored, scoring, "m", "7", 3, "run", dt.datetime(2026, 11, 2), RULE, previous)
    assert out.columns == RISK_COLUMNS
    got = out.toPandas().set_index("user_id")
    facts = L.facts_np(rows(), RULE)
    lapsed = dict(zip(NAMES, facts["lc_lapsed"].tolist()))
    savable = [n for n in NAMES if not lapsed[n]]  # in decreasing raw order
    assert [n for n in NAMES if lapsed[n]] == ["regular_silent_31d", "rare_capped", "frequent_floor"]
    # savable users: ranks 1..7 by raw score (the tie shares rank 3); lapsed after them, by raw among themselves
    assert [int(got.loc[n, "risk_rank"]) for n in savable] == [1, 2, 3, 3, 5, 6, 7]
    assert [int(got.loc[n, "risk_rank"]) for n in ("regular_silent_31d", "rare_capped", "frequent_floor")] == [8, 9, 10]
    # tiers by share of the 7 savable users: share above < 0.25 high, < 0.5 medium
    assert [got.loc[n, "risk_tier"] for n in savable] == ["high", "high", "medium", "medium", "low", "low", "low"]
    assert set(got.loc[[n for n in NAMES if lapsed[n]], "risk_tier"]) == {"lapsed"}
    assert got.loc[[n for n in NAMES if lapsed[n]], "risk_percentile"].isna().all()
    assert [got.loc[n, "lifecycle"] for n in savable] == ["at_risk", "at_risk", "new", "active", "new", "new", "active"]
    # value at risk: probability x the shared formula, the population rate over savable users only
    exposure = np.asarray(facts["value_exposure_days"], float)
    pop = L.population_rates_np(facts["value_spend"], facts["value_orders"], exposure, ~np.asarray(facts["lc_lapsed"]))
    spend = L.expected_spend(L.NUMPY, facts["value_spend"], exposure, *pop, RULE)
    for i, n in enumerate(NAMES):
        assert got.loc[n, "expected_value_at_risk"] == pytest.approx(probs[n] * spend[i], abs=1e-4), n
    # change since the previous snapshot: null for users not in it; newly_high = high now and not high before
    assert got.loc["new_last_week", "risk_delta"] == pytest.approx(probs["new_last_week"] - 0.6)
    assert got.loc["regular_silent_30d", "risk_delta"] == pytest.approx(probs["regular_silent_30d"] - 0.9)
    assert got.drop(["new_last_week", "regular_silent_30d"])["risk_delta"].isna().all()
    assert bool(got.loc["regular_silent_30d", "newly_high"]) is False  # high now and before
    assert bool(got.loc["frequent_floor_20d", "newly_high"]) is True  # high now, absent before
    assert bool(got.loc["new_last_week", "newly_high"]) is False  # medium now
    first = risk_rows(scored, scoring, "m", "7", 3, "run", dt.datetime(2026, 11, 2), RULE, None).toPandas()
    assert first["risk_delta"].isna().all() and first["newly_high"].isna().all()  # no earlier snapshot at all


def test_action_list_ranks_by_value_caps_contacts_and_flags_a_deterministic_control_group(spark):
    rng = np.random.default_rng(3)
    n = 60
    value = rng.permutation(n).astype(float) * 10  # distinct values
    codes = [["views_down_last_4w"], ["spend_down_last_4w", "views_down_last_4w"], ["tenure_days_high"], []]
    tiers = ["high"] * 50 + ["medium"] * 5 + ["lapsed"] * 5
    data = [
        (
            SNAP,
            f"u{i}",
            float(value[i]),
            0.9,
            tiers[i],
            "lapsed" if tiers[i] == "lapsed" else "at_risk",
            i + 1,
            codes[i % 4],
            "7",
        )
        for i in range(n)
    ]
    risk = spark.createDataFrame(
        data,
        "snapshot_date date, user_id string, expected_value_at_risk double, "
        "churn_probability double, risk_tier string, lifecycle string, risk_rank int, "
        "top_reasons array<string>, model_version string",
    )
    acfg = ActionsConf(contact_budget=20, control_share=0.3, rules=RULES, default_action="email")
    got = A.build_actions(risk, acfg, 3, "run", dt.datetime(2026, 11, 2)).orderBy("value_rank").toPandas()
    assert list(got.columns) == A.ACTION_COLUMNS
    cand = sorted((i for i in range(50)), key=lambda i: -value[i])  # high tier only, by value at risk
    control = [A.control_draw(f"u{i}", SNAP) < 0.3 for i in cand]
    keep = A.within_budget(control, 20)
    listed = [i for i, k in zip(cand, keep) if k]
    assert list(got["user_id"]) == [f"u{i}" for i in listed]
    assert list(got["value_rank"]) == list(range(1, len(listed) + 1))
    assert list(got["control"]) == [c for c, k in zip(control, keep) if k]
    assert (~got["control"]).sum() == 20 and 0 < got["control"].sum() < len(got)
    assert list(got["action"]) == [A.match_action(codes[i % 4], RULES, "email")[0] for i in listed]
    assert list(got["matched_reason"].where(got["matched_reason"].notna(), None)) == [
        A.match_action(codes[i % 4], RULES, "email")[1] for i in listed
    ]
    unlimited = A.build_actions(
        risk, acfg.model_copy(update={"contact_budget": None}), 3, "r", dt.datetime(2026, 11, 2)
    )
    assert unlimited.count() == 50 and unlimited.where(F.col("risk_tier") != "high").count() == 0
