"""Where the job reads and writes: every configured location, the rules a path must follow, and the check that
a remote one can be used, run before Spark starts so a wrong bucket, key or endpoint fails in seconds."""

from __future__ import annotations

import os
from pathlib import Path

from . import storage
from .config import Config, ConfigError


def locations(cfg: Config) -> list[tuple[str, str]]:
    """(config key, location) of every place the job reads or writes."""
    out = [("work_dir", cfg.work_dir), ("lake_root", cfg.lake_dir)]
    out += [(f"sources.{n}.path", cfg.source_location(n)) for n, s in cfg.sources.items() if s.path]
    return out


def uses_s3a(cfg: Config) -> bool:
    return any(loc.split("://")[0] in storage.S3_SCHEMES for _, loc in locations(cfg) if storage.is_uri(loc))


def prepare_storage(cfg: Config, submitted: dict) -> None:
    """Give the Python-side filesystem layer the same ``fs.s3a.*`` settings Spark gets, and fail in seconds,
    naming the key, when a remote location's bucket, credentials or endpoint is wrong (before anything is
    written)."""
    storage.configure(storage.options_from_spark_conf({**cfg.spark.conf, **submitted}))
    checked = set()
    for key, loc in locations(cfg):  # one check per bucket: lake and sources usually share work_dir's
        bucket = loc.split("/")[2] if storage.is_uri(loc) else None
        if bucket not in checked:
            checked.add(bucket)
            storage.check_reachable(loc, key, cfg.origin_of(*key.split(".")))


def check_paths(cfg: Config) -> None:
    """Source paths must stay under the lake root (a local dir or a URI) and must not climb out with '..'."""
    remote = storage.is_uri(cfg.lake_dir)
    lake = cfg.lake_dir.rstrip("/") if remote else Path(os.path.abspath(cfg.lake_dir))
    for name, src in cfg.sources.items():
        if not src.path or "://" in src.path:
            continue
        p = cfg.source_location(name) if remote else Path(os.path.abspath(cfg.source_location(name)))
        inside = f"{p}/".startswith(f"{lake}/") if remote else (p == lake or lake in p.parents)
        if ".." in src.path.split("/") or not inside:
            raise ConfigError(
                f"key 'sources.{name}.path' in {cfg.origin_of('sources', name, 'path')}: "
                f"{src.path!r} resolves to {p}, outside the lake root {lake}"
            )


def require_source_exists(cfg: Config, name: str) -> None:
    """A missing source path is an error naming the key (checked when the source is read)."""
    src = cfg.sources[name]
    if src.path and not storage.exists(cfg.source_location(name)):
        raise ConfigError(
            f"key 'sources.{name}.path' in {cfg.origin_of('sources', name, 'path')}: "
            f"{cfg.source_location(name)} does not exist"
        )
