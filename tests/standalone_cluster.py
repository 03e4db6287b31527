"""A real Spark standalone cluster (1 master + N workers) on 127.0.0.1, for tests.

    with standalone_cluster(n_workers=2, cores_per_worker=1, memory="2g", work_dir=tmp_path) as cluster:
        subprocess.run([... "--master", cluster.url, ...])
        cluster.master_json()["completedapps"]

The pip ``pyspark`` package has no ``sbin/start-*.sh`` scripts, so the daemons are started directly with
``$SPARK_HOME/bin/spark-class org.apache.spark.deploy.{master.Master,worker.Worker}``, each in its own process
group (session). On exit - normal or not - every process group started here is terminated (SIGTERM, then
SIGKILL), together with any descendant that moved to a group of its own (PySpark's daemon does ``setpgid``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional

import psutil
from ports import HOST, free_port


class ClusterStartError(RuntimeError):
    """The master or a worker did not come up; the message carries the log tails."""


def spark_home(python: str = sys.executable) -> str:
    """The pip pyspark package dir, which is a SPARK_HOME (bin/spark-class, jars/)."""
    return subprocess.check_output(
        [python, "-c", "import pyspark,os;print(os.path.dirname(pyspark.__file__))"], text=True
    ).strip()


def _free_ports(n: int) -> List[int]:
    ports: List[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(text[-lines:])


def _get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


# ---- process bookkeeping (psutil) -----------------------------------------------------------------------------
def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def descendants(pid: int) -> List[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _pgid(pid: int) -> Optional[int]:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


@dataclass
class StandaloneCluster:
    url: str  # spark://127.0.0.1:<port>
    master_webui: str  # http://127.0.0.1:<port>
    worker_ids: List[str]
    worker_hosts: List[str]
    worker_webuis: List[str]
    worker_work_dirs: List[Path]
    log_dir: Path
    master_log: Path
    worker_logs: List[Path]
    procs: List[subprocess.Popen] = field(default_factory=list, repr=False)

    def master_json(self) -> dict:
        return _get_json(self.master_webui + "/json/")

    def worker_json(self, i: int) -> dict:
        return _get_json(self.worker_webuis[i] + "/json/")

    def pids(self) -> List[int]:
        """Every live process of the cluster: the daemons, their executors and the executors' Python workers."""
        out: List[int] = []
        for p in self.procs:
            if alive(p.pid):
                out.append(p.pid)
                out.extend(d for d in descendants(p.pid) if alive(d))
        return out

    def submit(self, cmd: List[str], env: dict, cwd: Path, log: Path, timeout: float) -> int:
        """Run a spark-submit command line against this cluster in its own process group; its exit code.

        On timeout the whole group is killed and AssertionError carries the submit log and the daemon log tails.
        """
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise AssertionError(
                    f"spark-submit timed out after {timeout}s\n{log.read_text()[-4000:]}\n" f"{self.log_tails()}"
                ) from None

    def log_tails(self, lines: int = 40) -> str:
        parts = [f"--- master log {self.master_log} ---\n{_tail(self.master_log, lines)}"]
        parts += [f"--- worker log {w} ---\n{_tail(w, lines)}" for w in self.worker_logs]
        return "\n".join(parts)


def _kill_all(procs: List[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM every process group we started (and groups their descendants created), then SIGKILL leftovers."""
    own_pgrp = os.getpgrp()
    pids: List[int] = []
    for p in procs:
        pids.append(p.pid)
        with contextlib.suppress(Exception):
            pids.extend(descendants(p.pid))
    groups = set()
    for pid in pids:
        pgid = _pgid(pid)
        if pgid is not None and pgid != own_pgrp:
            groups.add(pgid)
    groups.update(p.pid for p in procs)  # start_new_session: pgid == pid
    groups.discard(own_pgrp)
    for g in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(g, signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and any(alive(pid) for pid in pids):
        for p in procs:
            with contextlib.suppress(Exception):
                p.poll()
        time.sleep(0.2)
    for g in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(g, signal.SIGKILL)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    for p in procs:
        with contextlib.suppress(Exception):
            p.wait(timeout=5)


@contextlib.contextmanager
def standalone_cluster(
    n_workers: int = 2,
    cores_per_worker: int = 1,
    memory: str = "2g",
    work_dir: Optional[Path] = None,
    timeout: float = 120.0,
    python: Optional[str] = None,
) -> Iterator[StandaloneCluster]:
    """Start a Spark standalone master and ``n_workers`` workers on 127.0.0.1; always stop them on exit."""
    import tempfile

    python = python or sys.executable
    tmp_ctx = tempfile.TemporaryDirectory(prefix="spark-standalone-") if work_dir is None else None
    root = Path(tmp_ctx.name if tmp_ctx else work_dir).resolve()
    log_dir = root / "logs"
    conf_dir = root / "conf"  # empty: no stray spark-defaults.conf / spark-env.sh from elsewhere
    for d in (log_dir, conf_dir):
        d.mkdir(parents=True, exist_ok=True)
    home = spark_home(python)
    spark_class = Path(home, "bin", "spark-class")
    if not spark_class.exists():
        raise ClusterStartError(f"{spark_class} not found (SPARK_HOME={home})")

    env = dict(os.environ)
    for k in ("SPARK_CONF_DIR", "SPARK_MASTER_OPTS", "SPARK_WORKER_OPTS", "SPARK_DAEMON_JAVA_OPTS"):
        env.pop(k, None)
    env.update(
        SPARK_HOME=home,
        SPARK_LOCAL_IP=HOST,
        SPARK_LOCAL_HOSTNAME=HOST,
        PYSPARK_PYTHON=python,
        SPARK_CONF_DIR=str(conf_dir),
        SPARK_DAEMON_MEMORY="512m",
        SPARK_NO_DAEMONIZE="1",
        SPARK_LOG_DIR=str(log_dir),
    )

    master_port, master_ui, *worker_uis = _free_ports(2 + n_workers)
    url = f"spark://{HOST}:{master_port}"
    master_webui = f"http://{HOST}:{master_ui}"
    procs: List[subprocess.Popen] = []
    files = []

    def launch(args: List[str], log: Path, extra_env: Optional[dict] = None) -> subprocess.Popen:
        fh = open(log, "wb")
        files.append(fh)
        p = subprocess.Popen(
            [str(spark_class), *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**env, **(extra_env or {})},
            cwd=str(root),
            start_new_session=True,
        )
        procs.append(p)
        return p

    master_log = log_dir / "master.log"
    worker_logs = [log_dir / f"worker-{i}.log" for i in range(n_workers)]
    worker_dirs = [root / f"worker-{i}" for i in range(n_workers)]
    cluster = StandaloneCluster(
        url=url,
        master_webui=master_webui,
        worker_ids=[],
        worker_hosts=[],
        worker_webuis=[f"http://{HOST}:{p}" for p in worker_uis],
        worker_work_dirs=worker_dirs,
        log_dir=log_dir,
        master_log=master_log,
        worker_logs=worker_logs,
        procs=procs,
    )
    try:
        launch(
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                HOST,
                "--port",
                str(master_port),
                "--webui-port",
                str(master_ui),
            ],
            master_log,
        )
        for i in range(n_workers):
            worker_dirs[i].mkdir(parents=True, exist_ok=True)
            local_dir = root / f"local-{i}"
            local_dir.mkdir(exist_ok=True)
            launch(
                [
                    "org.apache.spark.deploy.worker.Worker",
                    url,
                    "--host",
                    HOST,
                    "--cores",
                    str(cores_per_worker),
                    "--memory",
                    memory,
                    "--webui-port",
                    str(worker_uis[i]),
                    "--work-dir",
                    str(worker_dirs[i]),
                ],
                worker_logs[i],
                # each worker (and the executors it starts) has its own scratch: no directory is shared
                {"SPARK_LOCAL_DIRS": str(local_dir), "SPARK_WORKER_DIR": str(worker_dirs[i]), "TMPDIR": str(local_dir)},
            )

        deadline = time.time() + timeout
        state: dict = {}
        last_err: Optional[Exception] = None
        while True:
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise ClusterStartError(
                    f"a Spark daemon exited early (pid {dead[0].pid}, rc {dead[0].returncode})\n" + cluster.log_tails()
                )
            try:
                state = cluster.master_json()
                workers = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
                if len(workers) >= n_workers:
                    break
            except (urllib.error.URLError, OSError, ValueError) as e:
                last_err = e
            if time.time() > deadline:
                alive_n = len([w for w in state.get("workers", []) if w.get("state") == "ALIVE"])
                raise ClusterStartError(
                    f"timed out after {timeout:.0f}s waiting for {n_workers} ALIVE workers at {master_webui}/json/ "
                    f"(alive: {alive_n}, last error: {last_err})\n" + cluster.log_tails()
                )
            time.sleep(0.5)
        # order the workers like we started them (by web UI port)
        by_ui = {w.get("webuiaddress", "").rstrip("/"): w for w in workers}
        ordered = [by_ui.get(u) for u in cluster.worker_webuis]
        if any(w is None for w in ordered):
            ordered = workers
        cluster.worker_ids = [w["id"] for w in ordered]
        cluster.worker_hosts = [w["host"] for w in ordered]
        yield cluster
    finally:
        _kill_all(procs)
        for fh in files:
            with contextlib.suppress(Exception):
                fh.close()
        if tmp_ctx is not None:
            with contextlib.suppress(Exception):
                tmp_ctx.cleanup()
