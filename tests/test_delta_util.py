"""Lineage versions come from our own commit, not from "the newest commit" (another writer's under concurrency)."""

from churn_spark.delta_util import commit_metadata, commit_user_metadata, latest_version, new_write_id, write_version


def _append(spark, path, value, meta):
    spark.createDataFrame([(value,)], "v int").write.format("delta").mode("append").option("userMetadata", meta).save(
        path
    )


def test_write_version_finds_our_commit_after_another_writer_committed(spark, tmp_path):
    path = str(tmp_path / "t")
    mine = new_write_id()
    _append(spark, path, 1, commit_metadata(mine, contract={"n_buckets": 26}))
    _append(spark, path, 2, commit_metadata(new_write_id()))  # another writer lands right after us
    assert latest_version(spark, path) == 1
    assert write_version(spark, path, mine) == 0  # history(1) would have said 1
    assert commit_user_metadata(spark, path, 0)["contract"] == {"n_buckets": 26}
