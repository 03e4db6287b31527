"""Logs go to stderr and stdout carries only the JSON summary, also under plain `spark-submit app.py`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyspark

REPO = Path(__file__).resolve().parent.parent


def test_spark_submit_keeps_logs_off_stdout(tmp_path):
    # Spark's PythonRunner merges the Python driver's stderr into its stdout; the summary must still parse alone
    app = tmp_path / "app.py"
    app.write_text(
        "import json, sys\nfrom churn_spark.logs import LOG, setup_logging\nsetup_logging()\n"
        "LOG.info('a project log line')\nprint('a stray stderr line', file=sys.stderr)\n"
        "print(json.dumps({'summary': 1}))\n"
    )
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(REPO), "SPARK_LOCAL_IP": "127.0.0.1"}
    r = subprocess.run(
        [str(Path(pyspark.__file__).parent / "bin" / "spark-submit"), "--conf", "spark.ui.enabled=false", str(app)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == {"summary": 1}
    assert "INFO churn_spark: a project log line" in r.stderr and "a stray stderr line" in r.stderr
