"""Faults: a driver killed mid-write, concurrent scoring runs, an earlier run date after a later one (a rank lost
mid-training: tests/test_cluster.py, with work_dir on S3)."""

import datetime as dt
import os
import signal
from pathlib import Path

import pytest
from conftest import REPO, WEEKLY_RUN, WEEKLY_SMALL, make_config
from delta.tables import DeltaTable
from faults import kill_group, start_job, wait, wait_for
from pyspark.sql import functions as F

from churn_spark.score import score

pytestmark = pytest.mark.slow
RUN = dt.date.fromisoformat(WEEKLY_RUN)
OTHER = dt.date(2026, 10, 3)  # the weekly run's test snapshot, also scoreable


def _score_args(cfg, snapshot, *extra):
    return [
        "score",
        "--config",
        str(REPO / "conf" / "local.yaml"),
        "--set",
        f"work_dir={cfg.work_dir}",
        "--set",
        "spark.conf.spark.sql.shuffle.partitions=2",
        "--snapshot",
        snapshot.isoformat(),
        *extra,
    ]


def _version(spark, path):
    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def _partition(spark, cfg, snapshot):
    return spark.read.format("delta").load(cfg.risk_table_path).where(F.col("snapshot_date") == F.lit(snapshot))


def test_driver_killed_mid_write_leaves_the_previous_version(spark, weekly_run, tmp_path):
    cfg, _ = weekly_run
    before = _version(spark, cfg.risk_table_path)
    rows_before = _partition(spark, cfg, RUN).count()
    part_dir = Path(cfg.risk_table_path, f"snapshot_date={RUN}")
    existing = set(part_dir.glob("*.parquet"))
    # the model runs before the write (the scores are persisted and ranked first); one row per data file makes the
    # write itself slow enough to be caught in the middle
    one_row_files = ("--set", "spark.conf.spark.sql.files.maxRecordsPerFile=1")
    proc = start_job(_score_args(cfg, RUN, *one_row_files), tmp_path / "score.log")
    try:
        started = wait_for(lambda: set(part_dir.glob("*.parquet")) - existing, timeout=420)
        assert started, (tmp_path / "score.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies while tasks are writing data files
    finally:
        kill_group(proc)
    assert _version(spark, cfg.risk_table_path) == before  # no commit: readers still see the previous version
    assert _partition(spark, cfg, RUN).count() == rows_before
    again = score(spark, cfg, snapshot=RUN)  # the rerun completes
    assert again.table_version == before + 1 and _partition(spark, cfg, RUN).count() == rows_before


def test_concurrent_scoring_runs_land_without_duplicates(spark, weekly_run, tmp_path):
    """Two drivers score the same snapshot while this process's session scores another one into the same tables."""
    cfg, _ = weekly_run
    n_run = _partition(spark, cfg, RUN).count()
    n_other = spark.read.format("delta").load(cfg.features_path).where(F.col("snapshot_date") == F.lit(OTHER)).count()
    logs = [tmp_path / f"score-{i}.log" for i in range(2)]
    one_core = ("--set", "spark.master=local[1]")  # two drivers and this session share the machine's two cores
    jobs = [start_job(_score_args(cfg, RUN, *one_core), log) for log in logs]
    try:
        # the other snapshot (reason codes skipped: it only has to land next to them) starts once both are scoring
        started = wait_for(lambda: all("start score" in log.read_text() for log in logs), timeout=300)
        assert started, [log.read_text()[-2000:] for log in logs]
        assert not any("job score finished" in log.read_text() for log in logs)  # so the three runs overlap
        other = score(spark, make_config(Path(cfg.work_dir), *WEEKLY_SMALL, "scoring.reasons=false"), snapshot=OTHER)
        codes = [wait(p, 600) for p in jobs]
    finally:
        for p in jobs:
            kill_group(p)
    assert codes == [0, 0], [log.read_text()[-2000:] for log in logs]
    assert other.snapshot == OTHER and other.users == n_other
    assert _partition(spark, cfg, RUN).count() == n_run  # two runs of the same snapshot: one result
    assert _partition(spark, cfg, RUN).select("user_id").distinct().count() == n_run
    assert _partition(spark, cfg, OTHER).count() == n_other  # the other snapshot landed too


def test_weekly_for_an_earlier_date_after_a_later_one_keeps_both_partitions(spark, weekly_run):
    """Run dates out of order: the later date's partition stays as it was, the earlier one lands complete."""
    from churn_spark import pipeline

    shared, _ = weekly_run
    # same work_dir; a gate no model can pass keeps the champion, so the shared run's other tests stay valid
    # a short training: this run is about the partitions, and its model is never promoted
    cfg = make_config(
        Path(shared.work_dir), *WEEKLY_SMALL, "registry.gate_margin=1.0", "training.epochs=1", "training.gbt_max_iter=2"
    )
    earlier = RUN - dt.timedelta(days=7)
    cols = ["user_id", "churn_probability", "risk_tier", "risk_rank"]
    later_rows = _partition(spark, cfg, RUN).select(cols).toPandas().sort_values("user_id").reset_index(drop=True)
    log = pipeline.weekly(spark, cfg, earlier)
    assert list(log["steps"]) == list(pipeline.STEPS) and not log["steps"]["validate"]["promoted"]
    import pandas as pd

    pd.testing.assert_frame_equal(
        _partition(spark, cfg, RUN).select(cols).toPandas().sort_values("user_id").reset_index(drop=True), later_rows
    )
    eligible = spark.read.format("delta").load(cfg.features_path).where(F.col("snapshot_date") == F.lit(earlier))
    got = _partition(spark, cfg, earlier)
    assert got.count() == eligible.count() > 0 and got.select("user_id").distinct().count() == got.count()
