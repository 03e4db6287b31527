"""Horovod checkpoints: rank 0 saves weights, best weights, the optimizer and the early-stopping state after every
epoch, and a rerun resumes from them — on a local disk or on an object store with no mount shared by the ranks.

Split from :mod:`churn_spark.distributed` (what runs in a rank) because resuming correctly has several parts of its
own: the early-stopping state the stock Keras callback forgets, the optimizer's moments, and the order in which
files become visible to a reader (``state.json`` last).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional

import numpy as np

from . import storage


def _keras():
    import tensorflow as tf

    return tf.keras


class ResumableEarlyStopping(_keras().callbacks.EarlyStopping):
    """Keras' ``EarlyStopping`` on the rank-averaged ``val_loss`` with the best weights kept, plus the one thing the
    stock callback lacks: its state survives a restart. The stock ``on_train_begin`` resets ``best``, ``wait`` and
    the best weights, so a run resumed from a checkpoint would forget the best epoch before the crash; here they
    are reloaded from what :class:`RankZeroCheckpoint` wrote (``state.json`` and ``best.h5``)."""

    def __init__(self, patience: int, ckpt: Path | None):
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=True)
        self.improved, self.stopped_before, self._saved, self._best_file = False, False, None, None
        if ckpt is not None:
            state = json.loads((ckpt / "state.json").read_text())
            self._saved = (state.get("best", np.inf), state.get("wait", 0))
            self.stopped_before = bool(state.get("stopped") or state.get("complete"))
            if (ckpt / "best.h5").is_file():
                self._best_file = ckpt / "best.h5"

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._saved is not None:
            self.best, self.wait = self._saved
        if self._best_file is not None:
            current = self.model.get_weights()
            self.model.load_weights(str(self._best_file))
            self.best_weights = self.model.get_weights()
            self.model.set_weights(current)

    def on_epoch_end(self, epoch, logs=None):
        before = self.best
        super().on_epoch_end(epoch, logs)
        self.improved = self.best != before  # read by the checkpoint callback: write best.h5 only then

    def restore(self, model):
        """The best weights, also when training ran to the last epoch (the stock callback restores only when it
        stops early) or did not run at all in this attempt (stopped before the restart)."""
        if self.best_weights is not None:
            model.set_weights(self.best_weights)
        elif self._best_file is not None:
            model.load_weights(str(self._best_file))


class CheckpointDir:
    """Rank 0's checkpoint location (a local directory or a URI) and the local directory Keras works in.

    Keras and ``tf.train.Checkpoint`` read and write only local files, and with a remote location the ranks share no
    mount: each rank then works in a private temp dir, :meth:`fetch` downloads what ``state.json`` names before a
    resume, and :meth:`publish` uploads an epoch's files before ``state.json`` (one atomic PUT), so a reader never
    sees a state naming files not yet uploaded. A local location is used in place, exactly as before.
    """

    def __init__(self, location: str):
        self.location = str(location)
        self.remote = not storage.is_local(self.location)
        if self.remote:
            self.local = Path(tempfile.mkdtemp(prefix="churn-ckpt-"))
        else:
            self.local = Path(storage.local_path(self.location))

    def _at(self, name: str) -> str:
        return storage.join(self.location, name)

    def state(self) -> Optional[dict]:
        """The last published ``state.json``, or None before the first epoch."""
        path = self._at("state.json")
        return json.loads(storage.read_text(path)) if storage.is_file(path) else None

    def fetch(self, state: dict) -> None:
        """Remote: download the weights, the best weights (if any) and the optimizer files ``state`` names, and
        ``state`` itself, into the local dir."""
        if not self.remote:
            return
        names = ["weights.h5"]
        if storage.is_file(self._at("best.h5")):
            names.append("best.h5")
        if state.get("optimizer"):
            names += [storage.name(p) for p in storage.ls(self.location, f"{state['optimizer']}.*")]
        for name in names:
            (self.local / name).write_bytes(storage.read_bytes(self._at(name)))
        (self.local / "state.json").write_text(json.dumps(state))

    def publish(self, files: List[str], state: dict) -> None:
        """Make an epoch visible: upload ``files`` from the local dir (remote), then ``state.json``; then remove a
        remote copy's optimizer files of older epochs (the local dir is pruned by :func:`save_optimizer`)."""
        if self.remote:
            for name in files:
                storage.write_bytes(self._at(name), (self.local / name).read_bytes())
        storage.write_text(self._at("state.json"), json.dumps(state))
        if self.remote and state.get("optimizer"):
            for old in storage.ls(self.location, "optimizer-*"):
                if not storage.name(old).startswith(f"{state['optimizer']}."):
                    storage.delete(old)

    def mark_complete(self) -> None:
        """Training finished (the bundle is saved): a rerun skips straight to the saved weights."""
        done = self.state() or {"epoch": -1}
        storage.write_text(self._at("state.json"), json.dumps({**done, "complete": True}))

    def cleanup(self) -> None:
        if self.remote:
            shutil.rmtree(self.local, ignore_errors=True)


class RankZeroCheckpoint(_keras().callbacks.Callback):
    """After each epoch: weights, best weights, the optimizer state and {epoch, best, wait} — rank 0 writes the
    files first and ``state.json`` last (atomically; uploaded last for a remote checkpoint), so a resume only ever
    sees a complete set. Not the stock ``ModelCheckpoint`` (it saves neither the early-stopping state nor the
    optimizer beside the weights as one set) nor ``BackupAndRestore`` (every rank would write its own backup)."""

    def __init__(self, store: CheckpointDir, best: ResumableEarlyStopping):
        super().__init__()
        self.store, self.dir, self.best = store, store.local, best
        self.dir.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        tmp = self.dir / "weights.tmp.h5"
        self.model.save_weights(str(tmp))
        os.replace(tmp, self.dir / "weights.h5")
        files = ["weights.h5"]
        if getattr(self.best, "improved", False):
            self.model.save_weights(str(tmp))
            os.replace(tmp, self.dir / "best.h5")
            files.append("best.h5")
        optimizer = save_optimizer(self.model.optimizer, self.dir, epoch)
        files += sorted(p.name for p in self.dir.glob(f"{optimizer}.*"))
        state = {
            "epoch": epoch,
            "best": float(self.best.best),  # a numpy float from the logs
            "wait": int(self.best.wait),
            "stopped": bool(self.model.stop_training),
            "optimizer": optimizer,
        }
        self.store.publish(files, state)


def save_optimizer(optimizer, directory: Path, epoch: int) -> str:
    """Adam's moments, step counter and learning rate as a ``tf.train.Checkpoint`` named
    by epoch; returns its prefix. Older epochs' files are removed once the new one is complete."""
    import tensorflow as tf

    prefix = tf.train.Checkpoint(optimizer=optimizer).write(str(directory / f"optimizer-{epoch}"))
    for old in directory.glob("optimizer-*"):
        if not old.name.startswith(f"optimizer-{epoch}."):
            old.unlink(missing_ok=True)
    return Path(prefix).name


def restore_optimizer(optimizer, model, directory: Path, name: str) -> int:
    """Restore what :func:`save_optimizer` wrote into ``optimizer`` (its slots are created first); returns the
    restored step counter."""
    import tensorflow as tf

    optimizer.build(model.trainable_variables)
    tf.train.Checkpoint(optimizer=optimizer).read(str(directory / name)).assert_existing_objects_matched()
    return int(optimizer.iterations.numpy())
