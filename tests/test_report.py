"""The weekly HTML report: rendered from hand-built ReportData (no Spark), the drift arithmetic on hand-made counts,
the Spark drift aggregation on a tiny table, the template from a zipped package, and (slow) the numbers of a real
weekly run against MLflow and Delta."""

from __future__ import annotations

import base64
import datetime as dt
import math
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

from churn_spark import report
from churn_spark.drift import DriftSkipped, channel_psi, distinct_edges, flagged, psi, psi_table
from churn_spark.report import METRIC_KEYS, render
from churn_spark.report_data import MODELS, ReportData

RUN = dt.date(2026, 11, 2)
SNAPSHOTS = [RUN - dt.timedelta(days=28 * i) for i in range(6)][::-1]  # oldest .. RUN
REPO = Path(__file__).resolve().parent.parent


# ---- test helpers (what the report shows, flat; the histogram as gather computes it) ---------------------------
def histogram_counts(probabilities, n_bins: int = 20) -> pd.DataFrame:
    """The score histogram exactly as gather computes it in Spark: ``bin = min(floor(p * n), n - 1)``."""
    p = np.asarray(list(probabilities), dtype=float)
    idx = np.clip(np.floor(p * n_bins).astype(int), 0, n_bins - 1)
    return pd.DataFrame({"bin": np.arange(n_bins), "n": np.bincount(idx, minlength=n_bins)[:n_bins]})


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def numbers(data: ReportData) -> dict:
    """Flat {key: number} of what the page shows, e.g. ``deep.roc_auc``, ``tier.high``, ``users_scored``."""
    out: dict = {}
    m = data.metrics
    for section, prefix in (("models", ""), ("validation", "validation.")):
        for name, d in (m.get(section) or {}).items():
            out.update({f"{prefix}{name}.{k}": v for k, v in d.items() if _finite(v)})
    gate = data.gate()
    out["gate.promoted"] = int(gate.promoted)
    out.update(
        {f"gate.{k}": getattr(gate, k) for k in ("candidate", "champion", "margin") if getattr(gate, k) is not None}
    )
    tiers = data.score_tiers()
    out.update({f"tier.{t}": n for t, n in tiers.items()})
    out["users_scored"] = sum(tiers.values())
    out["test.n_rows"] = len(data.test_scores)
    out["histogram.total"] = int(data.histogram["n"].sum()) if not data.histogram.empty else 0
    out["top_users.n"] = len(data.top_users)
    if not data.psi.empty:
        out.update({f"psi.{c}": float(v) for c, v in zip(data.psi["channel"], data.psi["psi"])})
    out["psi.flagged"] = len(data.drifted_channels())
    q = data.quarantine
    out["quarantine.total"] = int(q["n"].sum()) if not q.empty else 0
    return out


def _metrics(rng: np.random.Generator) -> dict:
    models = {}
    for m in MODELS:
        d = {k: float(rng.uniform(0.05, 0.95)) for k in METRIC_KEYS}
        d["lift_top10"] = float(rng.uniform(1.5, 4.0))
        d["n_users"] = 2000
        models[m] = d
    return {
        "run_date": RUN.isoformat(),
        "run_id": "abc123mlflowrun",
        "model_name": "churn-spark-cnn-rnn",
        "model_version": "3",
        "features_version": 5,
        "snapshots": {
            "train": ["2026-06-11", "2026-07-09", "2026-08-06"],
            "validation": ["2026-09-03"],
            "test": ["2026-10-03"],
            "score": [RUN.isoformat()],
        },
        "models": models,
        "validation": {
            m: {
                "brier_raw": float(rng.uniform(0.1, 0.3)),
                "brier_calibrated": float(rng.uniform(0.1, 0.2)),
                "threshold": float(rng.uniform(0.2, 0.6)),
            }
            for m in MODELS
        },
        "gate": {
            "metric": "pr_auc",
            "margin": 0.0,
            "candidate": models["deep"]["pr_auc"],
            "champion": 0.41,
            "champion_version": "2",
            "promoted": True,
            "reason": "beats champion <by a margin> & more",
        },
        "training": {
            "ranks": [
                {
                    "rank": 0,
                    "host": "node-a",
                    "samples_per_s": 1510.5,
                    "epochs_run": 8,
                    "resumed": False,
                    "weights_digest": "d1" * 32,
                },
                {
                    "rank": 1,
                    "host": "node-b",
                    "samples_per_s": 1488.25,
                    "epochs_run": 8,
                    "resumed": False,
                    "weights_digest": "d1" * 32,
                },
            ],
            "samples_per_s_total": 2998.75,
            "epochs": 8,
            "history": {"loss": list(np.linspace(0.7, 0.4, 8)), "val_loss": list(np.linspace(0.72, 0.45, 8))},
        },
    }


def make_data(seed: int = 3, n: int = 2000) -> ReportData:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    scores = {"user_id": [f"u{i:05d}" for i in range(n)], "label": y}
    for m, strength in zip(MODELS, (2.0, 1.2, 1.6)):
        logit = strength * (y - 0.5) + rng.normal(0, 1, n)
        raw = 1 / (1 + np.exp(-logit))
        scores[m] = raw
        scores[f"{m}_calibrated"] = np.clip(raw * 0.8, 0, 1)
    tier_rows = []
    for i, s in enumerate(SNAPSHOTS):
        for t, base in (("high", 300), ("medium", 700), ("low", 3000)):
            tier_rows.append((s, t, base + 17 * i + int(rng.integers(0, 50))))
    probs = rng.beta(2, 5, 4000)
    top = pd.DataFrame(
        {
            "risk_rank": range(1, 11),
            "user_id": [f"top-user-{i}" for i in range(1, 11)],
            "churn_probability": np.sort(rng.uniform(0.8, 0.99, 10))[::-1],
            "risk_tier": "high",
            "risk_percentile": np.linspace(1.0, 0.998, 10),
            "top_reasons": [[f"spend_trend_{i}", "days_since_last_order < 30 & rising"] for i in range(1, 11)],
        }
    )
    psi_df = pd.DataFrame(
        {
            "channel": ["orders", "spend", "views", "active_days"],
            "psi": [0.0123, 0.0871, 0.4567, 0.2],
            "n_expected": [9000] * 4,
            "n_actual": [3100] * 4,
            "n_bins": [10, 10, 8, 10],
        }
    )
    quarantine = pd.DataFrame(
        {
            "source": ["events", "orders", "orders"],
            "reason": ["unknown_event_type", "exact_duplicate", "negative_amount"],
            "n": [12, 5, 7],
        }
    )
    ingest = {
        "orders": {
            "rows_in": 10012,
            "used": 10000,
            "quarantined": 7,
            "deduplicated": 5,
            "by_reason": {"negative_amount": 7, "exact_duplicate": 5},
        },
        "events": {
            "rows_in": 50012,
            "used": 50000,
            "quarantined": 12,
            "deduplicated": 1,
            "by_reason": {"unknown_event_type": 12},
        },
    }  # deliberately unbalanced
    return ReportData(
        run_date=RUN,
        metrics=_metrics(rng),
        test_scores=pd.DataFrame(scores),
        tier_counts=pd.DataFrame(tier_rows, columns=["snapshot_date", "risk_tier", "n"]),
        histogram=histogram_counts(probs),
        top_users=top,
        scoring={
            "rows": 4000,
            "model_names": ["churn-spark-cnn-rnn"],
            "model_versions": ["3"],
            "run_ids": ["score-run-1"],
            "scored_at": dt.datetime(2026, 11, 2, 6, 0),
            "feature_table_version": 5,
        },
        tier_thresholds={"high": 0.5, "medium": 0.25},
        psi=psi_df,
        psi_threshold=0.2,
        quarantine=quarantine,
        ingest_summary=ingest,
        notes=["synthetic <data> for tests"],
    )


def with_new_keys(d: ReportData) -> ReportData:
    """The metrics.json keys added with the bootstrap gate, share tiers and cross-fitted calibration."""
    m = d.metrics
    champ = dict(m["models"]["deep"], roc_auc=0.6543, pr_auc=0.4321)
    m["scored_by"] = {"model_version": "2", "role": "champion", "test_metrics": champ}
    m["gate"].update(
        promoted=False,
        comparable=True,
        interval=[-0.0123, 0.0456],
        confidence=0.95,
        champion_metrics=champ,
        improvement=0.0167,
        reason="improvement +0.0167 on pr_auc, 95% interval [-0.0123, +0.0456] does not clear 0.0",
    )
    m["tiers"] = {
        "mode": "share",
        "test": {
            "low": {"users": 1400, "churn_rate": 0.1, "mean_probability": 0.1234},
            "high": {"users": 200, "churn_rate": 0.615, "mean_probability": 0.5678},
            "medium": {"users": 400, "churn_rate": 0.3, "mean_probability": 0.31},
        },
    }
    for v in m["validation"].values():
        v["brier_calibrated_cv"] = v.pop("brier_calibrated") + 0.5
    d.top_users = d.top_users.assign(raw_score=np.linspace(3.5, 2.5, len(d.top_users)))
    return d


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
    d = ReportData(run_date=RUN, metrics=_metrics(np.random.default_rng(0)), notes=["risk table missing"])
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
