"""MLflow tracking and model registry: runs, registered versions, and the champion alias.

Embedded default is a sqlite store plus a file artifact root under ``work_dir/mlflow`` (``mlflow ui
--backend-store-uri sqlite:///...`` shows it); a server URI comes from ``registry.tracking_uri``. The champion is
the registered version carrying the ``champion`` alias; only the gate moves it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from . import storage
from .bundle import ModelIntegrityError, verify_bundle
from .config import Config

LOG = logging.getLogger(__name__)
_ANNOUNCED: set = set()

CHAMPION = "champion"
CHALLENGER = "challenger"  # every newly registered version; only the validation step moves CHAMPION
ARTIFACT_PATH = "model"


def client(cfg: Config):
    import mlflow
    from mlflow.tracking import MlflowClient

    if cfg.tracking_uri.startswith("sqlite:///"):
        db = Path(cfg.tracking_uri[len("sqlite:///") :])
        db.parent.mkdir(parents=True, exist_ok=True)
        if not storage.is_local(cfg.work_dir):
            # boto3 (MLflow's S3 artifact store) reads its endpoint and keys from the environment
            os.environ.update(storage.aws_environment(cfg.work_dir))
            if db not in _ANNOUNCED:
                _ANNOUNCED.add(db)
                LOG.info(
                    "MLflow: the tracking store is the SQLite file %s on this driver; artifacts go to %s",
                    db,
                    artifact_root(cfg),
                )
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.tracking_uri)
    return MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)


def experiment_id(cfg: Config) -> str:
    c = client(cfg)
    exp = c.get_experiment_by_name(cfg.registry.experiment)
    if exp is not None:
        return exp.experiment_id
    location = artifact_root(cfg) if cfg.registry.tracking_uri is None else None  # else: the server's root
    return c.create_experiment(cfg.registry.experiment, artifact_location=location)


def artifact_root(cfg: Config) -> str:
    """Where an embedded store keeps run artifacts: ``work_dir/mlflow/artifacts`` (not the cwd). MLflow speaks
    ``s3://`` (through boto3) where Spark speaks ``s3a://``."""
    root = cfg.path("mlflow", "artifacts")
    if storage.is_local(root):
        return Path(storage.absolute(storage.local_path(root))).as_uri()
    scheme, rest = root.split("://", 1)
    return f"s3://{rest}" if scheme in storage.S3_SCHEMES else root


def register(cfg: Config, run_id: str, tags: Optional[dict] = None) -> str:
    """Register the run's model artifacts as a new version of the configured model; returns the version."""
    from mlflow.exceptions import MlflowException

    c = client(cfg)
    try:
        c.create_registered_model(cfg.registry.model_name)
    except MlflowException as e:
        if "already exists" not in str(e).lower() and "RESOURCE_ALREADY_EXISTS" not in str(e):
            raise
    source = f"{c.get_run(run_id).info.artifact_uri}/{ARTIFACT_PATH}"
    mv = c.create_model_version(cfg.registry.model_name, source=source, run_id=run_id, tags=tags or {})
    c.set_registered_model_alias(cfg.registry.model_name, CHALLENGER, mv.version)
    return str(mv.version)


def alias(cfg: Config, name: str):
    """The ModelVersion carrying alias ``name``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client(cfg).get_model_version_by_alias(cfg.registry.model_name, name)
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" in str(e.error_code) or "not found" in str(e).lower():
            return None
        raise


def champion(cfg: Config):
    """The champion ModelVersion, or None when no version has been promoted yet."""
    return alias(cfg, CHAMPION)


def record_verdict(cfg: Config, mv, verdict: dict) -> None:
    """The validation verdict on the model version (description + tags) and its MLflow run (metrics + tags)."""
    import json

    c = client(cfg)
    status = (
        "PROMOTED"
        if verdict.get("promoted")
        else "NOT_COMPARABLE"
        if verdict.get("comparable") is False
        else "SKIPPED"
        if verdict.get("mode") == "disabled"
        else "REJECTED"
    )
    c.update_model_version(
        cfg.registry.model_name,
        mv.version,
        description=f"validation ({verdict.get('mode')}): {status}: {verdict.get('reason', '')}",
    )
    tags = {
        "validation_status": status,
        "validation_mode": str(verdict.get("mode")),
        "validation_reason": str(verdict.get("reason", ""))[:4000],
        "validation_interval": json.dumps(verdict.get("interval")),
    }
    for k, v in tags.items():
        c.set_model_version_tag(cfg.registry.model_name, mv.version, k, v)
    if mv.run_id:
        c.set_tag(mv.run_id, "validation_status", status)
        c.log_metric(mv.run_id, "gate_promoted", float(bool(verdict.get("promoted"))))
        if verdict.get("interval"):
            c.log_metric(mv.run_id, "gate_improvement_low", float(verdict["interval"][0]))
            c.log_metric(mv.run_id, "gate_improvement_high", float(verdict["interval"][1]))


def promote(cfg: Config, version: str) -> None:
    client(cfg).set_registered_model_alias(cfg.registry.model_name, CHAMPION, version)


def model_version(cfg: Config, version: str):
    """The registered version, or ModelIntegrityError naming it when the registry has no such version."""
    from mlflow.exceptions import MlflowException

    try:
        return client(cfg).get_model_version(cfg.registry.model_name, version)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ModelIntegrityError(
            f"model '{cfg.registry.model_name}' has no version {version} in {cfg.tracking_uri}"
        ) from e


def download_version(cfg: Config, version: Optional[str] = None) -> tuple[str, str]:
    """Local directory of a registered version's bundle (champion when ``version`` is None), verified.

    The local cache is keyed by the bundle's digest, not the version number: after the MLflow store is reset a
    new "version 1" is another model and must not load the old files.
    """
    import shutil
    import uuid

    import mlflow

    from .bundle import bundle_digest
    from .mlflow_model import bundle_dir_of

    mv = model_version(cfg, version) if version else champion(cfg)
    if mv is None:
        raise ModelIntegrityError(
            f"no champion version of model '{cfg.registry.model_name}' in {cfg.tracking_uri}; "
            f"train first (churn-spark train) or pass --model-version"
        )
    cache = Path(storage.scratch_dir(cfg.work_dir, "models", "registry", cfg.registry.model_name))
    tagged = (mv.tags or {}).get("bundle_digest")
    if tagged and (cache / tagged[:16] / "manifest.json").is_file():
        target = cache / tagged[:16]
        if bundle_digest(str(target)) == tagged:
            return str(target), str(mv.version)
    tmp = cache / f".dl-{mv.version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(tmp))
        src = tmp / ARTIFACT_PATH if (tmp / ARTIFACT_PATH).is_dir() else tmp
        src = Path(bundle_dir_of(str(src)))  # the bundle inside the MLflow pyfunc model
        digest = bundle_digest(str(src))  # verifies every checksum
        if tagged and digest != tagged:
            raise ModelIntegrityError(
                f"model version {mv.version}: downloaded bundle digest {digest[:16]} does not "
                f"match the registered bundle_digest {tagged[:16]}; refusing it"
            )
        target = cache / digest[:16]
        if not (target / "manifest.json").is_file():  # a partial earlier copy is replaced
            shutil.rmtree(target, ignore_errors=True)
            src.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    verify_bundle(str(target))
    return str(target), str(mv.version)
