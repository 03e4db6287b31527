"""A trained model on disk: architecture JSON, weights, feature statistics, calibrator, and a checksum manifest.

Everything is plain JSON or HDF5 weights — no pickles — and ``manifest.json`` holds the SHA-256 of every file.
:func:`load_bundle` refuses a bundle whose files are missing or do not match their checksums, before any scoring.

A bundle may live under a remote ``work_dir`` (``s3a://…``): Keras reads and writes only local files, so a remote
bundle is written locally and uploaded (manifest last: a reader never sees a manifest naming files not yet there),
and read by downloading it into a local cache where the checksums are verified on the downloaded bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import storage
from .calibration import Calibrator
from .preprocess import FeatureStats

FILES = ("model.json", "weights.h5", "stats.json", "calibrator.json")
MANIFEST = "manifest.json"


class ModelIntegrityError(RuntimeError):
    """The model bundle is missing, incomplete or altered."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_digest(manifest: dict) -> str:
    """The identity of a bundle: SHA-256 over its files' checksums."""
    return hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()


def _manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=1, sort_keys=True)


@dataclass
class Bundle:
    model: object  # tf.keras.Model
    stats: FeatureStats
    calibrator: Calibrator
    info: dict
    digest: str


def save_bundle(
    directory: str, model, stats: FeatureStats, calibrator: Optional[Calibrator] = None, info: Optional[dict] = None
) -> str:
    """Write the bundle and its manifest (a remote ``directory``: written locally, then uploaded with the manifest
    last); returns the manifest digest (identifies the bundle)."""
    if storage.is_local(directory):
        return _save_local(Path(storage.local_path(directory)), model, stats, calibrator, info)
    with tempfile.TemporaryDirectory(prefix="churn-bundle-") as tmp:
        digest = _save_local(Path(tmp), model, stats, calibrator, info)
        for name in (*FILES, MANIFEST):
            storage.write_bytes(storage.join(directory, name), Path(tmp, name).read_bytes())
    return digest


def _save_local(d: Path, model, stats: FeatureStats, calibrator: Optional[Calibrator], info: Optional[dict]) -> str:
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.json").write_text(model.to_json())
    model.save_weights(str(d / "weights.h5"))
    (d / "stats.json").write_text(stats.to_json())
    (d / "calibrator.json").write_text(json.dumps((calibrator or Calibrator()).to_dict()))
    manifest = {"files": {f: _sha256(d / f) for f in FILES}, "info": info or {}}
    (d / MANIFEST).write_text(_manifest_text(manifest))
    return manifest_digest(manifest)


def set_calibrator(directory: str, calibrator: Calibrator, info_update: Optional[dict] = None) -> str:
    """Replace the calibrator of a verified bundle (calibrator first, manifest last); returns the new digest."""
    manifest = verify_bundle(directory)
    data = json.dumps(calibrator.to_dict()).encode("utf-8")
    storage.write_bytes(storage.join(directory, "calibrator.json"), data)
    manifest["files"]["calibrator.json"] = hashlib.sha256(data).hexdigest()
    manifest["info"].update(info_update or {})
    storage.write_text(storage.join(directory, MANIFEST), _manifest_text(manifest))
    return manifest_digest(manifest)


def _verify_local(d: Path, shown: str) -> dict:
    """Check a local bundle directory against its manifest; ``shown`` is the location named in errors."""
    if not (d / MANIFEST).is_file():
        raise ModelIntegrityError(f"model bundle at {shown} has no manifest.json (missing or not a churn-spark model)")
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except ValueError as e:
        raise ModelIntegrityError(f"model bundle at {shown}: manifest.json is not valid JSON ({e})") from e
    for name in FILES:
        expected = manifest.get("files", {}).get(name)
        if not (d / name).is_file():
            raise ModelIntegrityError(f"model bundle at {shown}: {name} is missing")
        if expected != _sha256(d / name):
            raise ModelIntegrityError(
                f"model bundle at {shown}: checksum of {name} does not match the manifest "
                f"(the file was altered or corrupted); refusing to load it"
            )
    return manifest


def local_copy(directory: str) -> str:
    """A local directory holding the bundle, verified: ``directory`` itself when local, else a download into the
    temp dir, cached under the location and the manifest's digest (a changed remote bundle is downloaded again)
    and verified on the downloaded bytes every time."""
    if storage.is_local(directory):
        d = Path(storage.local_path(directory))
        _verify_local(d, str(d))
        return str(d)
    try:
        manifest_bytes = storage.read_bytes(storage.join(directory, MANIFEST))
        manifest = json.loads(manifest_bytes)
        key = hashlib.sha256(f"{storage.absolute(directory)}\n{manifest_digest(manifest)}".encode()).hexdigest()[:16]
    except FileNotFoundError as e:
        raise ModelIntegrityError(
            f"model bundle at {directory} has no manifest.json (missing or not a churn-spark model)"
        ) from e
    except (ValueError, KeyError, TypeError) as e:
        raise ModelIntegrityError(f"model bundle at {directory}: manifest.json is not valid ({e})") from e
    target = Path(tempfile.gettempdir(), "churn-spark", "bundles", key)
    if (target / MANIFEST).is_file():
        try:
            _verify_local(target, directory)
            return str(target)
        except ModelIntegrityError:  # the local copy was damaged: fetch it again
            shutil.rmtree(target, ignore_errors=True)
    tmp = target.parent / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        for name in FILES:
            try:
                (tmp / name).write_bytes(storage.read_bytes(storage.join(directory, name)))
            except FileNotFoundError as e:
                raise ModelIntegrityError(f"model bundle at {directory}: {name} is missing") from e
        (tmp / MANIFEST).write_bytes(manifest_bytes)  # the manifest read first: the files must match it
        _verify_local(tmp, directory)
        try:
            os.replace(tmp, target)
        except OSError:  # another process put the same verified copy in place meanwhile
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def verify_bundle(directory: str) -> dict:
    """The manifest of a bundle whose files all match it (a remote bundle is checked on a downloaded copy)."""
    d = Path(local_copy(directory))
    return json.loads((d / MANIFEST).read_text())


def bundle_digest(directory: str) -> str:
    return manifest_digest(verify_bundle(directory))


def load_bundle(directory: str) -> Bundle:
    """Verify checksums, then load. Raises :class:`ModelIntegrityError` on any mismatch."""
    from .model import quiet_tensorflow

    d = Path(local_copy(directory))
    manifest = json.loads((d / MANIFEST).read_text())
    tf = quiet_tensorflow()
    model = tf.keras.models.model_from_json((d / "model.json").read_text())
    model.load_weights(str(d / "weights.h5"))
    return Bundle(
        model=model,
        stats=FeatureStats.from_json((d / "stats.json").read_text()),
        calibrator=Calibrator.from_dict(json.loads((d / "calibrator.json").read_text())),
        info=manifest.get("info", {}),
        digest=manifest_digest(manifest),
    )
