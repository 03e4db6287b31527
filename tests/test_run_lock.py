"""The weekly run lock on a real Delta table: one winner, a clear refusal naming the owner, release, stale takeover."""

import threading
import time

import pytest

from churn_spark.errors import EXIT_TRANSIENT, exit_code
from churn_spark.run_lock import RunLocked, acquire, held, release


def test_second_run_is_refused_with_the_owner_until_the_first_releases(spark, tmp_path):
    path = str(tmp_path / "lock")
    first = acquire(spark, path, "weekly", stale_after_s=600)
    with pytest.raises(RunLocked, match=f"owner {first[:8]} on host .* pid") as e:
        acquire(spark, path, "weekly", stale_after_s=600)
    assert exit_code(e.value) == EXIT_TRANSIENT
    other = acquire(spark, path, "other-lock", stale_after_s=600)  # another lock name is independent
    release(spark, path, "weekly", first)
    second = acquire(spark, path, "weekly", stale_after_s=600)
    assert second not in (first, other)


def test_a_stale_lock_is_taken_over(spark, tmp_path):
    path = str(tmp_path / "lock")
    acquire(spark, path, "weekly", stale_after_s=600)  # a driver that crashed: never released
    time.sleep(1.2)
    assert acquire(spark, path, "weekly", stale_after_s=1.0)  # heartbeat older than 1 s: taken over


def test_concurrent_acquirers_have_exactly_one_winner(spark, tmp_path):
    path = str(tmp_path / "lock")
    acquire(spark, path, "seed", stale_after_s=600)  # the table exists: both race on the MERGE
    results, barrier = [], threading.Barrier(2)

    def contender():
        barrier.wait()
        try:
            results.append(acquire(spark, path, "weekly", stale_after_s=600))
        except RunLocked as e:
            results.append(e)

    threads = [threading.Thread(target=contender) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, str) for r in results) == 1, results


def test_held_releases_on_error(spark, tmp_path):
    path = str(tmp_path / "lock")
    with pytest.raises(ZeroDivisionError):
        with held(spark, path, "weekly", stale_after_s=600, heartbeat_s=0.2):
            time.sleep(0.5)  # a heartbeat or two
            1 / 0
    assert acquire(spark, path, "weekly", stale_after_s=600)
