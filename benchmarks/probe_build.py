"""Probe of the sequence build's two halves in one warm session: ``lake.ingest``, then the feature build into a
``noop`` sink twice (the first pass is what a job pays; the second shows the warm cost). No Delta write, no Polars:
for A/B of a change to ingest or the features, run it once per code tree on the same lake.

    ../.venv/bin/python probe_build.py --lake /tmp/polars-bench/u6000/lake [--code /path/to/other/checkout]

``--code`` puts another checkout's ``churn_spark`` first on the path, for the driver and the Python workers alike.
Prints one JSON line: the churn_spark probed, seconds for ingest and for each feature pass.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from common import RUN, session, timed
from common import config as bench_config

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True, help="a generated lake (e.g. bench_polars.py's)")
    ap.add_argument("--code", help="a checkout whose churn_spark is probed instead of this one")
    ap.add_argument("--work-dir", default="/tmp/churn-probe-build")
    args = ap.parse_args()
    if args.code:  # after common put this checkout on the path
        sys.path.insert(0, os.path.abspath(args.code))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.abspath(args.code), os.getenv("PYTHONPATH")]))
    from churn_spark import lake, sequences

    cfg = bench_config(0, f"work_dir={args.work_dir}", f"lake_root={args.lake}")
    spark = session(cfg)
    res, ingest_s = timed(lake.ingest, spark, cfg, "probe", RUN)
    features = sequences.build_from_config(spark, cfg, res.tables, RUN)
    passes = [timed(features.write.format("noop").mode("overwrite").save)[1] for _ in range(2)]
    out = {"churn_spark": os.path.dirname(lake.__file__), "ingest_s": round(ingest_s, 1)}
    out.update(features_first_s=round(passes[0], 1), features_second_s=round(passes[1], 1))
    print(json.dumps(out))
