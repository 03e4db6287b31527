"""The report's "who to act on" and "did last month's warnings come true?" sections.

Why a module of its own: these sections read the retention layer's tables (``churn_risk.lifecycle``,
``churn_actions``, ``model_performance``), which change for other reasons than the model metrics above them.
"""

from __future__ import annotations

from typing import Any, Dict

from . import report_plots as plots
from .report_data import ReportData
from .report_format import f4 as _f4
from .report_format import integer as _int
from .report_format import pct as _pct
from .report_format import reasons_text as _reasons_text
from .report_format import table as _table


def action_section(data: ReportData) -> Dict[str, Any]:
    """Who to act on: lifecycle counts, the action list's size, and the savable users ordered by value at risk
    (the other ordering, by risk rank, is the top-users table)."""
    lc = data.lifecycle
    total = sum(lc.values())
    out: Dict[str, Any] = {"lifecycle": None, "summary": "", "table": None}
    if lc:
        out["lifecycle"] = _table(
            ["lifecycle", "users", "share"],
            [[k, _int(v), f"{v / total:.2%}" if total else "—"] for k, v in sorted(lc.items())],
        )
    a = data.actions
    if a:
        by = ", ".join(f"{k} {v}" for k, v in a.get("by_action", {}).items()) or "none"
        out["summary"] = f"{a['contacted']} users to contact ({by}); {a['control']} held out as control."
    t = data.top_value
    if t is not None and not t.empty:
        out["table"] = _table(
            [
                "value rank",
                "user",
                "value at risk",
                "churn probability",
                "risk rank",
                "lifecycle",
                "action",
                "control",
                "top reasons",
            ],
            [
                [
                    _int(r["value_rank"]),
                    r["user_id"],
                    f"{float(r['expected_value_at_risk']):,.2f}",
                    _f4(r["churn_probability"]),
                    _int(r["risk_rank"]),
                    r["lifecycle"],
                    r["action"],
                    "yes" if r["control"] else "",
                    _reasons_text(r["top_reasons"]),
                ]
                for _, r in t.iterrows()
            ],
            left=(1, 5, 6, 8),
        )
    return out


def outcomes_section(data: ReportData) -> Dict[str, Any]:
    """Did last month's warnings come true? ``model_performance`` rows, flags and the newest calibration plot."""
    p = data.performance
    out: Dict[str, Any] = {"table": None, "flagged": [], "images": []}
    if p is None or p.empty:
        return out
    flagged = p[(p["group"] == "all") & p["auc_below_test"].fillna(False).astype(bool)]
    out["flagged"] = [f"{r['snapshot_date']} v{r['model_version']}" for _, r in flagged.iterrows()]
    out["table"] = _table(
        [
            "snapshot",
            "model",
            "group",
            "users",
            "realised churn",
            "mean predicted",
            "ROC-AUC",
            "PR-AUC",
            "log loss",
            "lift top 10%",
            "precision high",
            "test ROC-AUC",
            "uplift",
        ],
        [
            [
                r["snapshot_date"],
                r["model_version"],
                r["group"],
                _int(r["users"]),
                _pct(r["realised_churn_rate"]),
                _f4(r["mean_predicted"]),
                _f4(r["roc_auc"]),
                _f4(r["pr_auc"]),
                _f4(r["log_loss"]),
                _f4(r["lift_top10"]),
                _f4(r["precision_high"]),
                _f4(r["test_roc_auc"]),
                _f4(r["uplift"]),
            ]
            for _, r in p.sort_values(["snapshot_date", "model_version", "group"], ascending=[False, True, True])
            .head(40)
            .iterrows()
        ],
        left=(2,),
        row_classes=[
            "drift" if (g == "all" and bool(b)) else "" for g, b in zip(p["group"], p["auc_below_test"].fillna(False))
        ],
    )
    if data.calibration:
        out["images"] = [plots.realised(p, data.calibration, data.calibration_snapshot)]
    return out
