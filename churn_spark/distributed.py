"""What runs inside each Horovod rank (a Spark task): stream its own Parquet shard, train, checkpoint on rank 0.

Data never passes through the driver: Spark writes each split as Parquet files, the driver only reads file footers
to balance row counts, and every rank streams its files with pyarrow in batches into ``tf.data``. All ranks run
the same number of steps per epoch (the smallest shard decides), so allreduce stays in lock-step.

Rank 0 checkpoints weights and the epoch after every epoch (:mod:`churn_spark.checkpoint`); a rerun pointed at the
same checkpoint directory resumes from there. Early stopping watches the rank-averaged validation loss, so every
rank stops at the same epoch and keeps the same best weights.

Shards, checkpoints, error files and the bundle go through :mod:`churn_spark.storage`, so ``work_dir`` may be an
object store no rank has mounted; the storage settings arrive in the rank's args (``args["storage"]``: secrets,
applied with ``storage.configure`` before any I/O and never logged).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from . import storage
from .checkpoint import (  # noqa: F401 - save_optimizer/restore_optimizer re-exported (tests, older callers)
    CheckpointDir,
    RankZeroCheckpoint,
    ResumableEarlyStopping,
    restore_optimizer,
    save_optimizer,
)

LABEL = "label"
STORAGE_ARG = "storage"  # the args key holding storage.options(): secrets, so args are never logged


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator:
    """A ``ParquetFile`` on a local path or URI (through :mod:`churn_spark.storage`'s filesystems), closed after
    use (pyarrow leaves a file it was handed open)."""
    import pyarrow.parquet as pq

    fs, inner = storage.filesystem(path)
    with fs.open_input_file(inner) as f:
        yield pq.ParquetFile(f)


def file_rows(path: str) -> int:
    with open_parquet(path) as f:
        return f.metadata.num_rows


def assign_shards(files: List[str], size: int, rows_of: Optional[Dict[str, int]] = None) -> List[List[str]]:
    """Greedy row-balanced assignment of files to ranks (largest file first); ``rows_of``: the files' row counts
    when the caller already read the footers (each read is a remote request on an object store)."""
    rows_of = rows_of if rows_of is not None else {f: file_rows(f) for f in files}
    sized = sorted(((rows_of[f], f) for f in files), reverse=True)
    shards: List[List[str]] = [[] for _ in range(size)]
    rows = [0] * size
    for n, f in sized:
        i = rows.index(min(rows))
        shards[i].append(f)
        rows[i] += n
    return shards


def shard_rows(shard: List[str]) -> int:
    return sum(file_rows(f) for f in shard)


def balanced_shards(files: List[str], size: int) -> Tuple[List[List[str]], List[int]]:
    """(files per rank, rows per rank), reading each file's footer once for both."""
    rows_of = {f: file_rows(f) for f in files}
    shards = assign_shards(files, size, rows_of)
    return shards, [sum(rows_of[f] for f in shard) for shard in shards]


def batches(
    files: List[str], stats, batch_size: int, pos_weight: float, seed: int, other_share: float = 0.0
) -> Iterator[tuple]:
    """Endless exact-size batches from Parquet files: (inputs, labels, sample weights); file order reshuffled per pass.

    A random ``other_share`` of rows is shown with the ``other`` category, so that column is trained."""
    import pandas as pd

    cols = ["sequence", LABEL] + _static_columns() + (["long_sequence"] if stats.long_buckets else [])
    rng = np.random.default_rng(seed)
    buf: List = []
    n_buf = 0
    while True:
        order = list(files)
        rng.shuffle(order)
        for f in order:
            with open_parquet(f) as pf:
                for rb in pf.iter_batches(batch_size=batch_size, columns=cols):
                    buf.append(rb.to_pandas())
                    n_buf += rb.num_rows
                    while n_buf >= batch_size:
                        pdf = pd.concat(buf, ignore_index=True)
                        head, rest = pdf.iloc[:batch_size], pdf.iloc[batch_size:]
                        buf, n_buf = ([rest] if len(rest) else []), len(rest)
                        y = head[LABEL].to_numpy(dtype=np.float32)
                        w = np.where(y > 0.5, pos_weight, 1.0).astype(np.float32)
                        as_other = rng.random(len(head)) < other_share if other_share > 0 else None
                        yield stats.inputs(head, as_other), y, w


def _static_columns() -> List[str]:
    from .feature_spec import CATEGORICAL_STATIC, FEATURE_STATIC

    return FEATURE_STATIC + CATEGORICAL_STATIC


def executor_identity() -> Dict:
    """The Spark executor this rank runs under: found by walking up the process tree to the executor JVM.

    Horovod starts ranks from the task with the driver's working directory, so the rank's own cwd says nothing;
    the executor JVM's command line carries its id and its cwd is ``<worker dir>/<app id>/<executor id>``.
    """
    import psutil

    for proc in psutil.Process().parents()[:12]:  # nearest ancestor first
        try:
            args = proc.cmdline()
            if not args or os.path.basename(args[0]) != "java":
                continue
            if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in args:
                eid = args[args.index("--executor-id") + 1] if "--executor-id" in args else "?"
                return {"executor_id": eid, "executor_cwd": proc.cwd()}
            if "org.apache.spark.deploy.SparkSubmit" in args:
                return {"executor_id": "driver", "executor_cwd": proc.cwd()}
        except psutil.Error:  # gone meanwhile, or not ours to inspect: look further up
            continue
    return {"executor_id": "unknown", "executor_cwd": ""}


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def rank_main(args: Dict) -> Dict:
    """Entry point of every rank (``horovod.spark.run(rank_main, args=(args,))``).

    The storage settings shipped in ``args`` are applied before any I/O. A failure is also written to
    ``<checkpoint_dir>/errors/rank-<n>.txt`` so the driver can say what went wrong.
    """
    storage.configure(args.get(STORAGE_ARG) or {})
    try:
        return _rank_main(args)
    except BaseException:
        import traceback

        record_rank_error(args["checkpoint_dir"], os.environ.get("HOROVOD_RANK", "x"), traceback.format_exc())
        raise


def record_rank_error(checkpoint_dir: str, rank: str, text: str) -> None:
    """``<checkpoint_dir>/errors/rank-<rank>.txt``; a failure to write it must not hide the rank's own error."""
    path = storage.join(checkpoint_dir, "errors", f"rank-{rank}.txt")
    try:
        storage.write_text(path, text)
    except Exception as e:  # noqa: BLE001 - the original error is re-raised by the caller
        print(f"[rank {rank}] could not record the error at {path}: {e}", file=sys.stderr, flush=True)


def rank_errors(checkpoint_dir: str) -> Dict[str, str]:
    """{"rank-<n>": last line} of the errors the ranks recorded under ``checkpoint_dir``."""
    out = {}
    for path in storage.ls(storage.join(checkpoint_dir, "errors"), "rank-*.txt"):
        lines = storage.read_text(path).strip().splitlines()
        out[storage.name(path).removesuffix(".txt")] = lines[-1] if lines else ""
    return out


def clear_rank_errors(checkpoint_dir: str) -> None:
    for path in storage.ls(storage.join(checkpoint_dir, "errors"), "rank-*.txt"):
        storage.delete(path)


def _rank_main(args: Dict) -> Dict:
    from .model import quiet_tensorflow
    from .preprocess import FeatureStats

    tf = quiet_tensorflow(threads=args.get("threads", 1))
    import horovod.tensorflow.keras as hvd

    hvd.init()
    t = args["training"]
    device = pin_device(tf, hvd.local_rank(), bool(t.get("mixed_precision")))
    stats = FeatureStats.from_json(args["stats"])
    batch = t["batch_size"]
    tf.keras.utils.set_random_seed(t["seed"])  # same init everywhere; broadcast from rank 0 makes it certain

    def dataset(files: List[str], seed: int, other_share: float = 0.0):
        T, C, S = stats.n_buckets, len(stats.channels), stats.n_static
        inputs = {"sequence": tf.TensorSpec((batch, T, C), tf.float32), "static": tf.TensorSpec((batch, S), tf.float32)}
        if stats.long_buckets:
            inputs["long_sequence"] = tf.TensorSpec((batch, stats.long_buckets, C), tf.float32)
        sig = (
            inputs,
            tf.TensorSpec((batch,), tf.float32),
            tf.TensorSpec((batch,), tf.float32),
        )
        return tf.data.Dataset.from_generator(
            lambda: batches(files, stats, batch, args["pos_weight"], seed, other_share), output_signature=sig
        ).prefetch(2)

    store = CheckpointDir(args["checkpoint_dir"])  # a local temp dir to clean up when the checkpoint is remote
    try:
        return _train(args, tf, hvd, stats, dataset, store, device)
    finally:
        store.cleanup()


def _train(args: Dict, tf, hvd, stats, dataset, store: CheckpointDir, device: str) -> Dict:
    """Build, resume, fit and (rank 0) save the bundle; returns this rank's report."""
    from .model import model_from_config

    rank, size = hvd.rank(), hvd.size()
    t = args["training"]
    batch, steps = t["batch_size"], args["steps_per_epoch"]
    model = model_from_config(t, stats.n_buckets, len(stats.channels), stats.n_static, stats.long_buckets)
    peak = t["learning_rate"] * size  # linear LR scaling by ranks, reached after warm-up
    opt = hvd.DistributedOptimizer(tf.keras.optimizers.Adam(learning_rate=peak))
    model.compile(optimizer=opt, loss="binary_crossentropy", metrics=[tf.keras.metrics.AUC(name="auc")])

    ckpt = store.local
    initial_epoch, resumed, restored_step = 0, False, 0
    state = store.state()
    if state is not None:
        store.fetch(state)  # remote: the files this state names, into the rank's local dir
        model.load_weights(str(ckpt / "weights.h5"))
        if state.get("optimizer"):  # Adam's moments, step counter and learning rate
            restored_step = restore_optimizer(opt, model, ckpt, state["optimizer"])
        initial_epoch, resumed = state["epoch"] + 1, True
    best = ResumableEarlyStopping(t["patience"], ckpt if state is not None else None)
    speed = Throughput(steps * batch)
    # Horovod's order: broadcast rank 0's initial state, average the epoch metrics across ranks (so early stopping
    # decides the same on every rank), then the LR warm-up from the single-rank LR to the rank-scaled one
    callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0), hvd.callbacks.MetricAverageCallback()]
    if t["warmup_epochs"] > 0:
        callbacks.append(
            hvd.callbacks.LearningRateWarmupCallback(
                initial_lr=peak, warmup_epochs=t["warmup_epochs"], steps_per_epoch=steps
            )
        )
    callbacks += [best, speed]
    if rank == 0:
        callbacks += [RankZeroCheckpoint(store, best), EpochLog(t["epochs"], initial_epoch, steps * batch * size)]
    t0 = time.time()
    epochs_run = 0
    history: Dict = {}
    if initial_epoch < t["epochs"] and not best.stopped_before:
        h = model.fit(
            dataset(args["train_files"][rank], t["seed"] + rank, t.get("other_category_share", 0.0)),
            steps_per_epoch=steps,
            epochs=t["epochs"],
            initial_epoch=initial_epoch,
            validation_data=dataset(args["val_files"][rank], t["seed"] + 1000 + rank),
            validation_steps=args["validation_steps"],
            callbacks=callbacks,
            verbose=0,
        )
        history = {k: [float(x) for x in v] for k, v in h.history.items()}
        epochs_run = len(history.get("loss", []))
    seconds = time.time() - t0
    best.restore(model)
    if rank == 0:
        from .bundle import save_bundle

        save_bundle(
            args["model_dir"],
            model,
            stats,
            info={"trained_epochs": initial_epoch + epochs_run, "ranks": size, "training": t},
        )
        store.mark_complete()
    hvd.allreduce(tf.constant(0.0), name="churn_spark_done")  # barrier: rank 0 has written the bundle
    return {
        "rank": rank,
        "size": size,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **executor_identity(),
        "device": device,
        "resumed": resumed,
        "restored_optimizer_step": restored_step,
        "initial_epoch": initial_epoch,
        "epochs_run": epochs_run,
        "samples_per_s": speed.samples_per_s(),
        "wall_seconds": seconds,
        "weights_digest": weights_digest(model),
        "history": history,
    }


def assigned_gpus() -> List[str]:
    """The GPU addresses Spark's GPU-aware scheduling gave this rank's task (``spark.task.resource.gpu.amount``),
    as Horovod hands them to the rank process; empty without GPU scheduling."""
    from horovod.spark.task import task_info

    return list(task_info.get_available_devices())


def gpu_choice(assigned: List[str], local_rank: int, visible: List[str]) -> Optional[int]:
    """Index into ``visible`` (TensorFlow's GPU names, ``/physical_device:GPU:<n>``) of the GPU this rank uses:
    the first one Spark assigned to its task, else ``local_rank`` modulo the GPUs (two ranks on one executor must
    not both take GPU 0); None on a machine without GPUs."""
    if not visible:
        return None
    ordinals = [name.rsplit(":", 1)[-1] for name in visible]
    for address in assigned:
        if str(address).strip() in ordinals:
            return ordinals.index(str(address).strip())
    if assigned:
        raise RuntimeError(f"Spark assigned GPU {assigned} to this task but TensorFlow sees only {visible}")
    return local_rank % len(visible)


def pin_device(tf, local_rank: int, mixed_precision: bool) -> str:
    """Make one GPU visible to this rank (memory growth on, so ranks sharing a GPU do not each grab all of it) and
    return what it runs on; the CPU path is unchanged. ``mixed_precision`` applies only on a GPU."""
    gpus = tf.config.list_physical_devices("GPU")
    idx = gpu_choice(assigned_gpus() if gpus else [], local_rank, [g.name for g in gpus])
    if idx is None:
        return "cpu"
    tf.config.set_visible_devices(gpus[idx], "GPU")
    tf.config.experimental.set_memory_growth(gpus[idx], True)
    if mixed_precision:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    print(f"[rank local {local_rank}] training on {gpus[idx].name}", flush=True)
    return gpus[idx].name


# ---- Keras pieces -------------------------------------------------------------------------------------------
def _keras():
    import tensorflow as tf

    return tf.keras


class Throughput(_keras().callbacks.Callback):
    """Training samples/s of this rank: time from epoch start to its validation pass, first epoch (graph tracing,
    warm-up) left out when there are later ones."""

    def __init__(self, samples_per_epoch: int):
        super().__init__()
        self.samples, self.times, self.t0 = samples_per_epoch, [], None

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.time()

    def on_test_begin(self, logs=None):
        if self.t0 is not None:
            self.times.append(time.time() - self.t0)
            self.t0 = None

    def samples_per_s(self) -> float:
        steady = self.times[1:] or self.times
        return self.samples * len(steady) / sum(steady) if steady and sum(steady) > 0 else 0.0


class EpochLog(_keras().callbacks.Callback):
    """Progress on rank 0: epoch, losses, global samples/s and ETA (printed to the task's stdout)."""

    def __init__(self, epochs: int, initial_epoch: int, samples_per_epoch: int):
        super().__init__()
        self.epochs, self.initial, self.samples = epochs, initial_epoch, samples_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        dt_ = time.time() - self.t0
        eta = dt_ * (self.epochs - epoch - 1)
        logs = logs or {}
        print(
            f"[rank 0] epoch {epoch + 1}/{self.epochs} loss={logs.get('loss', 0):.4f} "
            f"val_loss={logs.get('val_loss', 0):.4f} val_auc={logs.get('val_auc', 0):.3f} "
            f"{self.samples / max(dt_, 1e-9):.0f} samples/s ETA {eta:.0f}s",
            flush=True,
        )
