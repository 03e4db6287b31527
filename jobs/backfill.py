"""spark-submit entry point: `spark-submit jobs/backfill.py --config conf/cluster.yaml --from D1 --to D2`."""

import sys

from churn_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["backfill", *sys.argv[1:]]))
