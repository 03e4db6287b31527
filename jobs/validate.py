"""spark-submit entry point: `spark-submit jobs/validate.py --config conf/cluster.yaml ...` (see README)."""

import sys

from churn_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["validate", *sys.argv[1:]]))
