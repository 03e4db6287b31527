"""The staged training data's reuse rule: the same run and settings find it, any setting it depends on moves it to
another directory, and a manifest whose shards are gone is not trusted. (A real rerun reusing it: test_training.py
and the cluster test.)"""

import datetime as dt
import json

from conftest import make_config

from churn_spark import staging
from churn_spark.preprocess import FeatureStats

RUN = dt.date(2026, 11, 2)


def _stats() -> FeatureStats:
    return FeatureStats(
        channels=["orders"],
        n_buckets=2,
        seq_mean=[0.0],
        seq_std=[1.0],
        static_mean=[0.5],
        static_std=[1.0],
        vocab={"country": ["DE"], "channel": ["web"]},
        numeric_inputs=["lifetime_orders"],
    )


def _write(path, files, rows=(3, 2)):
    for f in files:
        with open(f, "wb") as fh:
            fh.write(b"PAR1")
    manifest = {"stats": _stats().to_json(), "shards": {"train": [[files[0]], [files[1]]]}, "rows": {"train": rows}}
    (path / staging.MANIFEST).write_text(json.dumps(manifest))


def test_the_directory_is_keyed_by_what_the_staged_data_depends_on(tmp_path):
    cfg = make_config(tmp_path)
    same = staging.staging_dir(make_config(tmp_path), RUN, 3)
    assert staging.staging_dir(cfg, RUN, 3) == same and "2026-11-02-fv3-" in same
    others = {
        staging.staging_dir(cfg, RUN, 4),  # another feature table version
        staging.staging_dir(cfg, RUN - dt.timedelta(days=7), 3),  # another snapshot plan
        staging.staging_dir(make_config(tmp_path, "training.num_proc=3"), RUN, 3),  # other shards
        staging.staging_dir(make_config(tmp_path, "training.input_clip=5"), RUN, 3),  # other statistics
        staging.staging_dir(make_config(tmp_path, "sequence.n_buckets=13"), RUN, 3),
        staging.staging_dir(make_config(tmp_path, "snapshots.horizon_days=60"), RUN, 3),
    }
    assert same not in others and len(others) == 6
    # what only the network or the baselines use does not move it: a rerun with more epochs reuses the data
    assert staging.staging_dir(make_config(tmp_path, "training.epochs=9", "training.gbt_max_iter=2"), RUN, 3) == same


def test_reused_only_with_its_manifest_and_every_shard(tmp_path):
    assert staging.load_staged(str(tmp_path)) is None  # nothing staged yet
    files = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    _write(tmp_path, files)
    got = staging.load_staged(str(tmp_path))
    assert got is not None and got.reused
    assert got.shards["train"] == [[files[0]], [files[1]]] and got.rows["train"] == [3, 2]
    assert got.stats == _stats()
    (tmp_path / "b.parquet").unlink()  # a shard deleted since: staged again rather than trained on less
    assert staging.load_staged(str(tmp_path)) is None
    (tmp_path / staging.MANIFEST).write_text("{not json")
    assert staging.load_staged(str(tmp_path)) is None
