"""Training-side files on an object store, against a real S3-compatible server (S3Proxy), no Spark: the ranks'
Parquet shards, rank-0 checkpoints (upload, state.json last, resume by download), rank error files, model bundles
(verified on the downloaded bytes) and the zipped bundle the scoring workers download."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from s3_server import SECRET_KEY

from churn_spark import storage

T, CHANNELS = 4, ["orders", "events"]


def _stats():
    from churn_spark.feature_spec import NUMERIC_STATIC
    from churn_spark.preprocess import FeatureStats

    return FeatureStats(
        channels=CHANNELS,
        n_buckets=T,
        seq_mean=[0.0] * len(CHANNELS),
        seq_std=[1.0] * len(CHANNELS),
        static_mean=[0.0] * len(NUMERIC_STATIC),
        static_std=[1.0] * len(NUMERIC_STATIC),
        vocab={"country": ["de", "fr"], "channel": ["web"]},
    )


def _rows(n: int, seed: int = 0) -> pd.DataFrame:
    from churn_spark.feature_spec import NUMERIC_STATIC

    rng = np.random.default_rng(seed)
    pdf = pd.DataFrame({"user_id": np.arange(n), "label": rng.integers(0, 2, n).astype(np.int32)})
    pdf["sequence"] = [rng.poisson(2.0, T * len(CHANNELS)).astype(np.float64) for _ in range(n)]
    for c in NUMERIC_STATIC:
        pdf[c] = rng.integers(0, 50, n).astype(np.float64)
    pdf["country"] = rng.choice(["de", "fr", "it"], n)
    pdf["channel"] = "web"
    return pdf


def _model(stats, seed: int = 1):
    from churn_spark.config import TrainingConf
    from churn_spark.model import model_from_config

    t = {**TrainingConf().model_dump(), "conv_filters": 4, "rnn_units": 4, "dense_units": 4, "seed": seed}
    model = model_from_config(t, stats.n_buckets, len(stats.channels), stats.n_static)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model


def test_ranks_read_their_parquet_shards_from_the_uri(s3):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from churn_spark.distributed import assign_shards, batches, shard_rows

    staging = "s3a://lake/work/staging/train"
    fs, inner = storage.filesystem(staging)
    for i, n in enumerate([30, 20, 10]):
        pq.write_table(pa.Table.from_pandas(_rows(n, i)), f"{inner}/part-0000{i}.snappy.parquet", filesystem=fs)
    storage.write_text(f"{staging}/_SUCCESS", "")
    files = storage.ls(staging, "part-*.parquet")
    assert files == [f"{staging}/part-0000{i}.snappy.parquet" for i in range(3)]
    shards = assign_shards(files, 2)
    assert sorted(shard_rows(s) for s in shards) == [30, 30]
    inputs, y, w = next(batches(shards[1], _stats(), 8, 3.0, seed=0))
    assert inputs["sequence"].shape == (8, T, len(CHANNELS)) and inputs["static"].shape[0] == 8
    assert set(np.unique(w)) <= {1.0, 3.0} and np.array_equal(w == 3.0, y > 0.5)


def test_checkpoint_is_uploaded_state_last_and_a_rerun_resumes_from_it(s3):
    from churn_spark.checkpoint import CheckpointDir, RankZeroCheckpoint, ResumableEarlyStopping, restore_optimizer

    stats = _stats()
    pdf = _rows(64)
    x, y = stats.inputs(pdf), pdf["label"].to_numpy(np.float32)
    uri = "s3a://lake/work/checkpoints/run-w1"
    store = CheckpointDir(uri)
    assert store.remote and store.state() is None
    published = []
    publish = store.publish
    store.publish = lambda files, state: (published.append(list(files)), publish(files, state))[-1]
    model = _model(stats)
    es = ResumableEarlyStopping(patience=5, ckpt=None)
    model.fit(
        x, y, batch_size=16, epochs=2, validation_data=(x, y), callbacks=[es, RankZeroCheckpoint(store, es)], verbose=0
    )
    weights, step = model.get_weights(), int(model.optimizer.iterations.numpy())
    store.cleanup()
    assert not store.local.exists()

    names = sorted(storage.name(p) for p in storage.ls(uri))
    assert "weights.h5" in names and "best.h5" in names and "state.json" in names
    assert [n for n in names if n.startswith("optimizer-")] == ["optimizer-1.data-00000-of-00001", "optimizer-1.index"]
    state = json.loads(storage.read_text(f"{uri}/state.json"))
    assert state["epoch"] == 1 and state["optimizer"] == "optimizer-1"
    assert all(n.startswith("optimizer-1.") for n in published[-1] if n.startswith("optimizer"))  # uploaded first

    resumed = CheckpointDir(uri)  # another rank / a rerun: nothing local
    assert resumed.local != store.local and not any(resumed.local.iterdir())
    got = resumed.state()
    assert got == state
    resumed.fetch(got)
    fresh = _model(stats, seed=99)
    fresh.load_weights(str(resumed.local / "weights.h5"))
    assert all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), weights))
    assert restore_optimizer(fresh.optimizer, fresh, resumed.local, got["optimizer"]) == step
    es2 = ResumableEarlyStopping(patience=5, ckpt=resumed.local)
    assert es2._saved == (state["best"], state["wait"]) and es2._best_file is not None
    resumed.mark_complete()
    assert json.loads(storage.read_text(f"{uri}/state.json")) == {**state, "complete": True}
    resumed.cleanup()


def test_rank_errors_are_written_and_read_through_the_store(s3):
    from churn_spark.distributed import clear_rank_errors, rank_errors, record_rank_error

    ckpt = "s3a://lake/work/checkpoints/errs"
    record_rank_error(ckpt, "1", "Traceback (most recent call last):\n  ...\nValueError: boom\n")
    assert rank_errors(ckpt) == {"rank-1": "ValueError: boom"}
    clear_rank_errors(ckpt)
    assert rank_errors(ckpt) == {}


def test_bundle_round_trip_on_s3_verifies_the_downloaded_bytes(s3):
    from churn_spark.bundle import (
        ModelIntegrityError,
        bundle_digest,
        load_bundle,
        save_bundle,
        set_calibrator,
        verify_bundle,
    )
    from churn_spark.calibration import Calibrator
    from churn_spark.promotion import bundle_contract

    stats = _stats()
    model = _model(stats)
    uri = "s3a://lake/work/models/runs/2024-01-01-fv3"
    digest = save_bundle(uri, model, stats, info={"ranks": 2})
    assert sorted(storage.name(p) for p in storage.ls(uri)) == sorted(
        ["calibrator.json", "manifest.json", "model.json", "stats.json", "weights.h5"]
    )
    b = load_bundle(uri)
    assert b.digest == digest == bundle_digest(uri) and b.info == {"ranks": 2}
    assert all(np.array_equal(a, c) for a, c in zip(b.model.get_weights(), model.get_weights()))
    assert bundle_contract(uri) == stats.contract()

    new = set_calibrator(uri, Calibrator(method="platt", a=2.0, b=-1.0), {"threshold": 0.4})
    assert new != digest and bundle_digest(uri) == new
    again = load_bundle(uri)
    assert again.calibrator.method == "platt" and again.info["threshold"] == 0.4

    # a bundle whose object on the store was altered is refused (checked on the downloaded bytes); the verified
    # local copies are keyed by the manifest, so an intact bundle is not downloaded again on every load
    tampered = "s3a://lake/work/models/runs/tampered"
    save_bundle(tampered, model, stats)
    (s3.basedir / "lake" / "work/models/runs/tampered/stats.json").write_text(stats.to_json() + " ")
    with pytest.raises(ModelIntegrityError, match="tampered: checksum of stats.json"):
        verify_bundle(tampered)
    with pytest.raises(ModelIntegrityError, match="no manifest.json"):
        load_bundle("s3a://lake/work/models/none")


def test_shipped_zip_comes_from_the_uri_and_loads_once(s3):
    from churn_spark import predict
    from churn_spark.bundle import save_bundle

    stats = _stats()
    uri = "s3a://lake/work/models/runs/ship-me"
    digest = save_bundle(uri, _model(stats, seed=5), stats)
    ref = predict.ship_model(None, uri, "s3a://lake/work/tmp/ship")  # no addArchive for a remote staging root
    assert ref == f"s3a://lake/work/tmp/ship/model-{digest[:16]}.zip" and storage.is_file(ref)
    assert predict.ship_model(None, uri, "s3a://lake/work/tmp/ship") == ref  # content-addressed: not rewritten
    pdf = _rows(5)
    out = pd.concat(predict.make_scorer(ref, ["user_id"])(iter([pdf, pdf])))
    assert len(out) == 10 and out["churn_probability"].between(0, 1).all()
    assert predict.LOADS[ref] == 1 and predict.get_bundle(ref).digest == digest


def test_the_secret_is_in_no_file_written(s3):
    """Everything above went to the store: the S3 secret is in none of those objects."""
    for p in s3.objects():
        assert SECRET_KEY.encode() not in p.read_bytes(), p
