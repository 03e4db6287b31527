"""Print where the demo's outputs are (risk table, catalog view, MLflow UI, report) after `make demo`."""

import json
import sys
from pathlib import Path

work, run_date = Path(sys.argv[1]).resolve(), sys.argv[2]


def read_summary(name: str) -> dict:
    text = (work / name).read_text()  # Spark's Ivy resolver may print a line before the JSON
    return json.loads(text[text.index("\n{") + 1 if not text.startswith("{") else 0 :])


summary = read_summary("weekly-summary.json")
steps = summary["steps"]
print("\nchurn-spark demo finished")
print(f"  lake:           {work / 'lake'}")
print(f"  feature table:  {work / 'tables' / 'features'} (version {steps['build_sequences']['features_version']})")
print(
    f"  risk table:     {Path(summary['risk_table']).resolve()} (Delta, partition snapshot_date={run_date}, "
    f"{steps['score']['users']} users, tiers {steps['score']['tiers']})"
)
print(
    f"  SQL endpoint:   make sql-server -> jdbc:hive2://127.0.0.1:10000/churn ({summary['catalog_table']}, "
    "churn_risk_latest, churn_risk_history, tier_summary, model_versions)"
)
print(
    f"  model:          version {steps['train']['model_version']} "
    f"(promoted: {steps['validate']['promoted']}: {steps['validate']['reason']})"
)
print(f"  MLflow UI:      {summary['mlflow_ui']}")
print(f"  report:         {Path(steps['report']['report']).resolve()}")
actions = steps["score"].get("actions") or {}
if actions:
    print(
        f"  action list:    {actions['listed']} users in churn_actions ({actions['contacted']} to contact, "
        f"{actions['control']} control)"
    )
realised = ((steps.get("monitor") or {}).get("model_performance") or {}).get("realised") or {}
if (work / "monitor-summary.json").is_file():  # the demo's backfill + monitor of the snapshot matured on run date
    realised = {**realised, **(read_summary("monitor-summary.json")["model_performance"].get("realised") or {})}
for snap, r in sorted(realised.items()):
    print(
        f"  came true?      snapshot {snap} (model v{r['model_version']}): {r['users']} users, realised churn "
        f"{r['realised_churn_rate']:.1%}, realised ROC-AUC {r['roc_auc']:.4f} vs test {r['test_roc_auc']:.4f}"
    )
if not realised:
    print("  came true?      no scored snapshot has matured yet (see model_performance after later runs)")
