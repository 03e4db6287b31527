"""The training data a run stages for its Horovod ranks: the input statistics and the train/validation splits as
Parquet shards, written once and reused by a rerun of the same run.

Staging is a pass over the training split for the statistics (and the BG/NBD fit) plus a Parquet export of two
splits: on a cold cluster that is most of a minute even for small data, and at scale it is the largest write of
the training step. A rerun after a lost rank, a timeout or a failed evaluation needs exactly the same data, so it
is staged under a directory named by a digest of everything it depends on (the run date's snapshot plan, the
feature table and its version, the sequence and input settings, the number of ranks) and reused as long as the
manifest, written last, and every shard it names are still there. A different setting is a different directory,
never a stale reuse; a half-written attempt has no manifest and is written again. Once the trained model is
registered the staged copy is deleted (:func:`discard`): it holds every labelled user's features, a week's worth of
them at full scale, and nothing reads it after training.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Dict, List, Optional

from pyspark.sql import DataFrame

from . import storage
from .config import Config
from .feature_spec import MODEL_INPUT_COLUMNS, channels_for
from .logs import LOG
from .preprocess import FeatureStats, compute_stats
from .sequences import plan_for

MANIFEST = "manifest.json"
# Parquet files per rank in the staged train split: several per rank lets the footer-based balancing even out rows
TRAIN_FILES_PER_RANK = 4
# bumped when what is staged changes shape (columns, statistics), so older staged data is not reused
FORMAT = 1


@dataclass
class Staged:
    """What the ranks read: the statistics, each rank's files per split and their row counts."""

    path: str
    stats: FeatureStats
    shards: Dict[str, List[List[str]]]
    rows: Dict[str, List[int]]
    reused: bool = False

    @property
    def how(self) -> str:
        """``written`` by this run or ``reused`` from an earlier attempt (the step log and metrics.json say it)."""
        return "reused" if self.reused else "written"


def staging_dir(cfg: Config, run_date: dt.date, version: int) -> str:
    """``staging/<run date>-fv<version>-<digest of the settings the staged data depends on>``."""
    t = cfg.training
    depends = {
        "format": FORMAT,
        "features": storage.absolute(cfg.features_path),
        "features_version": version,
        "plan": {d.isoformat(): s for d, s in sorted(plan_for(cfg, run_date).items())},
        "channels": channels_for(list(cfg.sources)),
        "sequence": cfg.sequence.model_dump(),
        "input_clip": t.input_clip,
        "btyd_horizon": cfg.snapshots.horizon_days if t.btyd_inputs else None,
        "num_proc": t.num_proc,
    }
    digest = hashlib.sha256(json.dumps(depends, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return cfg.path("staging", f"{run_date.isoformat()}-fv{version}-{digest}")


def export_split(df: DataFrame, path: str, n_files: int) -> List[str]:
    """Write a split as Parquet for the ranks; returns its files as absolute paths or URIs (ranks share no cwd and,
    on an object store, no mount: they read them through :mod:`churn_spark.storage`)."""
    df.select("user_id", "label", *MODEL_INPUT_COLUMNS).repartition(n_files).write.mode("overwrite").parquet(path)
    return storage.ls(storage.absolute(path), "part-*.parquet")


def load_staged(path: str) -> Optional[Staged]:
    """The data staged in ``path`` when its manifest and every shard it names are there, else None."""
    manifest = storage.join(path, MANIFEST)
    if not storage.is_file(manifest):
        return None
    try:
        data = json.loads(storage.read_text(manifest))
        staged = Staged(path, FeatureStats.from_json(data["stats"]), data["shards"], data["rows"], reused=True)
    except (ValueError, KeyError, TypeError) as e:
        LOG.warning("staged training data in %s unreadable (%s): staging it again", path, e)
        return None
    missing = [f for shards in staged.shards.values() for shard in shards for f in shard if not storage.is_file(f)]
    if missing:
        LOG.warning("staged data in %s lacks %d shard(s) (%s): staging it again", path, len(missing), missing[0])
        return None
    return staged


def stage(cfg: Config, run_date: dt.date, version: int, splits: Dict[str, DataFrame]) -> Staged:
    """The statistics of ``splits["train"]`` and the train/validation shards: reused when already staged, else
    computed, exported and recorded (manifest last)."""
    from .distributed import balanced_shards  # imports TensorFlow: only when staging

    path = staging_dir(cfg, run_date, version)
    found = load_staged(path)
    if found is not None:
        LOG.info("reusing the training data staged in %s", path)
        return found
    t, seq = cfg.training, cfg.sequence
    stats = compute_stats(
        splits["train"],
        channels_for(list(cfg.sources)),
        seq.n_buckets,
        seq.bucket_days,
        seq.recent_days,
        t.input_clip,
        horizon_days=cfg.snapshots.horizon_days if t.btyd_inputs else None,
        long_buckets=seq.long_buckets,
        long_bucket_days=seq.long_bucket_days,
    )
    shards, rows = {}, {}
    for s in ("train", "validation"):
        n_files = max(t.num_proc * (TRAIN_FILES_PER_RANK if s == "train" else 1), 2)
        shards[s], rows[s] = balanced_shards(export_split(splits[s], storage.join(path, s), n_files), t.num_proc)
    manifest = {"stats": stats.to_json(), "shards": shards, "rows": rows}
    storage.write_text(storage.join(path, MANIFEST), json.dumps(manifest, indent=1))
    return Staged(path, stats, shards, rows)


def discard(staged: Staged) -> None:
    """Delete the staged data once the model it trained is registered. A failed delete only leaves files behind:
    logged, never a failed run."""
    try:
        storage.delete(staged.path)
    except Exception as e:  # the run's outputs are complete: a copy left behind is only clutter
        LOG.warning("could not delete the staged training data %s: %s", staged.path, str(e).splitlines()[0][:200])
        return
    LOG.info("deleted the staged training data %s (the model it trained is registered)", staged.path)
