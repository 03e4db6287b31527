"""A trained model on disk: architecture JSON, weights, feature statistics, calibrator, and a checksum manifest.

Everything is plain JSON or HDF5 weights — no pickles — and ``manifest.json`` holds the SHA-256 of every file.
:func:`load_bundle` refuses a bundle whose files are missing or do not match their checksums, before any scoring.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .calibration import Calibrator
from .preprocess import FeatureStats

FILES = ("model.json", "weights.h5", "stats.json", "calibrator.json")


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
    """Write the bundle and its manifest; returns the manifest digest (identifies the bundle)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.json").write_text(model.to_json())
    model.save_weights(str(d / "weights.h5"))
    (d / "stats.json").write_text(stats.to_json())
    (d / "calibrator.json").write_text(json.dumps((calibrator or Calibrator()).to_dict()))
    manifest = {"files": {f: _sha256(d / f) for f in FILES}, "info": info or {}}
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest_digest(manifest)


def set_calibrator(directory: str, calibrator: Calibrator, info_update: Optional[dict] = None) -> str:
    d = Path(directory)
    manifest = verify_bundle(directory)
    (d / "calibrator.json").write_text(json.dumps(calibrator.to_dict()))
    manifest["files"]["calibrator.json"] = _sha256(d / "calibrator.json")
    manifest["info"].update(info_update or {})
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest_digest(manifest)


def verify_bundle(directory: str) -> dict:
    d = Path(directory)
    if not (d / "manifest.json").is_file():
        raise ModelIntegrityError(f"model bundle at {d} has no manifest.json (missing or not a churn-spark model)")
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except ValueError as e:
        raise ModelIntegrityError(f"model bundle at {d}: manifest.json is not valid JSON ({e})") from e
    for name in FILES:
        expected = manifest.get("files", {}).get(name)
        if not (d / name).is_file():
            raise ModelIntegrityError(f"model bundle at {d}: {name} is missing")
        if expected != _sha256(d / name):
            raise ModelIntegrityError(
                f"model bundle at {d}: checksum of {name} does not match the manifest "
                f"(the file was altered or corrupted); refusing to load it"
            )
    return manifest


def bundle_digest(directory: str) -> str:
    return manifest_digest(verify_bundle(directory))


def load_bundle(directory: str) -> Bundle:
    """Verify checksums, then load. Raises :class:`ModelIntegrityError` on any mismatch."""
    from .model import quiet_tensorflow

    manifest = verify_bundle(directory)
    tf = quiet_tensorflow()
    d = Path(directory)
    model = tf.keras.models.model_from_json((d / "model.json").read_text())
    model.load_weights(str(d / "weights.h5"))
    digest = manifest_digest(manifest)
    return Bundle(
        model=model,
        stats=FeatureStats.from_json((d / "stats.json").read_text()),
        calibrator=Calibrator.from_dict(json.loads((d / "calibrator.json").read_text())),
        info=manifest.get("info", {}),
        digest=digest,
    )
