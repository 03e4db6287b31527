"""One logging setup for every job, plus a step timer that logs start/end, duration and row counts."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Iterator

LOG = logging.getLogger("churn_spark")


def setup_logging(level: str = "INFO") -> None:
    if getattr(setup_logging, "_done", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    LOG.addHandler(handler)
    LOG.setLevel(level)
    LOG.propagate = False
    for noisy in ("py4j", "mlflow", "alembic", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    setup_logging._done = True  # type: ignore[attr-defined]


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
    LOG.info("end %s in %.1fs %s", name, info["seconds"],
             " ".join(f"{k}={v}" for k, v in info.items() if k != "seconds"))
