"""The JVM class archive: local sessions map the one `make setup` built, clusters never get it, the JVM uses it."""

import re
import subprocess

import pytest
from conftest import make_config

from churn_spark import class_archive, sql_server
from churn_spark.session import resolve_settings


def test_the_option_names_only_an_archive_that_exists(tmp_path):
    archive = tmp_path / "classes.jsa"
    assert class_archive.java_option(True, archive) == ""  # never built: the JVM would drop even its own archive
    archive.write_bytes(b"x")
    assert class_archive.java_option(True, archive) == f" -XX:SharedArchiveFile={archive}"
    assert class_archive.java_option(False, archive) == ""


def test_local_sessions_use_it_and_clusters_never_do(tmp_path, monkeypatch):
    archive = tmp_path / "classes.jsa"
    archive.write_bytes(b"x")
    monkeypatch.setattr(class_archive, "ARCHIVE", archive)
    _, local = resolve_settings(make_config(tmp_path), {})
    assert f"-XX:SharedArchiveFile={archive}" in local["spark.driver.extraJavaOptions"]
    assert "-XX:+UseParallelGC" in local["spark.driver.extraJavaOptions"]  # added to the local options, not instead
    _, off = resolve_settings(make_config(tmp_path, "spark.class_archive=false"), {})
    assert "SharedArchiveFile" not in off["spark.driver.extraJavaOptions"]
    _, cluster = resolve_settings(make_config(tmp_path), {"spark.master": "yarn"})
    assert "spark.driver.extraJavaOptions" not in cluster
    # the SQL endpoint puts the Delta jars first on its class path, which the archive was not written for
    server = sql_server.server_config(make_config(tmp_path), "127.0.0.1", 10001, ["/opt/delta.jar"])
    _, endpoint = resolve_settings(server, {})
    assert "SharedArchiveFile" not in endpoint["spark.driver.extraJavaOptions"]


def _mapped_bytes(pid: int) -> int:
    """Bytes of class archives the running JVM ``pid`` has mapped (the JDK's own archive included), from ``jcmd``."""
    info = subprocess.run(["jcmd", str(pid), "VM.info"], capture_output=True, text=True, timeout=60).stdout
    return sum(int(m) for m in re.findall(r"CDS archive\(s\) mapped at: .*?size (\d+)", info))


@pytest.mark.slow
def test_the_session_jvm_maps_the_archive_setup_built(spark):
    """Not just passed on the command line: the JVM mapped it (a stale or foreign archive is dropped with a warning)."""
    assert class_archive.ARCHIVE.is_file(), "no class archive: `make setup` builds it"
    assert class_archive.ensure() == f"up to date: {class_archive.ARCHIVE}"  # the key is stable between runs
    pid = spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getPid()
    assert _mapped_bytes(pid) > class_archive.ARCHIVE.stat().st_size
