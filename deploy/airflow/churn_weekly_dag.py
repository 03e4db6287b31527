"""Airflow DAG: the weekly churn job (jobs/weekly.py) through deploy/submit.sh, once a week.

Drop this file into the DAGs folder of an Airflow (>= 2.4; 3.x works with the standard provider) whose workers
have:
  * a checkout of the repo at CHURN_SPARK_HOME (Airflow Variable ``churn_spark_home``, default /opt/churn-spark)
    with its venv (scripts/setup_venv.sh) - submit.sh runs $VENV/bin/spark-submit from there;
  * the cluster's client config: HADOOP_CONF_DIR / YARN_CONF_DIR for YARN, a kubeconfig for k8s://.

Airflow Variables (all optional):
  churn_spark_home         repo checkout on the worker                        (default /opt/churn-spark)
  churn_spark_master       spark-submit --master                              (default yarn)
  churn_spark_deploy_mode  client | cluster                                   (default client, see below)
  churn_spark_python_env   packed | local | image   (default: submit.sh's choice for the master)
  churn_spark_work_dir     where every output lives               (default s3a://my-bucket/churn-spark: edit it)
  churn_spark_args         extra job arguments, e.g. "--set registry.tracking_uri=http://mlflow:5000"

Storage: work_dir is an object-storage prefix (s3a://, abfss://, gs://, hdfs://); nothing needs to be mounted on
the workers or the cluster nodes. S3 credentials come from the default chain where the driver and executors run
(instance role, AWS_* environment variables) or from spark.hadoop.fs.s3a.* keys in an extra profile kept out of
the repo (passed in churn_spark_args). An S3-compatible store also needs spark.hadoop.fs.s3a.endpoint and
path.style.access (deploy/README.md).
In client mode the driver runs on the Airflow worker: without registry.tracking_uri, MLflow's SQLite file would
stay on that worker's disk, so give the job a tracking server.

Retries: the job exits 2 for bad input or configuration (a retry cannot help), 3 for transient infrastructure
(storage, network, a lost executor, another run holding the lock) and 1 for a bug. Only exit 3 is retried; any
other failure raises AirflowFailException, which fails the task at once whatever ``retries`` says. spark-submit
passes the job's exit code on only when the driver runs here (``--deploy-mode client``, the default below); in
YARN cluster mode spark-submit exits 1 for every failed application, so nothing would be retried.

Run date: ``{{ ds }}`` is the logical date, i.e. the START of the weekly data interval (the run that starts on
Monday 2026-11-09 05:00 has ds = 2026-11-02). The job receives it as --run-date; to score "as of the day the run
starts" use ``{{ data_interval_end | ds }}`` instead. Backfills re-run past weeks with their own dates, one at a
time (max_active_runs=1): Airflow 2 ``airflow dags backfill -s 2026-10-05 -e 2026-11-02 churn_spark_weekly``,
Airflow 3 ``airflow backfill create --dag-id churn_spark_weekly --from-date 2026-10-05 --to-date 2026-11-02``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow import DAG
from airflow.exceptions import AirflowException, AirflowFailException

try:  # Airflow 3: the task SDK and the standard provider
    from airflow.providers.standard.hooks.subprocess import SubprocessHook
    from airflow.sdk import BaseOperator
except ImportError:  # Airflow 2
    from airflow.hooks.subprocess import SubprocessHook
    from airflow.models.baseoperator import BaseOperator

# churn_spark.errors: 0 ok, 1 bug, 2 bad input or configuration, 3 transient infrastructure (the only retryable one)
EXIT_TRANSIENT = 3
EXIT_MEANING = {1: "a bug", 2: "bad input or configuration", EXIT_TRANSIENT: "transient infrastructure"}

# Everything configurable is read through Jinja at run time ({{ var.value... }}), not with Variable.get() at
# parse time, so parsing this file never touches the metadata DB.
WEEKLY_COMMAND = (
    "cd {{ var.value.get('churn_spark_home', '/opt/churn-spark') }} && "
    "bash deploy/submit.sh"
    " --master {{ var.value.get('churn_spark_master', 'yarn') }}"
    " --deploy-mode {{ var.value.get('churn_spark_deploy_mode', 'client') }}"
    "{% if var.value.get('churn_spark_python_env', '') %}"
    " --python-env {{ var.value.get('churn_spark_python_env', '') }}{% endif %}"
    " weekly --config conf/cluster.yaml --run-date {{ ds }}"
    " --set work_dir={{ var.value.get('churn_spark_work_dir', 's3a://my-bucket/churn-spark') }}"
    " {{ var.value.get('churn_spark_args', '') }}"
)


def raise_for_exit_code(code: int) -> None:
    """Leave only transient failures (exit 3) to Airflow's retries; fail every other failure at once."""
    if code == 0:
        return
    meaning = EXIT_MEANING.get(code, "killed or failed outside the job")
    if code == EXIT_TRANSIENT:
        raise AirflowException(f"churn-spark job failed with exit code {code} ({meaning}): retrying")
    raise AirflowFailException(f"churn-spark job failed with exit code {code} ({meaning}): not retried, see the log")


class ChurnSparkJob(BaseOperator):
    """A bash command (submit.sh) whose exit code decides between retry and failure (``raise_for_exit_code``).

    BashOperator turns every non-zero exit into the same retryable error, so this runs the command with Airflow's
    SubprocessHook (output goes to the task log; the process group is terminated on kill or timeout) instead.
    """

    template_fields = ("bash_command",)

    def __init__(self, *, bash_command: str, env: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.bash_command = bash_command
        self.env = dict(env or {})
        self._hook = None

    def execute(self, context):
        self._hook = SubprocessHook()
        # keep the worker's environment (PATH, HADOOP_CONF_DIR, JAVA_HOME, ...) and add ours
        result = self._hook.run_command(["bash", "-c", self.bash_command], env={**os.environ, **self.env})
        raise_for_exit_code(result.exit_code)

    def on_kill(self):
        if self._hook is not None:
            self._hook.send_sigterm()


default_args = {
    "owner": "churn-spark",
    # Only exit code 3 comes back for a retry (see raise_for_exit_code); it resumes the same run date: the weekly
    # job skips the steps it already recorded for that date.
    "retries": 2,
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
    weekly = ChurnSparkJob(
        task_id="weekly",
        bash_command=WEEKLY_COMMAND,  # runs from the repo so that conf/cluster.yaml resolves
        env={"HOROVOD_GLOO_TIMEOUT_SECONDS": "300"},
    )
