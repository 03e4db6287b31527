"""Entry point of the ScheduledSparkApplication (deploy/k8s/scheduled-weekly.yaml): the weekly job for today.

jobs/weekly.py requires --run-date, and a ScheduledSparkApplication cannot put the date of each run into its
arguments, so this adds ``--run-date <today, UTC>`` unless the arguments already carry one. Everything else is
jobs/weekly.py: same arguments, same exit codes. A retry on the same day resumes the same run (the weekly job
skips the steps already recorded for that date).
"""

import datetime as dt
import sys

from churn_spark.cli import main


def with_run_date(args, today=None):
    if any(a == "--run-date" or a.startswith("--run-date=") for a in args):
        return list(args)
    today = today or dt.datetime.now(dt.timezone.utc).date()
    return [*args, "--run-date", today.isoformat()]


if __name__ == "__main__":
    sys.exit(main(["weekly", *with_run_date(sys.argv[1:])]))
