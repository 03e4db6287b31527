"""Helpers for fault injection: run a job as a separate process, find and kill processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import psutil

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "churn-spark")


def start_job(args: List[str], log: Path) -> subprocess.Popen:
    """``churn-spark ARGS`` in its own process group (so the driver JVM and Python die together)."""
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    fh = open(log, "wb")
    return subprocess.Popen(
        [CLI, *args], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
    )


def wait(proc: subprocess.Popen, timeout: float = 600) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def processes_with(marker: str, env_item: Optional[str] = None) -> List[int]:
    """PIDs whose command line contains ``marker`` (and whose environment holds ``env_item``, as ``KEY=VALUE``)."""
    key, _, value = (env_item or "").partition("=")
    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if marker not in " ".join(proc.info["cmdline"] or []):
                continue
            if env_item and proc.environ().get(key) != value:
                continue
            out.append(proc.info["pid"])
        except psutil.Error:  # gone meanwhile, or another user's process
            continue
    return out


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
