"""Airflow DAG: the weekly churn job (jobs/weekly.py) through deploy/submit.sh, once a week.

Drop this file into the DAGs folder of an Airflow (>= 2.4; 3.x works with the standard provider) whose workers
have:
  * a checkout of the repo at CHURN_SPARK_HOME (Airflow Variable ``churn_spark_home``, default /opt/churn-spark)
    with its venv (scripts/setup_venv.sh) - submit.sh runs $VENV/bin/spark-submit from there;
  * the cluster's client config: HADOOP_CONF_DIR / YARN_CONF_DIR for YARN, a kubeconfig for k8s://.

Airflow Variables (all optional):
  churn_spark_home         repo checkout on the worker                        (default /opt/churn-spark)
  churn_spark_master       spark-submit --master                              (default yarn)
  churn_spark_deploy_mode  client | cluster                                   (default cluster)
  churn_spark_python_env   packed | local | image   (default: submit.sh's choice for the master)
  churn_spark_args         extra job arguments, e.g. "--set registry.tracking_uri=http://mlflow:5000"

Run date: ``{{ ds }}`` is the logical date, i.e. the START of the weekly data interval (the run that starts on
Monday 2026-11-09 05:00 has ds = 2026-11-02). The job receives it as --run-date; to score "as of the day the run
starts" use ``{{ data_interval_end | ds }}`` instead. Backfills re-run past weeks with their own dates, one at a
time (max_active_runs=1): Airflow 2 ``airflow dags backfill -s 2026-10-05 -e 2026-11-02 churn_spark_weekly``,
Airflow 3 ``airflow backfill create --dag-id churn_spark_weekly --from-date 2026-10-05 --to-date 2026-11-02``.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG

try:  # Airflow 3 moved the operator to the standard provider
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

# Everything configurable is read through Jinja at run time ({{ var.value... }}), not with Variable.get() at
# parse time, so parsing this file never touches the metadata DB.
WEEKLY_COMMAND = (
    "cd {{ var.value.get('churn_spark_home', '/opt/churn-spark') }} && "
    "bash deploy/submit.sh"
    " --master {{ var.value.get('churn_spark_master', 'yarn') }}"
    " --deploy-mode {{ var.value.get('churn_spark_deploy_mode', 'cluster') }}"
    "{% if var.value.get('churn_spark_python_env', '') %}"
    " --python-env {{ var.value.get('churn_spark_python_env', '') }}{% endif %}"
    " weekly --config conf/cluster.yaml --run-date {{ ds }}"
    " {{ var.value.get('churn_spark_args', '') }}"
)

default_args = {
    "owner": "churn-spark",
    # A retry resumes the same run date: the weekly job skips the steps it already recorded for that date.
    "retries": 1,
    "retry_delay": timedelta(minutes=15),
    "execution_timeout": timedelta(hours=6),
}

with DAG(
    dag_id="churn_spark_weekly",
    description="Weekly churn early-warning run (jobs/weekly.py via deploy/submit.sh)",
    schedule="0 5 * * 1",  # Mondays 05:00 UTC, like deploy/k8s/scheduled-weekly.yaml
    start_date=datetime(2026, 1, 5),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["churn-spark", "spark"],
) as dag:
    weekly = BashOperator(
        task_id="weekly",
        bash_command=WEEKLY_COMMAND,  # runs from the repo so that conf/cluster.yaml resolves
        env={"HOROVOD_GLOO_TIMEOUT_SECONDS": "300"},
        append_env=True,  # keep the worker's environment (PATH, HADOOP_CONF_DIR, JAVA_HOME, ...)
    )
