"""A "notebook" in its own process: a Spark session on the external Hive metastore at argv[2] (thrift URI), with the
project's config from argv[1] (work_dir), prints the tables of the churn database and the row count of
churn.churn_risk as JSON. Used by tests/test_sql_server.py to show that registrations made by `churn-spark
sql-server` live in the metastore, not in the process that made them."""

import json
import sys

from churn_spark.config import load_config
from churn_spark.session import build_session

work_dir, uri = sys.argv[1], sys.argv[2]
cfg = load_config(
    [],
    [
        f"work_dir={work_dir}",
        "spark.conf.spark.sql.catalogImplementation=hive",
        f"spark.conf.spark.hadoop.hive.metastore.uris={uri}",
        "spark.conf.spark.ui.enabled=false",
        "spark.conf.spark.driver.memory=1g",
    ],
)
spark = build_session(cfg, app_name="metastore reader")
tables = sorted(r.tableName for r in spark.sql("SHOW TABLES IN churn").collect())
count = spark.sql("SELECT count(*) AS n FROM churn.churn_risk").first()["n"]
latest = spark.sql("SELECT count(*) AS n FROM churn.churn_risk_latest").first()["n"]
print(json.dumps({"tables": tables, "churn_risk": count, "churn_risk_latest": latest}))
spark.stop()
