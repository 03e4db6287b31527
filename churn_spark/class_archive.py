"""A class-data-sharing (AppCDS) archive of the local Spark + Delta JVM: seconds off every local Spark start.

Why: on one box most of a small job is fixed cost. A cold driver JVM loads, parses and verifies some twenty thousand
classes of Spark, Delta, Hadoop and Parquet before the first row is read; on the demo lake that is a large share of
the `build-sequences` step (benchmarks/RESULTS.md). Java 17 can write the classes a run loaded to a *dynamic archive*
(``-XX:ArchiveClassesAtExit``) and map them ready-made into later JVMs (``-XX:SharedArchiveFile``).

``make setup`` builds the archive once (:func:`ensure`): a child process runs a small real workload (a generated lake
through ``build-sequences``) in a JVM told to write the archive when it exits. :func:`java_option` is what local-mode
sessions add to the driver's options. The JVM checks the archive itself (JDK build, class path) and runs without it,
with a warning on stderr, when it does not match; a cluster (spark-submit to YARN / Kubernetes / standalone) never
uses it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

ARCHIVE = Path(sys.prefix) / "share" / "churn-spark" / "spark-classes.jsa"  # inside the venv: removed with it
MIN_BYTES = 10 << 20  # a dump smaller than this did not capture Spark


def java_option(enabled: bool = True, archive: Path | None = None) -> str:
    """The driver option that maps the archive, or '' when it is off or was never built."""
    archive = archive or ARCHIVE
    return f" -XX:SharedArchiveFile={archive}" if enabled and archive.is_file() else ""


def key() -> str:
    """What the archive depends on: the JVM build and the Spark and Delta versions (the class path's contents)."""
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    return hashlib.sha256(f"{java}|{version('pyspark')}|{version('delta-spark')}".encode()).hexdigest()


def _key_file(archive: Path) -> Path:
    return archive.with_name(archive.name + ".key")


def ensure(archive: Path | None = None) -> str:
    """Build the archive unless one for this JVM and these versions exists; returns what was done. Never raises on
    a failed build: the archive only saves time, and everything runs without it."""
    archive = archive or ARCHIVE
    want = key()
    if archive.is_file() and _key_file(archive).is_file() and _key_file(archive).read_text() == want:
        return f"up to date: {archive}"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.unlink(missing_ok=True)
    part = archive.with_name(archive.name + ".part")
    part.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="churn-spark-cds-") as work:
        run = subprocess.run(
            [sys.executable, "-m", "churn_spark.class_archive", "--workload", str(part), "--work-dir", work],
            capture_output=True,
            text=True,
        )
    if run.returncode != 0 or not part.is_file() or part.stat().st_size < MIN_BYTES:
        part.unlink(missing_ok=True)
        tail = "\n".join((run.stderr or "").strip().splitlines()[-5:])
        return f"not built (exit {run.returncode}); Spark starts without it\n{tail}"
    part.rename(archive)
    _key_file(archive).write_text(want)
    return f"built: {archive} ({archive.stat().st_size >> 20} MB)"


def workload(dump_to: Path, work_dir: str) -> None:
    """Run a tiny lake through the real build in a JVM that writes the classes it loaded to ``dump_to`` on exit."""
    from pyspark import SparkContext

    from .config import load_config
    from .generator import LakeSpec, write_lake
    from .pipeline import build_sequences
    from .session import build_session, resolve_settings

    end = dt.date(2026, 11, 2)
    cfg = load_config(None, [f"work_dir={work_dir}", "spark.master=local[2]", "snapshots.n_labelled=3"])
    _, settings = resolve_settings(cfg, {})
    options = settings.get("spark.driver.extraJavaOptions", "")
    cfg.spark.conf["spark.driver.extraJavaOptions"] = f"{options} -XX:ArchiveClassesAtExit={dump_to}"
    cfg.spark.class_archive = False  # never map an archive while writing one
    spark = build_session(cfg, app_name="churn-spark class archive")
    write_lake(spark, LakeSpec(users=40, end_date=end, weeks=30, dirty=True), cfg.lake_dir)
    build_sequences(spark, cfg, end)
    proc = SparkContext._gateway.proc
    spark.stop()
    proc.stdin.close()  # the gateway JVM exits on EOF, and writes the archive as it does
    proc.wait(timeout=600)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m churn_spark.class_archive", description=__doc__.splitlines()[0])
    p.add_argument("--workload", help=argparse.SUPPRESS)  # internal: the child process of ensure()
    p.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.workload:
        workload(Path(args.workload), args.work_dir)
        return 0
    print(f"class archive: {ensure()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
