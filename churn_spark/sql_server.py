"""``churn-spark sql-server``: the Spark Thrift Server (HiveServer2 protocol) over the project's Delta tables.

BI tools (Tableau, Power BI, Superset, DBeaver) connect with a JDBC/ODBC driver, not a Spark session. The server is a
SparkSession built by the project's session factory (so Delta is configured exactly as for the jobs) on which
``HiveThriftServer2.startWithContext`` opens the port. It owns its own catalog (an embedded Derby metastore under
``<work_dir>/sql-server``, or the cluster's Hive metastore with ``conf/cluster-metastore.yaml``) and defines the
tables over the Delta paths at start (see :mod:`churn_spark.bi_catalog`); it then waits for SIGTERM / Ctrl-C,
picking up tables that appear later. Logs go to stderr; the JSON summary is printed when it stops.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from . import storage
from .config import Config, ConfigError
from .logs import LOG

LOOPBACK = ("127.0.0.1", "::1", "localhost")
AUTH_NEEDS = {  # hive.server2.* keys each auth mode cannot work without (they go in sql_server.hiveconf)
    "LDAP": ["hive.server2.authentication.ldap.url"],
    "CUSTOM": ["hive.server2.custom.authentication.class"],
    "KERBEROS": ["hive.server2.authentication.kerberos.principal", "hive.server2.authentication.kerberos.keytab"],
}
OWNED_KEYS = ("hive.server2.thrift.port", "hive.server2.thrift.bind.host", "hive.server2.authentication")


class ServerRefused(ConfigError):
    """The server will not start as configured (port taken, no authentication off loopback, ...)."""


def check_auth(host: str, auth: str, hiveconf: Dict[str, str]) -> None:
    """No authentication is only acceptable on the loopback interface; other modes need their settings."""
    if auth == "NONE" and host not in LOOPBACK:
        raise ServerRefused(
            f"refusing to serve on {host} without authentication: anyone who can reach the port could "
            "read the risk tables. Bind to 127.0.0.1, or set sql_server.auth to LDAP, CUSTOM or "
            "KERBEROS with its sql_server.hiveconf settings (see README 'Connecting a BI tool')"
        )
    missing = [k for k in AUTH_NEEDS.get(auth, []) if not hiveconf.get(k)]
    if missing:
        raise ServerRefused(f"sql_server.auth={auth} needs sql_server.hiveconf keys: {', '.join(missing)}")
    owned = [k for k in OWNED_KEYS if k in hiveconf]
    if owned:
        raise ServerRefused(
            f"sql_server.hiveconf must not set {', '.join(owned)}: use --host/--port and " "sql_server.auth"
        )


def check_port_free(host: str, port: int) -> None:
    """Fail before Spark starts (and with a message a person can act on) when something listens on the port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ServerRefused(f"cannot bind to {host}: {e}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the Thrift server does; a listener still blocks
        try:
            s.bind(addr)
        except OSError as e:
            raise ServerRefused(
                f"port {port} on {host} is already in use ({e.strerror}): another sql-server or "
                "HiveServer2 may be running; stop it or choose another port with --port"
            ) from None


def delta_jars(cfg: Config) -> List[str]:
    """Local Delta jars for the driver's *system* classpath.

    Thrift sessions are opened under Hive's session class loader, whose parent is the JVM's application class
    loader; jars that ``spark.jars.packages`` adds at run time are invisible there, and every connection fails with
    ``ClassNotFoundException: ...DeltaCatalog``. The jars are the ones Spark's Ivy resolution puts in
    ``<spark.jars.ivy or ~/.ivy2>/jars`` (resolved once here if missing) or the ones listed in ``spark.jars``.
    """
    from .locations import uses_s3a
    from .session import DELTA_HELP, S3A_PACKAGE, DeltaUnavailable

    given = [j.removeprefix("file:") for j in cfg.spark.conf.get("spark.jars", "").split(",") if "delta" in j]
    if given:
        return given
    version = importlib.metadata.version("delta-spark")
    ivy = Path(cfg.spark.conf.get("spark.jars.ivy") or Path.home() / ".ivy2", "jars")
    jars = [ivy / f"io.delta_delta-spark_2.12-{version}.jar", ivy / f"io.delta_delta-storage-{version}.jar"]
    packages = [f"io.delta:delta-spark_2.12:{version}"]
    if uses_s3a(cfg):  # tables on s3a:// need the S3A filesystem on the same (system) classpath
        jars += [ivy / "org.apache.hadoop_hadoop-aws-3.3.4.jar", ivy / "com.amazonaws_aws-java-sdk-bundle-1.12.262.jar"]
        packages.append(S3A_PACKAGE)
    if not all(j.is_file() for j in jars):
        _resolve_packages(cfg, ",".join(packages))
    if not all(j.is_file() for j in jars):
        raise DeltaUnavailable(f"Delta jars not found at {', '.join(map(str, jars))}. {DELTA_HELP}")
    return [str(j) for j in jars]


def _resolve_packages(cfg: Config, package: str) -> None:
    """Let spark-submit's own Ivy resolution (same repositories and settings as the jobs) fill the Ivy cache."""
    import pyspark

    LOG.info("resolving %s into the Ivy cache (once per machine)", package)
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    ivy_conf = [
        x
        for k, v in cfg.spark.conf.items()
        if k.startswith("spark.jars.") and k != "spark.jars.packages"
        for x in ("--conf", f"{k}={v}")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        noop = Path(tmp, "noop.py")
        noop.write_text("")
        subprocess.run(
            [str(submit), "--packages", package, *ivy_conf, str(noop)],
            stdout=sys.stderr,
            env={**os.environ, "PYSPARK_PYTHON": sys.executable},
            timeout=600,
            check=False,
        )


def server_config(cfg: Config, host: str, port: int, jars: List[str]) -> Config:
    """The config of the server's own session: Hive catalog in its own Derby database (unless the profile names a
    metastore), Delta on the system classpath, the Thrift endpoint and its authentication."""
    conf = dict(cfg.spark.conf)
    work = Path(storage.scratch_dir(cfg.work_dir))  # Derby needs a local disk
    conf.setdefault("spark.sql.catalogImplementation", "hive")
    if "hive.metastore.uris" not in " ".join(conf):
        conf.setdefault(
            "spark.hadoop.javax.jdo.option.ConnectionURL",
            f"jdbc:derby:;databaseName={work / 'sql-server' / 'metastore_db'};create=true",
        )
    conf["spark.driver.extraClassPath"] = os.pathsep.join(
        [p for p in [conf.get("spark.driver.extraClassPath")] if p] + jars
    )
    conf.setdefault("spark.hadoop.hive.server2.transport.mode", "binary")
    # Thrift sessions run with spark.sql.datetime.java8API.enabled; Delta 3.3's metadata-only answer to
    # max(snapshot_date) then fails (ClassCastException LocalDate -> java.sql.Date), e.g. in churn_risk_latest
    conf.setdefault("spark.databricks.delta.optimizeMetadataQuery.enabled", "false")
    conf["spark.hadoop.hive.server2.thrift.port"] = str(port)
    conf["spark.hadoop.hive.server2.thrift.bind.host"] = host
    conf["spark.hadoop.hive.server2.authentication"] = cfg.sql_server.auth
    conf.update({f"spark.hadoop.{k}": v for k, v in cfg.sql_server.hiveconf.items()})
    out = cfg.model_copy(deep=True)
    out.spark.conf = conf
    out.spark.class_archive = False  # the Delta jars lead its class path: the JVM would refuse the archive (a warning)
    return out


def _plain(quoted: List[str]) -> List[str]:
    return [q.replace("`", "") for q in quoted]


def jdbc_url(host: str, port: int, db: str) -> str:
    shown = socket.getfqdn() if host in ("0.0.0.0", "::", "") else host
    return f"jdbc:hive2://{shown}:{port}/{db}"


def _wait_listening(host: str, port: int, timeout_s: float = 60.0) -> None:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    deadline = time.time() + timeout_s
    while True:
        try:
            with socket.create_connection((target, port), timeout=2):
                return
        except OSError:
            if time.time() > deadline:
                raise ServerRefused(f"the Thrift server did not open {host}:{port} within {timeout_s:.0f}s") from None
            time.sleep(0.5)


def serve(
    cfg: Config, host: Optional[str] = None, port: Optional[int] = None, stop: Optional[threading.Event] = None
) -> dict:
    """Run the endpoint until SIGTERM / SIGINT (or ``stop`` is set); returns the summary printed on stdout."""
    from . import bi_catalog
    from .session import build_session

    host, port = host or cfg.sql_server.host, port or cfg.sql_server.port
    check_auth(host, cfg.sql_server.auth, cfg.sql_server.hiveconf)
    check_port_free(host, port)
    names = bi_catalog.names(cfg)
    spark = build_session(server_config(cfg, host, port, delta_jars(cfg)), app_name="churn-spark sql-server")
    stop = stop or threading.Event()
    why: List[str] = []

    def on_signal(signum, _frame):
        why.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}  # after SparkContext's own
    t0 = time.time()
    try:
        catalog = bi_catalog.Catalog(spark, cfg)
        missing = catalog.refresh()
        thrift = spark._jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2
        server = thrift.startWithContext(spark._jsparkSession.sqlContext())
        _wait_listening(host, port)
        url = jdbc_url(host, port, names.db)
        LOG.info(
            "SQL endpoint ready at %s (auth %s): tables %s, views %s%s; stop with Ctrl-C or SIGTERM",
            url,
            cfg.sql_server.auth,
            ", ".join(catalog.tables).replace("`", ""),
            ", ".join(catalog.views).replace("`", "") or "none yet",
            f"; waiting for {', '.join(missing)}" if missing else "",
        )
        while not stop.wait(cfg.sql_server.refresh_s):
            try:
                before = len(catalog.tables) + len(catalog.views)
                catalog.refresh()
                if len(catalog.tables) + len(catalog.views) != before:
                    LOG.info("catalog now has tables %s, views %s", ", ".join(catalog.tables), ", ".join(catalog.views))
            except Exception as e:  # a refresh failure must not take the endpoint down
                LOG.warning("catalog refresh failed (%s); serving what is registered", str(e).splitlines()[0][:300])
        LOG.info("stopping the SQL endpoint (%s)", why[0] if why else "stop requested")
        server.stop()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        spark.stop()
    return {
        "jdbc_url": url,
        "host": host,
        "port": port,
        "auth": cfg.sql_server.auth,
        "database": names.db,
        "tables": _plain(catalog.tables),
        "views": _plain(catalog.views),
        "served_s": round(time.time() - t0, 1),
        "stopped_by": why[0] if why else "stop requested",
    }
