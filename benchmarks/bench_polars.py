"""`churn-spark build-sequences` vs a one-process Polars implementation of the same job, timed in one run.

Why: the pandas oracle is written for clarity, so beating it says nothing about whether Spark is the right tool at
this size. ``polars_reference.py`` does the same work (read the Delta lake, validate and quarantine, build the
features, write Delta) as fast as one process can; both are timed as whole processes (wall clock, start-up included)
on the same lake, and their feature tables must be identical row by row (statics within 1e-9 relative, the float32
sequences within one float32 step), otherwise the benchmark exits 1.

The Polars side runs in its own venv (``benchmarks/.venv-polars``, created once from ``polars-requirements.txt``)
because the project venv pins pyarrow 10; it never imports ``churn_spark``. This script, run with the project venv,
turns the project's config and ``feature_spec`` into the JSON contract the reference reads, so both sides follow
the same settings.

    ../.venv/bin/python bench_polars.py --users 6000              # lake generated like `make demo`, if absent
    ../.venv/bin/python bench_polars.py --lake ../work/demo/lake  # reuse the demo's lake (read only)

On a shared machine ``--lock FILE`` holds ``flock FILE`` (the same lock as ``flock(1)``) while the lake is generated
and both sides are timed, so neither competes with other Spark jobs and the wait for the lock is not timed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "benchmarks"
sys.path.insert(0, str(REPO))
VENV = HERE / ".venv-polars"
REQUIREMENTS = HERE / "polars-requirements.txt"
CHURN_SPARK = Path(sys.executable).parent / "churn-spark"
DEMO_USERS = 6000  # the Makefile's DEMO_USERS
RUN = dt.date(2026, 11, 2)  # the Makefile's RUN_DATE
ENV = {
    "SPARK_LOCAL_IP": "127.0.0.1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYSPARK_PYTHON": sys.executable,
    "PYSPARK_DRIVER_PYTHON": sys.executable,
}


def log(msg: str) -> None:
    print(f"bench_polars: {msg}", file=sys.stderr, flush=True)


def ensure_venv() -> Path:
    """The Polars venv, (re)built only when polars-requirements.txt changed since it was last installed."""
    python = VENV / "bin" / "python"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = VENV / ".requirements.sha256"
    if python.exists() and stamp.is_file() and stamp.read_text() == want:
        return python
    log(f"creating {VENV} from {REQUIREMENTS.name}")
    base = getattr(sys, "_base_executable", sys.executable)  # the interpreter the project venv was made from
    subprocess.run([base, "-m", "venv", "--clear", str(VENV)], check=True, stdout=sys.stderr)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True, stdout=sys.stderr)
    stamp.write_text(want)
    return python


def config_args(work_dir: Path, lake: Path) -> list[str]:
    return [
        "--config",
        str(REPO / "conf" / "local.yaml"),
        "--set",
        f"work_dir={work_dir}",
        "--set",
        f"lake_root={lake}",
    ]


@contextlib.contextmanager
def held(lock: str | None):
    """An exclusive flock(2) on ``lock`` for the block (nothing when None)."""
    if not lock:
        yield
        return
    with open(lock, "a") as f:
        log(f"waiting for {lock}")
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_lake(work_dir: Path, lake: Path, users: int, run_date: dt.date) -> None:
    """Generate the lake like `make demo` does (dirty rows included) unless one is already there."""
    if (lake / "orders" / "_delta_log").is_dir():
        return
    log(f"generating a {users}-user lake in {lake}")
    cmd = ["generate-lake", *config_args(work_dir, lake), "--users", str(users)]
    cmd += ["--end-date", run_date.isoformat(), "--dirty"]
    subprocess.run([str(CHURN_SPARK), *cmd], check=True, cwd=REPO, env={**os.environ, **ENV}, stdout=sys.stderr)


def contract(work_dir: Path, lake: Path, run_date: dt.date) -> dict:
    """Everything the Polars reference needs, taken from the project's own config and feature contract."""
    from churn_spark.config import load_config
    from churn_spark.feature_spec import (
        CATEGORICAL_STATIC,
        EVENT_CHANNEL,
        FEATURE_STATIC,
        channels_for,
        normalise_statuses,
        snapshot_plan,
    )
    from churn_spark.lake import CANONICAL

    cfg = load_config([str(REPO / "conf" / "local.yaml")], [f"work_dir={work_dir}", f"lake_root={lake}"])
    s = cfg.snapshots
    plan = snapshot_plan(run_date, s.horizon_days, s.step_days, s.n_labelled)  # = sequences.plan_for
    return {
        "run_date": run_date.isoformat(),
        "clock": (cfg.clock or run_date).isoformat(),
        "sources": {
            name: {
                "path": str(Path(cfg.source_location(name)).resolve()),
                "table": src.table,
                "format": src.format,
                "columns": src.columns,
                "timezone": src.timezone,
                "timestamp_format": src.timestamp_format,
            }
            for name, src in cfg.sources.items()
        },
        "canonical": {name: CANONICAL[name] for name in cfg.sources},
        "validation": {
            "max_bad_fraction": cfg.validation.max_bad_fraction,
            "event_types": list(cfg.validation.event_types),  # ingest compares them as configured
            "purchase_statuses": list(normalise_statuses(cfg.validation.purchase_statuses)),
            "return_statuses": list(normalise_statuses(cfg.validation.return_statuses)),
        },
        "n_buckets": cfg.sequence.n_buckets,
        "bucket_days": cfg.sequence.bucket_days,
        "long_buckets": cfg.sequence.long_buckets,
        "long_bucket_days": cfg.sequence.long_bucket_days,
        "lookback_days": cfg.lookback_days,
        "horizon_days": s.horizon_days,
        "churn_definition": s.churn_definition,
        "channels": channels_for(list(cfg.sources)),
        "event_channel": EVENT_CHANNEL,
        "numeric_static": FEATURE_STATIC,  # the rhythm statics included
        "categorical_static": CATEGORICAL_STATIC,
        "snapshots": {d.isoformat(): split for d, split in sorted(plan.items())},
        "features_path": cfg.features_path,
    }


def timed_run(cmd: list[str], ok: tuple = (0,), **kw) -> tuple[subprocess.CompletedProcess, float]:
    """Run a command, capturing its output; wall-clock seconds of the whole process."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    wall = time.perf_counter() - t0
    if out.returncode not in ok:
        log(out.stderr[-4000:])
        raise SystemExit(f"bench_polars: {' '.join(cmd[:3])} ... failed with exit {out.returncode}")
    return out, wall


def last_json(text: str) -> dict:
    """The JSON document a command printed last on stdout (churn-spark prints it indented, the reference on a line)."""
    return json.loads(text[text.index("{") :])


def run(python: Path, work_dir: Path, lake: Path, users: int, run_date: dt.date, spark_sets=()) -> dict:
    """Generate the lake if needed, time both jobs on it, compare their outputs; the result as a dict."""
    ensure_lake(work_dir, lake, users, run_date)
    c = contract(work_dir, lake, run_date)
    polars_dir = work_dir / "polars"
    polars_dir.mkdir(exist_ok=True)
    contract_file = polars_dir / "contract.json"
    contract_file.write_text(json.dumps(c, indent=1))

    log("timing churn-spark build-sequences")
    sets = [arg for kv in spark_sets for arg in ("--set", kv)]
    build = ["build-sequences", *config_args(work_dir, lake), *sets, "--run-date", run_date.isoformat()]
    spark, spark_wall = timed_run([str(CHURN_SPARK), *build], cwd=REPO, env={**os.environ, **ENV})
    (work_dir / "spark-build-sequences.log").write_text(spark.stderr)
    spark_summary = last_json(spark.stdout)
    step = re.search(r"end build_sequences in ([0-9.]+)s", spark.stderr)

    log("timing polars_reference.py build")
    ref = [str(python), str(HERE / "polars_reference.py")]
    polars, polars_wall = timed_run([*ref, "build", "--contract", str(contract_file), "--out", str(polars_dir)])
    polars_summary = last_json(polars.stdout)

    log("comparing the feature tables")
    cmp_cmd = [*ref, "compare", "--contract", str(contract_file), "--spark", c["features_path"]]
    cmp, _ = timed_run([*cmp_cmd, "--polars", str(polars_dir / "features")], ok=(0, 1))  # 1: not equal
    comparison = last_json(cmp.stdout)

    fields = ("rows_in", "used", "quarantined", "deduplicated", "by_reason")
    spark_ingest = {n: {k: v[k] for k in fields} for n, v in spark_summary["ingest"].items()}
    polars_ingest = {n: {k: v[k] for k in fields} for n, v in polars_summary["ingest"].items()}
    ingest_equal = spark_ingest == polars_ingest
    result = {
        "lake": str(lake),
        "run_date": run_date.isoformat(),
        "lake_users": spark_ingest.get("users", {}).get("rows_in"),
        "input_rows": sum(v["rows_in"] for v in spark_ingest.values()),
        "validated_rows": sum(v["used"] for v in spark_ingest.values()),
        "spark_wall_s": round(spark_wall, 2),
        "spark_build_step_s": float(step.group(1)) if step else None,  # inside the job: no JVM/session start-up
        "polars_wall_s": round(polars_wall, 2),
        "polars_phases_s": polars_summary["seconds"],
        "ratio_spark_over_polars": round(spark_wall / polars_wall, 2),
        "spark_rows": comparison["spark_rows"],
        "polars_rows": comparison["polars_rows"],
        "equal": comparison["equal"] and ingest_equal,
        "features_equal": comparison["equal"],
        "ingest_counts_equal": ingest_equal,
        "max_abs_diff": comparison["max_abs_diff"],
        "mismatches": comparison["mismatches"],
        "only_spark": comparison["only_spark"],
        "only_polars": comparison["only_polars"],
        "spark_overrides": list(spark_sets),
        "polars": polars_summary["polars"],
        "cores": os.cpu_count(),
    }
    if not ingest_equal:
        result["ingest"] = {"spark": spark_ingest, "polars": polars_ingest}
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=DEMO_USERS, help="users of a lake generated here (default: demo's)")
    p.add_argument("--work-dir", type=Path, help="outputs of both sides (default: work/bench/polars-u<users>)")
    p.add_argument("--lake", type=Path, help="lake to read (default: <work-dir>/lake, generated if absent)")
    p.add_argument("--run-date", type=dt.date.fromisoformat, default=RUN)
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the Spark side only, e.g. spark.class_archive=false (repeatable)",
    )
    p.add_argument("--lock", help="hold `flock LOCK` while generating and timing (machines shared with Spark jobs)")
    a = p.parse_args()
    work_dir = (a.work_dir or REPO / "work" / "bench" / f"polars-u{a.users}").resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    python = ensure_venv()
    with held(a.lock):
        result = run(python, work_dir, (a.lake or work_dir / "lake").resolve(), a.users, a.run_date, a.sets)
    print(json.dumps(result))
    return 0 if result["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
