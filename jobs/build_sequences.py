"""spark-submit entry point: `spark-submit jobs/build_sequences.py --config conf/cluster.yaml ...` (see README)."""

import sys

from churn_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["build-sequences", *sys.argv[1:]]))
