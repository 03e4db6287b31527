"""Python-side file I/O for everything under ``work_dir``, on whatever filesystem Spark reaches it through.

Spark reads and writes tables through its Hadoop filesystems, so ``work_dir`` may be a plain local path or a
Hadoop-style URI (``s3a://bucket/prefix``, ``gs://``, ``abfss://``, ``hdfs://``, ``file:///``). The few files the
Python side writes itself (run logs, reports, model bundles, Horovod checkpoints and staged shards read by ranks)
go through this module, which picks a :mod:`pyarrow.fs` filesystem from the URI scheme, so no code path assumes a
shared POSIX mount.

Object-store access is configured in one place, the standard Hadoop keys in ``spark.conf``
(``spark.hadoop.fs.s3a.endpoint``, ``…access.key``, ``…secret.key``, ``…path.style.access``, per-bucket
``fs.s3a.bucket.<name>.*``); :func:`options_from_spark_conf` derives the Python client's settings from them, and
without keys the AWS SDK's own chain (environment variables, profile, instance role) applies. The options travel
to executors and Horovod ranks as a plain dict (:func:`configure` there); they are never logged.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlparse

S3_SCHEMES = ("s3a", "s3", "s3n")
_S3A = "spark.hadoop.fs.s3a."

# settings shared by every filesystem handed out in this process (set by the driver from the config, by a task
# from the dict it was shipped)
_OPTIONS: Dict[str, str] = {}
_CACHE: Dict[Tuple, object] = {}


class StorageError(OSError):
    """A work_dir/lake location that cannot be used: names the URI and the config key to fix."""


class StorageRefused(StorageError):
    """Missing bucket, refused credentials: a person must fix the config (exit 2)."""


class StorageUnreachable(StorageError):
    """The endpoint did not answer: may be a network blip, a retry can help (exit 3)."""


# pyarrow/AWS SDK error words meaning "could not talk to the endpoint" (anything else is a refusal)
_NETWORK_ERRORS = ("NETWORK_CONNECTION", "curlCode", "Couldn't connect", "timed out", "Timeout")


def is_uri(path: str) -> bool:
    return "://" in str(path)


def is_local(path: str) -> bool:
    return not is_uri(path) or str(path).startswith("file:")


def local_path(path: str) -> str:
    """The plain path of a local location (``file:///x`` -> ``/x``)."""
    return urlparse(str(path)).path if str(path).startswith("file:") else str(path)


def join(base: str, *parts: str) -> str:
    """``base/part/...``: a URI stays a URI (forward slashes), a local path stays a local path."""
    base = str(base)
    if not is_uri(base):
        return str(Path(base, *parts))
    return "/".join([base.rstrip("/"), *(str(p).strip("/") for p in parts if str(p))])


def absolute(path: str) -> str:
    """A URI as is; a local path made absolute (Spark executors and Horovod ranks do not share the cwd)."""
    return str(path) if is_uri(path) else str(Path(path).resolve())


def name(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def parent(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[0] if is_uri(path) else str(Path(path).parent)


# ---- configuration --------------------------------------------------------------------------------------------
def options_from_spark_conf(conf: Mapping[str, str]) -> Dict[str, str]:
    """The ``fs.s3a.*`` Hadoop settings of a Spark conf (``spark.hadoop.`` prefix dropped): the one source of the
    object-store settings for both Spark and the Python side."""
    return {k[len("spark.hadoop.") :]: str(v) for k, v in conf.items() if k.startswith(_S3A)}


def configure(options: Mapping[str, str]) -> None:
    """Use these ``fs.s3a.*`` settings for every filesystem made from now on in this process."""
    if dict(options) != _OPTIONS:
        _OPTIONS.clear()
        _OPTIONS.update(options)
        _CACHE.clear()


def options() -> Dict[str, str]:
    """The settings in use, to ship to executors and ranks (contains secrets: never log it)."""
    return dict(_OPTIONS)


def _s3_setting(bucket: str, key: str) -> Optional[str]:
    return _OPTIONS.get(f"fs.s3a.bucket.{bucket}.{key}", _OPTIONS.get(f"fs.s3a.{key}"))


def s3_client_settings(bucket: str) -> Dict[str, object]:
    """Endpoint, scheme, region and keys for a bucket, from the Hadoop settings (None: the AWS default chain)."""
    endpoint = _s3_setting(bucket, "endpoint")
    ssl = (_s3_setting(bucket, "connection.ssl.enabled") or "true").lower() != "false"
    out: Dict[str, object] = {"scheme": "https" if ssl else "http"}
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"{out['scheme']}://{endpoint}")
        out["scheme"] = parsed.scheme
        out["endpoint_override"] = parsed.netloc
    region = _s3_setting(bucket, "endpoint.region")
    if region:
        out["region"] = region
    access, secret = _s3_setting(bucket, "access.key"), _s3_setting(bucket, "secret.key")
    if access and secret:
        out["access_key"], out["secret_key"] = access, secret
        token = _s3_setting(bucket, "session.token")
        if token:
            out["session_token"] = token
    elif "Anonymous" in (_s3_setting(bucket, "aws.credentials.provider") or ""):
        out["anonymous"] = True
    return out


def aws_environment(uri: str) -> Dict[str, str]:
    """Environment for boto3-based clients (MLflow's S3 artifact store) reaching the bucket of ``uri``."""
    bucket = urlparse(uri).netloc
    s = s3_client_settings(bucket)
    env = {}
    if "endpoint_override" in s:
        env["MLFLOW_S3_ENDPOINT_URL"] = f"{s['scheme']}://{s['endpoint_override']}"
        # S3-compatible stores often lack the streaming checksums boto3 sends by default since 1.36
        env["AWS_REQUEST_CHECKSUM_CALCULATION"] = "when_required"
        env["AWS_RESPONSE_CHECKSUM_VALIDATION"] = "when_required"
    if "access_key" in s:
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = str(s["access_key"]), str(s["secret_key"])
    if "session_token" in s:
        env["AWS_SESSION_TOKEN"] = str(s["session_token"])
    if "region" in s:
        env["AWS_DEFAULT_REGION"] = str(s["region"])
    return env


# ---- filesystems ---------------------------------------------------------------------------------------------
def filesystem(path: str):
    """(pyarrow filesystem, path inside it) for a local path or URI."""
    import pyarrow.fs as pafs

    path = str(path)
    if is_local(path):
        return pafs.LocalFileSystem(), absolute(local_path(path))
    parsed = urlparse(path)
    scheme, bucket = parsed.scheme.lower(), parsed.netloc
    inner = f"{bucket}{parsed.path}".rstrip("/")
    key = (scheme, bucket)
    if key not in _CACHE:
        _CACHE[key] = _make_filesystem(scheme, bucket, path)
    return _CACHE[key], inner


def _make_filesystem(scheme: str, bucket: str, uri: str):
    import pyarrow.fs as pafs

    if scheme in S3_SCHEMES:
        return pafs.S3FileSystem(
            **s3_client_settings(bucket),
            connect_timeout=5,
            request_timeout=60,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3),
        )
    if scheme == "gs":
        return pafs.GcsFileSystem()
    if scheme in ("hdfs", "viewfs"):
        return pafs.HadoopFileSystem.from_uri(uri)
    try:  # abfss://, wasbs:// and others: fsspec with the implementation the platform installed (adlfs, ...)
        import fsspec

        return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
    except (ImportError, ValueError) as e:
        raise StorageError(f"{uri}: no Python filesystem for '{scheme}://' ({e}); install its fsspec package") from e


def exists(path: str) -> bool:
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    info = fs.get_file_info(p)
    if info.type != pafs.FileType.NotFound:
        return True
    return is_dir(path)


def is_file(path: str) -> bool:
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    return fs.get_file_info(p).type == pafs.FileType.File


def is_dir(path: str) -> bool:
    """A directory, or on an object store a prefix with at least one object under it."""
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    if fs.get_file_info(p).type == pafs.FileType.Directory:
        return True
    return not is_local(path) and bool(_list(fs, p, recursive=False))


def _list(fs, p: str, recursive: bool) -> list:
    import pyarrow.fs as pafs

    return fs.get_file_info(pafs.FileSelector(p, allow_not_found=True, recursive=recursive))


def ls(path: str, pattern: str = "*") -> List[str]:
    """Direct children of a directory whose names match ``pattern`` (sorted, full locations; [] if absent)."""
    fs, p = filesystem(path)
    names = sorted(i.base_name for i in _list(fs, p, recursive=False) if fnmatch.fnmatch(i.base_name, pattern))
    return [join(path, n) for n in names]


def read_bytes(path: str) -> bytes:
    fs, p = filesystem(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file so a reader never sees half of it: a temporary file renamed into place locally, a single
    PUT on an object store (which is atomic per object)."""
    fs, p = filesystem(path)
    if is_local(path):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{p}.tmp-{os.getpid()}"
        Path(tmp).write_bytes(data)
        os.replace(tmp, p)
        return
    with fs.open_output_stream(p) as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def delete(path: str) -> None:
    """Remove a file or a whole directory/prefix; absent is fine."""
    import pyarrow.fs as pafs

    fs, p = filesystem(path)
    kind = fs.get_file_info(p).type
    if kind == pafs.FileType.File:
        fs.delete_file(p)
    elif kind == pafs.FileType.Directory or is_dir(path):
        fs.delete_dir(p)


def upload_dir(local_dir: str, dest: str) -> None:
    """Copy a local directory tree to ``dest`` (files overwritten, nothing else removed)."""
    import pyarrow.fs as pafs

    fs, p = filesystem(dest)
    # use_threads=False: pyarrow 10 deadlocks copying more files than its I/O pool has threads to S3
    pafs.copy_files(
        str(local_dir), p, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs, use_threads=False
    )


def download_dir(src: str, local_dir: str) -> None:
    """Copy the tree under ``src`` into a local directory."""
    import pyarrow.fs as pafs

    fs, p = filesystem(src)
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    pafs.copy_files(
        p, str(local_dir), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem(), use_threads=False
    )


def scratch_dir(work_dir: str, *parts: str) -> str:
    """A driver-local directory for what must be on a local disk (MLflow's SQLite file, the Derby metastore,
    downloaded bundles): under ``work_dir`` when that is local, else under the temp dir, keyed by ``work_dir``."""
    if is_local(work_dir):
        base = absolute(local_path(work_dir))
    else:
        digest = hashlib.sha256(str(work_dir).encode()).hexdigest()[:12]
        base = str(Path(tempfile.gettempdir(), "churn-spark", digest))
    d = Path(base, *parts)
    d.mkdir(parents=True, exist_ok=True)
    return str(d)


def check_reachable(uri: str, key: str, origin: str) -> None:
    """Fail in seconds, naming the URI and the config key, when the bucket of a remote location is missing, the
    credentials are refused or the endpoint does not answer (the S3 client retries a bounded number of times)."""
    import pyarrow.fs as pafs

    if is_local(uri):
        return
    bucket = urlparse(uri).netloc
    try:
        fs, _ = filesystem(uri)
        info = fs.get_file_info(bucket)
        if info.type == pafs.FileType.NotFound:
            raise StorageRefused(f"key '{key}' in {origin}: {uri}: bucket '{bucket}' does not exist")
        _list(fs, f"{bucket}{urlparse(uri).path}".rstrip("/"), recursive=False)
    except StorageError:
        raise
    except OSError as e:  # pyarrow raises OSError for network, auth and missing-bucket errors alike
        text = _first_line(e)
        kind = StorageUnreachable if any(w in text for w in _NETWORK_ERRORS) else StorageRefused
        raise kind(f"key '{key}' in {origin}: {uri} cannot be used: {text}") from e


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
