"""``churn-spark <job>``: the one command-line front end, shared by the console script and ``jobs/*.py``.

Every job takes ``--config FILE`` (repeatable, after conf/default.yaml) and ``--set key=value`` (repeatable), builds
the SparkSession from the config (keeping whatever spark-submit set), runs one library call and prints a JSON
summary on stdout. Exit code (``errors``): 0 success, 2 bad configuration or input (do not retry), 3 transient
infrastructure (retry), 1 any other failure (a bug).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import TYPE_CHECKING, List, Optional

from .config import Config, ConfigError, load_config
from .errors import EXIT_BAD_INPUT, EXIT_TRANSIENT, exit_code
from .logs import LOG, setup_logging

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

JOBS = (
    "generate-lake",
    "build-sequences",
    "train",
    "validate",
    "score",
    "monitor",
    "weekly",
    "forget",
    "sql-server",
    "backfill",
)


def _date(s: str) -> dt.date:
    try:
        return dt.date.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {s!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="churn-spark", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="job", required=True)
    for job in JOBS:
        s = sub.add_parser(job)
        s.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML profile (repeatable)")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
        if job == "generate-lake":
            s.add_argument(
                "--profile",
                choices=("demo", "sparse"),
                default="demo",
                help="demo: dense users/orders/events/reviews lake; sparse: orders only, mostly one-time buyers "
                "(read it with conf/sparse.yaml)",
            )
            s.add_argument("--users", type=int, default=20_000)
            s.add_argument("--weeks", type=int, help="history length (default: 78 demo, 156 sparse)")
            s.add_argument("--end-date", type=_date, default=dt.date(2026, 11, 2))
            s.add_argument("--seed", type=int, default=42)
            s.add_argument("--dirty", action="store_true", help="inject realistic bad rows")
            s.add_argument("--csv", action="store_true", help="write orders/events as CSV")
        elif job == "forget":
            who = s.add_mutually_exclusive_group(required=True)
            who.add_argument("--users", metavar="FILE", help="file with one user id per line")
            who.add_argument("--user", metavar="ID", help="one user id")
            s.add_argument(
                "--include-sources", action="store_true", help="also delete the users from the Delta lake sources"
            )
        elif job == "backfill":
            s.add_argument("--from", dest="start", type=_date, required=True, help="first snapshot (YYYY-MM-DD)")
            s.add_argument("--to", dest="end", type=_date, required=True, help="last snapshot, inclusive")
            s.add_argument("--every", type=int, default=7, help="days between snapshots (default 7)")
            s.add_argument("--model-version", help="registered version (default: the champion)")
            s.add_argument("--force", action="store_true", help="rescore snapshots already scored by that version")
        elif job == "sql-server":
            s.add_argument("--host", help="interface to bind (default sql_server.host, 127.0.0.1)")
            s.add_argument("--port", type=int, help="Thrift/JDBC port (default sql_server.port, 10000)")
        else:
            s.add_argument(
                "--run-date",
                type=_date,
                required=job not in ("score", "validate"),
                help="snapshot date to score / run for (YYYY-MM-DD)",
            )
        if job == "validate":
            s.add_argument("--model-version", help="version to validate (default: the challenger alias)")
        if job == "score":
            s.add_argument("--snapshot", type=_date, help="score this snapshot (default: --run-date or the latest)")
            s.add_argument("--model-version", help="registered version (default: the champion)")
        if job == "monitor":
            s.add_argument("--force", action="store_true", help="recompute every matured snapshot")
        if job == "weekly":
            s.add_argument("--force", action="store_true", help="redo steps already recorded for this date")
    return p


def run(args: argparse.Namespace) -> dict:
    cfg = load_config(args.config, args.set)
    if args.job == "sql-server":  # builds its own session (own metastore, Thrift settings)
        from .sql_server import serve

        return serve(cfg, host=args.host, port=args.port)
    from .session import build_session

    spark = build_session(cfg, app_name=f"churn-spark {args.job}")
    if args.job == "generate-lake":
        return _generate_lake(spark, cfg, args)
    from . import pipeline

    if args.job == "forget":
        from .privacy import forget, read_ids

        return forget(spark, cfg, read_ids(args.users, args.user), include_sources=args.include_sources)
    if args.job == "backfill":
        from .backfill import backfill

        return {
            **backfill(spark, cfg, args.start, args.end, args.every, args.model_version, args.force),
            "risk_table": cfg.risk_table_path,
        }
    if args.job == "monitor":
        from .monitoring import update_model_performance

        return {"model_performance": update_model_performance(spark, cfg, args.run_date, force=args.force)}
    if args.job == "build-sequences":
        return pipeline.build_sequences(spark, cfg, args.run_date)
    if args.job == "train":
        return pipeline.train_step(spark, cfg, args.run_date)
    if args.job == "validate":
        return pipeline.validate_step(spark, cfg, args.run_date, args.model_version)
    if args.job == "score":
        from .score import score

        r = score(spark, cfg, snapshot=args.snapshot or args.run_date, model_version=args.model_version)
        return {
            "snapshot": r.snapshot.isoformat(),
            "users": r.users,
            "tiers": r.tiers,
            "risk_table": cfg.risk_table_path,
            "table_version": r.table_version,
            "model_version": r.model_version,
            "users_per_s": round(r.users_per_s, 1),
            "actions": r.actions,
        }
    out = pipeline.weekly(spark, cfg, args.run_date, force=args.force)
    return {
        **out,
        "risk_table": cfg.risk_table_path,
        "catalog_table": cfg.scoring.catalog_table,
        "mlflow_ui": f"mlflow ui --backend-store-uri {cfg.tracking_uri}",
    }


def _generate_lake(spark: "SparkSession", cfg: Config, args: argparse.Namespace) -> dict:
    """Write the demo or the sparse lake; the sparse summary also holds its shape (one-time share, churn rate)."""
    common = dict(users=args.users, end_date=args.end_date, seed=args.seed, dirty=args.dirty, csv=args.csv)
    if args.profile == "demo":
        from .generator import LakeSpec, write_lake

        spec = LakeSpec(**common, weeks=LakeSpec.weeks if args.weeks is None else args.weeks)
        counts = write_lake(spark, spec, cfg.lake_dir)
        return {"lake": cfg.lake_dir, "rows": counts, "end_date": spec.end_date.isoformat()}
    from .generator_sparse import SparseSpec, lake_shape, simulate, write_sparse_lake

    spec = SparseSpec(**common, weeks=SparseSpec.weeks if args.weeks is None else args.weeks)
    counts = write_sparse_lake(spark, spec, cfg.lake_dir)
    return {
        "lake": cfg.lake_dir,
        "profile": "sparse",
        "rows": counts,
        "end_date": spec.end_date.isoformat(),
        "shape": lake_shape(simulate(spec), spec, cfg.validation.purchase_statuses),
        "read_with": "--config conf/sparse.yaml",
    }


def main(argv: Optional[List[str]] = None) -> int:
    setup_logging()
    args = parser().parse_args(argv)
    t0 = time.time()
    LOG.info("job %s starting", args.job)
    try:
        summary = run(args)
    except ConfigError as e:
        LOG.error("configuration error: %s", e)
        print(f"churn-spark: configuration error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:
        code = exit_code(e)
        LOG.exception(
            "job %s failed after %.1fs (exit %d: %s)",
            args.job,
            time.time() - t0,
            code,
            {EXIT_BAD_INPUT: "bad input, do not retry", EXIT_TRANSIENT: "transient, retry"}.get(code, "bug"),
        )
        print(f"churn-spark {args.job}: FAILED: {e}", file=sys.stderr)
        return code
    LOG.info("job %s finished in %.1fs", args.job, time.time() - t0)
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
