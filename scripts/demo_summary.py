"""Print where the demo's outputs are (risk table, catalog view, MLflow UI, report) after `make demo`."""

import json
import sys
from pathlib import Path

work, run_date = Path(sys.argv[1]).resolve(), sys.argv[2]
text = (work / "weekly-summary.json").read_text()  # Spark's Ivy resolver may print a line before the JSON
summary = json.loads(text[text.index("\n{") + 1 if not text.startswith("{") else 0 :])
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
