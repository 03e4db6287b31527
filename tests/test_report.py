"""The weekly HTML report: rendered from hand-built ReportData (tests/report_samples.py, no Spark), the template from
a zipped package, and (slow) the numbers of a real weekly run against MLflow and Delta. The drift arithmetic behind
its PSI section is in test_drift.py."""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from report_samples import RUN, SNAPSHOTS, make_data, numbers, sample_metrics, with_new_keys

from churn_spark import report
from churn_spark.report import METRIC_KEYS, render
from churn_spark.report_data import MODELS, ReportData


@pytest.fixture(scope="module")
def data() -> ReportData:
    return make_data()


@pytest.fixture(scope="module")
def page(data) -> str:
    return render(data)


def _row(page: str, first_cell: str) -> str:
    """The <tr> whose first cell is exactly ``first_cell`` (already escaped)."""
    m = re.search(r"<tr[^>]*>(?:<td[^>]*>)" + re.escape(first_cell) + r"</td>.*?</tr>", page)
    assert m, f"no table row starting with {first_cell!r}"
    return m.group(0)


def _cells(row: str) -> list:
    return re.findall(r"<td[^>]*>([^<]*)</td>", row)


def _between(page: str, start: str, end: str) -> str:
    return page[page.index(start) : page.index(end, page.index(start))]


# ---- the page -----------------------------------------------------------------------------------------------
def test_self_contained(page):
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert "url(" not in page


def test_embedded_pngs_decode(page):
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # ROC, PR, gains+lift, reliability, training, tiers+share, histogram, PSI
    assert len(imgs) == 8
    for b in imgs:
        assert base64.b64decode(b).startswith(b"\x89PNG\r\n\x1a\n")


def test_size_well_under_1mb(page):
    assert len(page.encode()) < 1_000_000


def test_header(page, data):
    assert "churn-spark-cnn-rnn version 3" in page
    assert "abc123mlflowrun" in page and "PROMOTED" in page and "NOT PROMOTED" not in page
    assert "beats champion &lt;by a margin&gt; &amp; more" in page  # escaped
    assert "<by a margin>" not in page
    assert "synthetic &lt;data&gt; for tests" in page


def test_not_promoted_badge():
    d = make_data()
    d.metrics["gate"].update(promoted=False, reason="does not beat champion by the margin")
    assert "NOT PROMOTED" in render(d)


def test_every_model_metric_with_4_decimals(page, data):
    for m in MODELS:
        for k in METRIC_KEYS:
            if k == "n_users":
                continue
            v = data.metrics["models"][m][k]
            assert f"{v:.4f}" in page, (m, k)
    # and in the right row/column: roc_auc row lists deep, lr_rfm, gbt in that order
    assert _cells(_row(page, "roc_auc"))[1:] == [f"{data.metrics['models'][m]['roc_auc']:.4f}" for m in MODELS]
    assert "Ranking metrics (roc_auc, pr_auc, top-k precision/recall, lift) are computed on the raw score" in page


def test_tier_counts(page, data):
    tiers = data.score_tiers()
    tc = data.tier_counts
    expected = {
        t: int(tc[(tc.snapshot_date == RUN) & (tc.risk_tier == t)]["n"].iloc[0]) for t in ("high", "medium", "low")
    }
    assert tiers == expected
    for t, n in expected.items():
        assert f"{n:,}" in _row(page, t)
    assert f"{sum(expected.values()):,}" in _row(page, "total")
    # one row per snapshot in the over-time table, newest first
    assert page.index(f">{RUN}</td>") < page.index(f">{SNAPSHOTS[-2]}</td>")


def test_high_share_over_snapshots(data):
    w = data.tiers_by_snapshot()
    assert list(w["snapshot_date"]) == SNAPSHOTS
    assert np.allclose(w["high_share"], w["high"] / (w["high"] + w["medium"] + w["low"]))


def test_psi_flags(page):
    drifted = _row(page, "views")
    assert 'class="drift"' in drifted and "DRIFT" in drifted and "0.4567" in drifted
    for stable in ("orders", "spend", "active_days"):  # active_days sits exactly on the threshold: not flagged
        row = _row(page, stable)
        assert "DRIFT" not in row and "ok" in row
    assert "1 channel(s) drifted" in page


def test_top_users_with_reasons_in_rank_order(page, data):
    section = _between(page, "at-risk users", "<h2>Data quality")
    assert "raw score" not in section  # no raw_score column in this (older) risk table
    pos = []
    for _, r in data.top_users.iterrows():
        row = _row(section, str(r["risk_rank"]))
        assert r["user_id"] in row and f"{r['churn_probability']:.4f}" in row
        assert f"{r['top_reasons'][0]}; days_since_last_order &lt; 30 &amp; rising" in row
        pos.append(section.index(row))
    assert pos == sorted(pos)


def test_data_quality(page):
    q_row = re.search(r"<tr><td class=\"l\">events</td><td class=\"l\">unknown_event_type</td><td>12</td></tr>", page)
    assert q_row
    orders = re.search(r"<tr><td class=\"l\">orders</td><td>10,012</td>.*?</tr>", page).group(0)
    assert "✓" in orders and "MISMATCH" not in orders
    events = re.search(r"<tr class=\"bad\"><td class=\"l\">events</td><td>50,012</td>.*?</tr>", page).group(0)
    assert "MISMATCH" in events


def test_numbers(data):
    n = numbers(data)
    assert n["deep.roc_auc"] == data.metrics["models"]["deep"]["roc_auc"]
    assert n["gbt.n_users"] == 2000
    assert n["validation.lr_rfm.brier_calibrated"] == data.metrics["validation"]["lr_rfm"]["brier_calibrated"]
    assert n["gate.promoted"] == 1 and n["gate.champion"] == 0.41
    tiers = data.score_tiers()
    assert n["tier.high"] == tiers["high"] and n["users_scored"] == sum(tiers.values())
    assert n["histogram.total"] == 4000 and n["top_users.n"] == 10
    assert n["psi.views"] == 0.4567 and n["psi.flagged"] == 1
    assert n["quarantine.total"] == 24 and n["test.n_rows"] == 2000


def test_write_report_writes_run_dir(tmp_path, monkeypatch):
    from churn_spark.config import Config

    cfg = Config.model_validate({"work_dir": str(tmp_path), "sources": {"orders": {"path": "x"}}})
    monkeypatch.setattr(report, "gather", lambda spark, cfg, run_date, ingest_summary=None: make_data(n=300))
    out = report.write_report(None, cfg, RUN)
    assert out == str(tmp_path / "runs" / RUN.isoformat() / "report.html")
    text = open(out, encoding="utf-8").read()
    assert "data:image/png;base64," in text
    assert [p.name for p in (tmp_path / "runs" / RUN.isoformat()).iterdir()] == ["report.html"]


# ---- new metrics.json sections ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def new_page() -> str:
    return render(with_new_keys(make_data()))


def test_scored_by_champion_shows_both_versions_metrics(new_page):
    d = with_new_keys(make_data())
    assert "This week was scored by churn-spark-cnn-rnn version 2 (the champion)." in new_page
    comparison = _between(new_page, "candidate v3</th><th>scoring model v2</th>", "</table>")
    cand = d.metrics["models"]["deep"]
    assert _cells(_row(comparison, "roc_auc"))[1:] == [f"{cand['roc_auc']:.4f}", "0.6543"]
    assert _cells(_row(comparison, "pr_auc"))[1:] == [f"{cand['pr_auc']:.4f}", "0.4321"]
    assert _cells(_row(comparison, "brier"))[1:] == [f"{cand['brier']:.4f}"] * 2
    assert new_page.index("scoring model v2") < new_page.index("<h2>Test-snapshot metrics")  # in the header


def test_scored_by_candidate_has_no_comparison():
    d = with_new_keys(make_data())
    d.metrics["scored_by"] = {"model_version": "3", "role": "candidate", "test_metrics": d.metrics["models"]["deep"]}
    page = render(d)
    assert "scored by churn-spark-cnn-rnn version 3 (this run&#39;s candidate)" in page
    assert "scoring model v" not in page


def test_scored_by_without_test_metrics_uses_the_gates_champion_metrics():
    d = with_new_keys(make_data())
    d.metrics["scored_by"]["test_metrics"] = None
    assert d.scored_by().test_metrics["pr_auc"] == 0.4321  # gate.champion_metrics, same version "2"
    d.metrics["gate"]["champion_metrics"] = None
    page = render(d)
    assert "version 2 (the champion). Its test metrics are not in metrics.json" in page
    assert "scoring model v2" not in page


def test_gate_section(new_page):
    gate = _between(new_page, "<h2>Champion gate", "<h2>Model comparison plots")
    assert "<b>NOT PROMOTED</b> — improvement +0.0167 on pr_auc" in gate
    assert _cells(_row(gate, "95% bootstrap interval of the improvement"))[1] == "[-0.0123, +0.0456]"
    assert _cells(_row(gate, "improvement (positive = candidate better)"))[1] == "+0.0167"
    assert _cells(_row(gate, "champion v2"))[1] == "0.4100" and _cells(_row(gate, "comparable"))[1] == "yes"


def test_gate_improvement_oriented_when_not_recorded():
    d = make_data()
    d.metrics["gate"].update(metric="brier", candidate=0.20, champion=0.25)  # lower is better: +0.05
    gate = _between(render(d), "<h2>Champion gate", "<h2>Model comparison plots")
    assert _cells(_row(gate, "improvement (positive = candidate better)"))[1] == "+0.0500"
    assert _cells(_row(gate, "bootstrap interval of the improvement"))[1] == "—"  # older run: no interval


def test_tier_outcome_table(new_page):
    section = _between(new_page, "Realised churn per tier on the test snapshot", "<figure>")
    assert "Tiers assigned by share of the test snapshot." in section
    assert _cells(_row(section, "high")) == ["high", "200", "61.50%", "0.5678"]
    assert _cells(_row(section, "low")) == ["low", "1,400", "10.00%", "0.1234"]
    assert section.index(">high<") < section.index(">medium<") < section.index(">low<")


def test_validation_shows_cross_fitted_brier(new_page):
    d = with_new_keys(make_data())
    section = _between(new_page, "<h2>Validation", "</table>")
    assert "brier calibrated (cross-fitted)" in section
    assert _cells(_row(section, "gbt"))[2] == f"{d.metrics['validation']['gbt']['brier_calibrated_cv']:.4f}"


def test_top_users_show_raw_score_when_the_table_has_it(new_page):
    section = _between(new_page, "at-risk users", "<h2>Data quality")
    assert "<th>raw score</th>" in section
    assert _cells(_row(section, "1"))[1:4:2] == ["top-user-1", "3.5000"]
    assert _cells(_row(section, "10"))[1:4:2] == ["top-user-10", "2.5000"]


def test_render_with_nothing_but_metrics():
    d = ReportData(run_date=RUN, metrics=sample_metrics(np.random.default_rng(0)), notes=["risk table missing"])
    page = render(d)
    assert "risk table missing" in page and "No scored users." in page and "No drift figures." in page
    assert "No tier outcomes in metrics.json" in page and "not recorded (no scored_by" in page
    assert numbers(d)["users_scored"] == 0 and numbers(d)["psi.flagged"] == 0


def test_step_timings_table_from_the_run_log(tmp_path):
    import json

    from churn_spark.report_data import step_timings

    log = tmp_path / "runlog.json"
    log.write_text(
        json.dumps(
            {
                "steps": {
                    "build_sequences": {"timings": {"seconds": 30.0, "parts": {"build_sequences": 29.5}}},
                    "train": {"timings": {"seconds": 90.0, "parts": {"horovod training": 60.0, "mlflow": 5.0}}},
                    "validate": {"promoted": True},  # recorded before timings existed: left out
                }
            }
        )
    )
    d = make_data()
    d.timings = step_timings(log)
    assert list(d.timings) == ["build_sequences", "train"] and step_timings(tmp_path / "none.json") == {}
    page = render(d)
    section = page[page.index("Where the time went") :]
    assert _cells(_row(section, "train"))[1:] == ["90.0", "75.00%", "horovod training 60.0s, mlflow 5.0s"]
    assert _cells(_row(section, "total"))[1:3] == ["120.0", "100.00%"]
    assert "Where the time went" not in render(make_data())


def test_render_with_a_minimal_metrics_json():
    page = render(ReportData(run_date=RUN, metrics={"gate": {"interval": None, "comparable": None}}))
    assert "NOT PROMOTED" in page and "No labelled test scores." in page and page.endswith("</html>")


def test_share_tiers_are_described_as_shares():
    d = make_data()
    d.tier_mode, d.tier_thresholds = "share", {"high": 0.1, "medium": 0.2}
    assert "Tiers by share of the snapshot, from the top (high 0.1, medium 0.2)." in render(d)


def test_template_loads_from_the_zipped_package(tmp_path):
    """submit.sh ships churn_spark as a zip (a namespace package): the page must render from there alone."""
    zpath = tmp_path / "churn_spark.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for root, dirs, files in os.walk(REPO / "churn_spark"):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            z.write(root, os.path.relpath(root, REPO))
            for f in sorted(f for f in files if not f.endswith(".pyc")):
                z.write(os.path.join(root, f), os.path.relpath(os.path.join(root, f), REPO))
    code = (
        "import datetime, churn_spark.report as r; from churn_spark.report_data import ReportData; "
        "print(r.__file__); print(r.render(ReportData(run_date=datetime.date(2026, 1, 5), metrics={}))[-7:])"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(zpath), sysconfig.get_paths()["purelib"]])}
    out = subprocess.run([sys.executable, "-S", "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(zpath / "churn_spark" / "report.py"), "</html>"]


def test_is_delta_is_false_only_for_missing_or_plain_paths(spark, tmp_path):
    from churn_spark.report_data import _is_delta

    (tmp_path / "plain").mkdir()
    assert not _is_delta(spark, str(tmp_path / "missing")) and not _is_delta(spark, str(tmp_path / "plain"))
    spark.range(3).write.format("delta").save(str(tmp_path / "table"))
    assert _is_delta(spark, str(tmp_path / "table"))


# ---- end to end: the weekly run's report against MLflow and Delta --------------------------------------------
@pytest.mark.slow
def test_report_numbers_match_mlflow_and_delta(spark, weekly_run):
    from pyspark.sql import functions as F

    from churn_spark import registry
    from churn_spark.report import gather

    cfg, log = weekly_run
    path = Path(log["steps"]["report"]["report"])
    html = path.read_text()
    assert path.stat().st_size < 3_000_000 and "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html
    data = gather(spark, cfg, RUN, log["steps"]["build_sequences"]["ingest"])
    nums = numbers(data)
    run = registry.client(cfg).get_run(log["steps"]["train"]["mlflow_run_id"])
    for model in ("deep", "lr_rfm", "gbt"):
        for metric in ("roc_auc", "pr_auc", "brier"):
            assert nums[f"{model}.{metric}"] == pytest.approx(run.data.metrics[f"{model}_test_{metric}"])
            assert f"{nums[f'{model}.{metric}']:.4f}" in html
    risk = spark.read.format("delta").load(cfg.risk_table_path).where(F.col("snapshot_date") == F.lit(RUN))
    tiers = {r.risk_tier: r.n for r in risk.groupBy("risk_tier").agg(F.count("*").alias("n")).collect()}
    for tier, n in tiers.items():
        assert nums[f"tier.{tier}"] == n
    assert nums["users_scored"] == sum(tiers.values())
    q = spark.read.format("delta").load(cfg.quarantine_path).where(F.col("run_id") == f"build-{RUN}")
    assert nums["quarantine.total"] == q.count() > 0
    assert any(k.startswith("psi.") for k in nums)
    # who scored the week, as the risk table records it
    versions = sorted({r.model_version for r in risk.select("model_version").distinct().collect()})
    sb = data.scored_by()
    assert sb is not None and [sb.model_version] == versions
    assert f"This week was scored by {cfg.registry.model_name} version {sb.model_version}" in html
    if "raw_score" in risk.columns:
        assert "<th>raw score</th>" in html and "raw_score" in data.top_users.columns
    for tier, d in ((data.metrics.get("tiers") or {}).get("test") or {}).items():
        assert f"{d['churn_rate']:.2%}" in html, tier


def test_action_and_realised_outcome_sections():
    """Both orderings (risk rank above, value at risk here), lifecycle counts, the list size, the realised rows with
    the AUC flag and the newest matured snapshot's calibration plot."""
    d = make_data(seed=5, n=300)
    d.lifecycle = {"active": 200, "at_risk": 30, "lapsed": 60, "new": 10}
    d.actions = {"contacted": 27, "control": 3, "by_action": {"coupon": 20, "personal_recommendations": 7}}
    d.top_value = pd.DataFrame(
        {
            "value_rank": [1, 2],
            "user_id": ["rich-user", "poor-user"],
            "expected_value_at_risk": [123.456, 7.0],
            "churn_probability": [0.4, 0.9],
            "risk_rank": [9, 1],
            "lifecycle": ["at_risk", "at_risk"],
            "action": ["coupon", "personal_recommendations"],
            "control": [False, True],
            "top_reasons": [["spend_down_last_4w"], ["views_down_last_4w"]],
        }
    )
    deciles = [{"decile": i, "users": 10, "mean_predicted": i / 10, "realised_rate": i / 11} for i in range(1, 11)]
    d.performance = pd.DataFrame(
        {
            "snapshot_date": [dt.date(2026, 9, 1), dt.date(2026, 10, 1), dt.date(2026, 10, 1)],
            "model_version": ["2", "3", "3"],
            "group": ["all", "all", "control"],
            "users": [100, 120, 12],
            "realised_churn_rate": [0.3, 0.25, 0.5],
            "mean_predicted": [0.31, 0.27, 0.45],
            "roc_auc": [0.81, 0.70, 0.66],
            "pr_auc": [0.6, 0.5, 0.7],
            "log_loss": [0.4, 0.5, 0.6],
            "lift_top10": [2.0, 1.5, None],
            "precision_high": [0.7, 0.6, None],
            "test_roc_auc": [0.82, 0.80, 0.80],
            "auc_below_test": [False, True, None],
            "uplift": [None, None, None],
        }
    )
    d.calibration, d.calibration_snapshot = deciles, dt.date(2026, 10, 1)
    page = render(d)
    section = _between(page, "Who to act on", "Did last month")
    assert "27 users to contact (coupon 20, personal_recommendations 7); 3 held out as control." in section
    assert section.index("rich-user") < section.index("poor-user") and "123.46" in section
    assert _cells(_row(section, "lapsed"))[:2] == ["lapsed", "60"]
    outcomes = _between(page, "Did last month", "Data quality")
    assert "2026-10-01 v3" in outcomes and "2026-09-01 v2" not in outcomes.split("</p>")[0]
    assert "Calibration, 2026-10-01" in outcomes or "data:image/png;base64," in outcomes
    empty = render(make_data(seed=5, n=300))
    assert "No scored snapshot has matured yet" in empty and "No action list for this snapshot" in empty
