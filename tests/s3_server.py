"""A real S3-compatible server on 127.0.0.1 for tests: S3Proxy with its filesystem backend (a bucket is a folder).

    with s3_server(tmp_path) as s3:
        s3.make_bucket("lake")
        cfg = make_config(..., *s3.spark_overrides())   # work_dir=s3a://lake/work plus the fs.s3a.* keys

The jar (``org.gaul:s3proxy:2.4.1``, jar-with-dependencies) is fetched by ``scripts/setup_venv.sh`` into the local
Maven repository; the server runs on the installed Java 17 and is killed at the end of the ``with`` block.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

from ports import HOST, free_port

S3PROXY_VERSION = "2.4.1"
ACCESS_KEY = "churn-test-access"
# a distinctive string, so tests can assert it appears in none of the job's outputs
SECRET_KEY = "s3cr3t-Sh0uld-N3ver-Appear-1n-Outputs"


def s3proxy_jar() -> Path:
    m2 = Path(os.environ.get("MAVEN_REPO", Path.home() / ".m2" / "repository"))
    return m2 / "org/gaul/s3proxy" / S3PROXY_VERSION / f"s3proxy-{S3PROXY_VERSION}-jar-with-dependencies.jar"


@dataclass
class S3Server:
    endpoint: str
    basedir: Path
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def make_bucket(self, name: str) -> str:
        (self.basedir / name).mkdir(parents=True, exist_ok=True)
        return f"s3a://{name}"

    def hadoop_conf(self, secret: str | None = None) -> dict:
        return {
            "spark.hadoop.fs.s3a.endpoint": self.endpoint,
            "spark.hadoop.fs.s3a.access.key": self.access_key,
            "spark.hadoop.fs.s3a.secret.key": secret or self.secret_key,
            "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        }

    def overrides(self, secret: str | None = None) -> List[str]:
        """``--set`` items putting the keys into ``spark.conf``."""
        return [f"spark.conf.{k}={v}" for k, v in self.hadoop_conf(secret).items()]

    def objects(self) -> List[Path]:
        return [p for p in self.basedir.rglob("*") if p.is_file()]


@contextlib.contextmanager
def s3_server(tmp: Path) -> Iterator[S3Server]:
    jar = s3proxy_jar()
    if not jar.is_file():
        raise FileNotFoundError(f"{jar} is missing: run `make setup` (scripts/setup_venv.sh fetches it)")
    port = free_port()
    basedir = tmp / "s3-data"
    basedir.mkdir(parents=True, exist_ok=True)
    props = tmp / "s3proxy.properties"
    props.write_text(
        "\n".join(
            [
                f"s3proxy.endpoint=http://{HOST}:{port}",
                "s3proxy.authorization=aws-v2-or-v4",
                f"s3proxy.identity={ACCESS_KEY}",
                f"s3proxy.credential={SECRET_KEY}",
                "jclouds.provider=filesystem",
                f"jclouds.filesystem.basedir={basedir}",
            ]
        )
        + "\n"
    )
    log = open(tmp / "s3proxy.log", "wb")
    proc = subprocess.Popen(
        ["java", "-Xmx256m", "-jar", str(jar), "--properties", str(props)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
                break
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"S3Proxy did not start: {(tmp / 's3proxy.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield S3Server(endpoint=f"http://{HOST}:{port}", basedir=basedir)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
