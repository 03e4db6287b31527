"""MLflow tracking and model registry: runs, registered versions, and the champion alias.

Embedded default is a sqlite store plus a file artifact root under ``work_dir/mlflow`` (``mlflow ui
--backend-store-uri sqlite:///...`` shows it); a server URI comes from ``registry.tracking_uri``. The champion is
the registered version carrying the ``champion`` alias; only the gate moves it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .bundle import ModelIntegrityError, verify_bundle
from .config import Config

CHAMPION = "champion"
ARTIFACT_PATH = "model"


def client(cfg: Config):
    import mlflow
    from mlflow.tracking import MlflowClient

    if cfg.tracking_uri.startswith("sqlite:///"):
        Path(cfg.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.tracking_uri)
    return MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)


def experiment_id(cfg: Config) -> str:
    c = client(cfg)
    exp = c.get_experiment_by_name(cfg.registry.experiment)
    if exp is not None:
        return exp.experiment_id
    location = None
    if cfg.registry.tracking_uri is None:  # embedded store: keep artifacts next to it, not in the cwd
        location = Path(cfg.work_dir, "mlflow", "artifacts").resolve().as_uri()
    return c.create_experiment(cfg.registry.experiment, artifact_location=location)


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
    return str(mv.version)


def champion(cfg: Config):
    """The champion ModelVersion, or None when no version has been promoted yet."""
    from mlflow.exceptions import MlflowException

    try:
        return client(cfg).get_model_version_by_alias(cfg.registry.model_name, CHAMPION)
    except MlflowException:
        return None


def promote(cfg: Config, version: str) -> None:
    client(cfg).set_registered_model_alias(cfg.registry.model_name, CHAMPION, version)


def model_version(cfg: Config, version: str):
    return client(cfg).get_model_version(cfg.registry.model_name, version)


def download_version(cfg: Config, version: Optional[str] = None) -> tuple[str, str]:
    """Local directory of a registered version's bundle (champion when ``version`` is None), verified."""
    import mlflow

    mv = model_version(cfg, version) if version else champion(cfg)
    if mv is None:
        raise ModelIntegrityError(f"no champion version of model '{cfg.registry.model_name}' in {cfg.tracking_uri}; "
                                  f"train first (churn-spark train) or pass --model-version")
    target = Path(cfg.work_dir, "models", "registry", cfg.registry.model_name, str(mv.version))
    if not (target / "manifest.json").is_file():
        target.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(target.parent / f".dl-{mv.version}"))
        dl = target.parent / f".dl-{mv.version}" / ARTIFACT_PATH
        src = dl if dl.is_dir() else target.parent / f".dl-{mv.version}"
        for f in src.iterdir():
            f.replace(target / f.name)
    verify_bundle(str(target))
    return str(target), str(mv.version)
