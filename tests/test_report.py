"""The weekly HTML report renders from synthetic ReportData alone: pure pandas/matplotlib, Spark is never started."""
from __future__ import annotations

import base64
import datetime as dt
import math
import re

import numpy as np
import pandas as pd
import pytest

from churn_spark import report
from churn_spark.report import (METRIC_KEYS, MODELS, ReportData, bin_counts, channel_totals, gains_table,
                                histogram_counts, psi, psi_from_values, quantile_edges, reliability_table, render)

RUN = dt.date(2026, 11, 2)
SNAPSHOTS = [RUN - dt.timedelta(days=28 * i) for i in range(6)][::-1]  # oldest .. RUN


def _metrics(rng: np.random.Generator) -> dict:
    models = {}
    for m in MODELS:
        d = {k: float(rng.uniform(0.05, 0.95)) for k in METRIC_KEYS}
        d["lift_top10"] = float(rng.uniform(1.5, 4.0))
        d["n_users"] = 2000
        models[m] = d
    return {
        "run_date": RUN.isoformat(), "run_id": "abc123mlflowrun", "model_name": "churn-spark-cnn-rnn",
        "model_version": "3", "features_version": 5,
        "snapshots": {"train": ["2026-06-11", "2026-07-09", "2026-08-06"], "validation": ["2026-09-03"],
                      "test": ["2026-10-03"], "score": [RUN.isoformat()]},
        "models": models,
        "validation": {m: {"brier_raw": float(rng.uniform(0.1, 0.3)), "brier_calibrated": float(rng.uniform(0.1, 0.2)),
                           "threshold": float(rng.uniform(0.2, 0.6))} for m in MODELS},
        "gate": {"metric": "pr_auc", "margin": 0.0, "candidate": models["deep"]["pr_auc"], "champion": 0.41,
                 "champion_version": "2", "promoted": True, "reason": "beats champion <by a margin> & more"},
        "training": {"ranks": [{"rank": 0, "host": "node-a", "samples_per_s": 1510.5, "epochs_run": 8,
                                "resumed": False, "weights_digest": "d1" * 32},
                               {"rank": 1, "host": "node-b", "samples_per_s": 1488.25, "epochs_run": 8,
                                "resumed": False, "weights_digest": "d1" * 32}],
                     "samples_per_s_total": 2998.75, "epochs": 8,
                     "history": {"loss": list(np.linspace(0.7, 0.4, 8)), "val_loss": list(np.linspace(0.72, 0.45, 8))}},
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
    top = pd.DataFrame({
        "risk_rank": range(1, 11), "user_id": [f"top-user-{i}" for i in range(1, 11)],
        "churn_probability": np.sort(rng.uniform(0.8, 0.99, 10))[::-1],
        "risk_tier": "high", "risk_percentile": np.linspace(1.0, 0.998, 10),
        "top_reasons": [[f"spend_trend_{i}", "days_since_last_order < 30 & rising"] for i in range(1, 11)],
    })
    psi_df = pd.DataFrame({"channel": ["orders", "spend", "views", "active_days"],
                           "psi": [0.0123, 0.0871, 0.4567, 0.2],
                           "n_expected": [9000] * 4, "n_actual": [3100] * 4, "n_bins": [10, 10, 8, 10]})
    quarantine = pd.DataFrame({"source": ["events", "orders", "orders"],
                               "reason": ["unknown_event_type", "exact_duplicate", "negative_amount"],
                               "n": [12, 5, 7]})
    ingest = {"orders": {"rows_in": 10012, "used": 10000, "quarantined": 7, "deduplicated": 5,
                         "by_reason": {"negative_amount": 7, "exact_duplicate": 5}},
              "events": {"rows_in": 50012, "used": 50000, "quarantined": 12, "deduplicated": 1,
                         "by_reason": {"unknown_event_type": 12}}}  # deliberately unbalanced
    return ReportData(
        run_date=RUN, metrics=_metrics(rng), test_scores=pd.DataFrame(scores),
        tier_counts=pd.DataFrame(tier_rows, columns=["snapshot_date", "risk_tier", "n"]),
        histogram=histogram_counts(probs), top_users=top,
        scoring={"rows": 4000, "model_names": ["churn-spark-cnn-rnn"], "model_versions": ["3"],
                 "run_ids": ["score-run-1"], "scored_at": dt.datetime(2026, 11, 2, 6, 0), "feature_table_version": 5},
        tier_thresholds={"high": 0.5, "medium": 0.25}, psi=psi_df, psi_threshold=0.2,
        quarantine=quarantine, ingest_summary=ingest, notes=["synthetic <data> for tests"])


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


def test_size_well_under_2mb(page):
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
    row = _row(page, "roc_auc")
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)[1:]
    assert cells == [f"{data.metrics['models'][m]['roc_auc']:.4f}" for m in MODELS]


def test_tier_counts(page, data):
    tiers = data.score_tiers()
    tc = data.tier_counts
    expected = {t: int(tc[(tc.snapshot_date == RUN) & (tc.risk_tier == t)]["n"].iloc[0]) for t in ("high", "medium", "low")}
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
    section = page[page.index("at-risk users"):page.index("<h2>Data quality")]
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
    n = data.numbers()
    assert n["deep.roc_auc"] == data.metrics["models"]["deep"]["roc_auc"]
    assert n["gbt.n_users"] == 2000
    assert n["validation.lr_rfm.brier_calibrated"] == data.metrics["validation"]["lr_rfm"]["brier_calibrated"]
    assert n["gate.promoted"] == 1 and n["features_version"] == 5
    assert n["training.rank1.samples_per_s"] == 1488.25 and n["training.samples_per_s_total"] == 2998.75
    tiers = data.score_tiers()
    assert n["tier.high"] == tiers["high"] and n["users_scored"] == sum(tiers.values())
    assert math.isclose(n["high_share"], tiers["high"] / sum(tiers.values()))
    assert n["snapshots_scored"] == 6 and n["histogram.total"] == 4000 and n["top_users.n"] == 10
    assert n["psi.views"] == 0.4567 and n["psi.flagged"] == 1
    assert n["quarantine.orders.exact_duplicate"] == 5 and n["quarantine.total"] == 24
    assert n["ingest.orders.rows_in"] == 10012 and n["test.n_rows"] == 2000


def test_render_with_nothing_but_metrics():
    d = ReportData(run_date=RUN, metrics=_metrics(np.random.default_rng(0)), notes=["risk table missing"])
    page = render(d)
    assert "risk table missing" in page and "No scored users." in page and "No drift figures." in page
    assert d.numbers()["users_scored"] == 0 and d.numbers()["psi.flagged"] == 0


def test_write_report_writes_run_dir(tmp_path, monkeypatch):
    from churn_spark.config import Config

    cfg = Config.model_validate({"work_dir": str(tmp_path), "sources": {"orders": {"path": "x"}}})
    monkeypatch.setattr(report, "gather", lambda spark, cfg, run_date, ingest_summary=None: make_data(n=300))
    out = report.write_report(None, cfg, RUN)
    assert out == str(tmp_path / "runs" / RUN.isoformat() / "report.html")
    text = open(out, encoding="utf-8").read()
    assert "data:image/png;base64," in text
    assert [p.name for p in (tmp_path / "runs" / RUN.isoformat()).iterdir()] == ["report.html"]


# ---- pure helpers ----------------------------------------------------------------------------------------------
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


def test_psi_from_values_and_binning_rule():
    rng = np.random.default_rng(1)
    train = np.log1p(rng.poisson(3, 5000))
    assert psi_from_values(train, np.log1p(rng.poisson(3, 3000))) < 0.05
    assert psi_from_values(train, np.log1p(rng.poisson(8, 3000))) > 0.2
    edges = quantile_edges([0, 0, 0, 0, 0, 0, 0, 1, 2, 3])  # zero-heavy: tied edges collapse
    assert edges == sorted(set(edges)) and edges[0] == 0.0
    # a value equal to an edge stays in the lower bin (Spark: bin = sum(value > edge))
    assert list(bin_counts([0.0, 0.5, 1.0, 1.5], [0.0, 1.0])) == [1, 2, 1]


def test_channel_totals_time_major():
    # T = 3 buckets, C = 2 channels: seq[t*C + c]
    seq = [1, 10, 2, 20, 3, 30]
    assert channel_totals([seq], 2).tolist() == [[6, 60]]


def test_histogram_reliability_gains():
    h = histogram_counts([0.0, 0.049, 0.05, 0.999, 1.0])
    assert len(h) == 20 and h["n"].tolist()[:2] == [2, 1] and h["n"].iloc[19] == 2
    r = reliability_table([0, 1, 1, 0], [0.05, 0.15, 0.95, 1.0], 10)
    assert r["bin"].tolist() == [0, 1, 9] and r["n"].tolist() == [1, 1, 2]
    g = gains_table(np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3]), points=4)
    assert g["share_positives"].tolist() == [1.0, 1.0, 1.0, 1.0] and g["lift"].iloc[0] == 4.0
