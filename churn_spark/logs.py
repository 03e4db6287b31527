"""One logging setup for every job, plus a step timer that logs start/end, duration and row counts."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import sys
import time
from typing import Dict, Iterator, List

LOG = logging.getLogger("churn_spark")


class _JvmStderr(io.TextIOBase):
    """``sys.stderr`` that writes to the driver JVM's ``System.err`` (falling back to the original stream)."""

    def __init__(self, err, fallback):
        self._err, self._fallback = err, fallback

    def write(self, s: str) -> int:
        try:
            self._err.print(s)
        except Exception:  # the gateway is gone (interpreter shutdown): keep the text rather than lose it
            self._fallback.write(s)
        return len(s)

    def flush(self) -> None:
        try:
            self._err.flush()
        except Exception:
            self._fallback.flush()


def _unmerge_stderr() -> bool:
    """Under ``spark-submit app.py`` Spark's PythonRunner starts Python with stderr merged into stdout (one pipe,
    copied to the JVM's stdout), so logs would land in the JSON summary a scheduler parses. Send Python's stderr to
    the JVM's own stderr through the py4j gateway the driver already has. Only when fds 1 and 2 are that same pipe."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return False
    try:
        out, err = os.fstat(1), os.fstat(2)
    except OSError:
        return False
    if not stat.S_ISFIFO(out.st_mode) or (out.st_dev, out.st_ino) != (err.st_dev, err.st_ino):
        return False
    from pyspark import SparkContext

    SparkContext._ensure_initialized()
    sys.stderr = _JvmStderr(SparkContext._jvm.System.err, sys.stderr)
    return True


def setup_logging(level: str = "INFO") -> None:
    if getattr(setup_logging, "_done", False):
        return
    _unmerge_stderr()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    LOG.addHandler(handler)
    LOG.setLevel(level)
    LOG.propagate = False
    for noisy in ("py4j", "mlflow", "alembic", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    setup_logging._done = True  # type: ignore[attr-defined]


_COLLECTORS: List[Dict[str, float]] = []


@contextlib.contextmanager
def timed() -> Iterator[Dict[str, float]]:
    """Seconds of every :func:`step` that ends inside, summed by step name in the order they started: the weekly run
    log's breakdown of where a step's time went (nested steps are each listed, so parts can overlap)."""
    parts: Dict[str, float] = {}
    _COLLECTORS.append(parts)
    try:
        yield parts
    finally:
        _COLLECTORS.remove(parts)


@contextlib.contextmanager
def step(name: str, **fields) -> Iterator[dict]:
    """``with step("score", snapshot=s) as info: ... info["rows"] = n`` logs start, end, seconds and info."""
    info: dict = {}
    extra = " ".join(f"{k}={v}" for k, v in fields.items())
    LOG.info("start %s %s", name, extra)
    t0 = time.time()
    try:
        yield info
    except BaseException:
        LOG.error("failed %s after %.1fs", name, time.time() - t0)
        raise
    info.setdefault("seconds", round(time.time() - t0, 2))
    for parts in _COLLECTORS:
        parts[name] = round(parts.get(name, 0.0) + float(info["seconds"]), 2)
    LOG.info(
        "end %s in %.1fs %s", name, info["seconds"], " ".join(f"{k}={v}" for k, v in info.items() if k != "seconds")
    )
