"""`churn-spark sql-server`: a real endpoint over a weekly run's tables, driven over the wire by the Hive JDBC driver
and Beeline that ship in the pyspark jars (slow; the refusals and catalog SQL are in test_sql_server_refusals.py)."""

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, WEEKLY_SMALL, make_config
from ports import free_port
from pyspark.sql import functions as F

from churn_spark import bi_catalog
from churn_spark.logs import LOG

CLI = [sys.executable, "-m", "churn_spark.cli"]
JARS = str(Path(__import__("pyspark").__file__).parent / "jars" / "*")


# ---- slow: a real endpoint over a weekly run -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def endpoint(weekly_run, tmp_path_factory):
    """The weekly run's tables copied (the rescore below must not change what test_weekly sees), served on a free
    port by `churn-spark sql-server` as a child process."""
    cfg, _ = weekly_run
    work = tmp_path_factory.mktemp("bi")
    for d in ("tables", "runs"):
        shutil.copytree(Path(cfg.work_dir, d), work / d)
    sets = [f"work_dir={work}", f"registry.tracking_uri={cfg.tracking_uri}", *WEEKLY_SMALL]
    bi = make_config(work, *sets[1:])
    port = free_port()
    args = [
        a
        for s in [
            *sets,
            "spark.conf.spark.driver.memory=1g",
            "spark.conf.spark.ui.enabled=false",
            "spark.conf.spark.sql.shuffle.partitions=2",
            "sql_server.refresh_s=2",
        ]
        for a in ("--set", s)
    ]
    cmd = [*CLI, "sql-server", "--config", str(REPO / "conf/local.yaml"), *args, "--port", str(port)]
    err = open(work / "server.err", "w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
    deadline = time.time() + 300
    while "SQL endpoint ready" not in (work / "server.err").read_text():
        assert proc.poll() is None and time.time() < deadline, (work / "server.err").read_text()[-3000:]
        time.sleep(1)
    yield {
        "cfg": bi,
        "port": port,
        "url": f"jdbc:hive2://127.0.0.1:{port}/churn",
        "proc": proc,
        "cmd": cmd,
        "err": work / "server.err",
    }
    if proc.poll() is None:
        proc.kill()


def _connect(spark, url):
    """A java.sql.Connection through the Hive JDBC driver (the one BI tools use), inside the test's own JVM."""
    spark._jvm.java.lang.Class.forName("org.apache.hive.jdbc.HiveDriver")
    return spark._jvm.java.sql.DriverManager.getConnection(url, "analyst", "")


def _query(conn, sql):
    rs = conn.createStatement().executeQuery(sql)
    n = rs.getMetaData().getColumnCount()
    out = []
    while rs.next():
        out.append(tuple(rs.getString(i + 1) for i in range(n)))
    rs.close()
    return out


def _norm(v):
    if v is None:
        return None
    s = str(v).lower() if isinstance(v, bool) else str(v)
    try:
        return f"{float(s):.9g}"
    except ValueError:
        return s


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _readme_statements():
    text = Path(os.environ.get("CHURN_README", REPO / "README.md")).read_text()  # env: check a draft README
    section = text[text.index("\n## BI queries") :]
    end = section.find("\n## ", 5)
    section = section[:end] if end > 0 else section
    blocks = re.findall(r"```sql\n(.*?)```", section, flags=re.S)
    return [s.strip() for b in blocks for s in b.split(";") if s.strip()]


@pytest.mark.slow
def test_endpoint_serves_every_table_and_view_and_logs_quietly(endpoint, spark):
    log = endpoint["err"].read_text()
    assert endpoint["url"] in log
    assert "HiveConf of name" not in log and "ObjectStore" not in log and "DataNucleus" not in log
    conn = _connect(spark, endpoint["url"])
    tables = {r[1] for r in _query(conn, "SHOW TABLES IN churn")}
    assert {
        "churn_risk",
        "churn_risk_latest",
        "features",
        "quarantine",
        "churn_risk_history",
        "tier_summary",
        "model_versions",
        "model_metrics",
    } <= tables
    conn.close()


@pytest.mark.slow
def test_readme_bi_queries_over_jdbc_match_the_delta_tables(endpoint, spark):
    cfg = endpoint["cfg"]
    bi_catalog.Catalog(spark, cfg).refresh()  # the same definitions in the test session, over the same paths
    conn = _connect(spark, endpoint["url"])
    statements = _readme_statements()
    assert len(statements) >= 4
    for sql in statements:
        over_wire = _query(conn, sql)
        if sql.upper().startswith("DESCRIBE"):
            assert over_wire
            continue
        direct = spark.sql(sql).collect()
        assert sorted(map(lambda r: tuple(map(_norm, r)), over_wire), key=str) == sorted(
            (tuple(map(_norm, r)) for r in direct), key=str
        ), sql
    # the views against plain DataFrame reads of the Delta path
    risk = spark.read.format("delta").load(cfg.risk_table_path)
    expect = {
        (str(r.snapshot_date), r.risk_tier): (r.n, r.p)
        for r in risk.groupBy("snapshot_date", "risk_tier")
        .agg(F.count("*").alias("n"), F.avg("churn_probability").alias("p"))
        .collect()
    }
    got = {
        (d, t): (int(n), float(p))
        for d, t, n, p in _query(
            conn, "SELECT snapshot_date, risk_tier, users, mean_probability FROM churn.tier_summary"
        )
    }
    assert got.keys() == expect.keys()
    assert all(got[k][0] == expect[k][0] and abs(got[k][1] - expect[k][1]) < 1e-12 for k in got)
    metrics = json.loads(next(Path(cfg.work_dir, "runs").glob("*/metrics.json")).read_text())
    versions = _query(conn, "SELECT model_version, users, test_roc_auc FROM churn.model_versions")
    scored = {r.model_version: r.n for r in risk.groupBy("model_version").agg(F.count("*").alias("n")).collect()}
    by_version = {}
    for v, n, _ in versions:  # one row per snapshot and version
        by_version[v] = by_version.get(v, 0) + int(n)
    assert by_version == scored
    trained = [auc for v, _, auc in versions if v == str(metrics["model_version"])]
    shipped = metrics["models"][metrics["shipped_model"]]  # the network, or its blend with lr_rfm
    assert all(abs(float(a) - shipped["roc_auc"]) < 1e-12 for a in trained)
    beeline = subprocess.run(
        [
            "java",
            "-cp",
            JARS,
            "org.apache.hive.beeline.BeeLine",
            "-u",
            endpoint["url"],
            "-n",
            "bi",
            "--outputformat=csv2",
            "-e",
            ";\n".join(statements) + ";",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert beeline.returncode == 0, beeline.stderr[-2000:]
    assert "risk_tier,users,pct,mean_probability" in beeline.stdout or "risk_tier" in beeline.stdout
    conn.close()


@pytest.mark.slow
def test_rescore_is_seen_by_open_connection_while_two_clients_query(endpoint, spark):
    from churn_spark.score import score

    cfg = endpoint["cfg"]
    held = _connect(spark, endpoint["url"])
    before = {r[0] for r in _query(held, "SELECT DISTINCT snapshot_date FROM churn.churn_risk")}
    feats = spark.read.format("delta").load(cfg.features_path)
    earlier = feats.where(F.col("snapshot_date") < F.lit(min(before))).agg(F.max("snapshot_date")).first()[0]
    done, errors, seen = threading.Event(), [], []

    def client():
        conn = _connect(spark, endpoint["url"])
        try:
            while not done.is_set():
                ((n, distinct),) = _query(
                    conn, "SELECT count(*), count(DISTINCT user_id, snapshot_date) " "FROM churn.churn_risk"
                )
                seen.append((int(n), int(distinct)))
                _query(conn, "SELECT risk_tier, count(*) FROM churn.churn_risk_latest GROUP BY risk_tier")
                done.wait(0.25)  # a BI client's pace: two clients still query across the commit, without starving it
        except Exception as e:  # noqa: BLE001 - any client error fails the test below
            errors.append(e)
        finally:
            conn.close()

    clients = [threading.Thread(target=client) for _ in range(2)]
    for t in clients:
        t.start()
    try:
        job_log = _Records()
        LOG.addHandler(job_log)  # the project's logger does not propagate to caplog's root handler
        try:
            result = score(spark, cfg, snapshot=earlier)
        finally:
            LOG.removeHandler(job_log)
    finally:
        done.set()
        for t in clients:
            t.join(120)
    assert not errors, errors
    assert seen and all(n == distinct for n, distinct in seen)  # never a duplicate row, before or after the commit
    assert job_log.records and not [
        r for r in job_log.records if re.search("metastore|catalog registration", r.getMessage(), re.I)
    ]
    after = {r[0] for r in _query(held, "SELECT DISTINCT snapshot_date FROM churn.churn_risk")}
    assert after == before | {str(earlier)}  # the same connection, no restart
    ((n,),) = _query(
        held,
        f"SELECT count(*) FROM churn.churn_risk_history WHERE previous_snapshot_date = "
        f"DATE'{earlier}' AND probability_change IS NOT NULL",
    )
    assert 0 < int(n) <= result.users
    ((m,),) = _query(held, f"SELECT users FROM churn.model_versions WHERE snapshot_date = DATE'{earlier}'")
    assert int(m) == result.users
    held.close()


@pytest.mark.slow
def test_malformed_query_returns_the_error_and_the_server_keeps_serving(endpoint, spark):
    from py4j.protocol import Py4JJavaError

    conn = _connect(spark, endpoint["url"])
    with pytest.raises(Py4JJavaError, match="PARSE_SYNTAX_ERROR|ParseException"):
        _query(conn, "SELEC risk_tier FROM churn.churn_risk")
    with pytest.raises(Py4JJavaError, match="TABLE_OR_VIEW_NOT_FOUND"):
        _query(conn, "SELECT * FROM churn.no_such_table")
    assert _query(conn, "SELECT 1") == [("1",)]
    conn.close()
    assert _query(_connect(spark, endpoint["url"]), "SELECT 2") == [("2",)]


@pytest.mark.slow
def test_second_server_on_the_same_port_is_refused(endpoint):
    r = subprocess.run(endpoint["cmd"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2
    assert f"port {endpoint['port']} on 127.0.0.1 is already in use" in r.stderr
    assert r.stdout == ""


@pytest.mark.slow
def test_sigterm_stops_cleanly_with_the_json_summary_on_stdout(endpoint):
    proc = endpoint["proc"]
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, endpoint["err"].read_text()[-3000:]
    summary = json.loads(out)  # stdout holds the summary and nothing else
    assert summary["stopped_by"] == "SIGTERM" and summary["jdbc_url"] == endpoint["url"]
    assert "churn.churn_risk" in summary["tables"] and "churn.model_versions" in summary["views"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", endpoint["port"]), timeout=2).close()


@pytest.fixture()
def hive_metastore(tmp_path):
    """A real Hive metastore service (HiveMetaStore from the pyspark jars, Derby behind it) on a free port."""
    port = free_port()
    cmd = [
        "java",
        "-Xmx512m",
        "-cp",
        JARS,
        "-DLog4jContextSelector=org.apache.logging.log4j.core.selector.ClassLoaderContextSelector",
        f"-Dlog4j2.configurationFile=file:{REPO / 'conf' / 'log4j2.properties'}",
        f"-Djavax.jdo.option.ConnectionURL=jdbc:derby:;databaseName={tmp_path / 'hms'};create=true",
        "-Ddatanucleus.schema.autoCreateAll=true",
        "-Dhive.metastore.schema.verification=false",
        f"-Dhive.metastore.warehouse.dir={tmp_path / 'warehouse'}",
        "org.apache.hadoop.hive.metastore.HiveMetaStore",
        "-p",
        str(port),
    ]
    log = open(tmp_path / "hms.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "hms.log").read_text()[-3000:]
            time.sleep(1)
    yield f"thrift://127.0.0.1:{port}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_external_metastore_profile_registers_tables_other_processes_read(endpoint, hive_metastore, spark, tmp_path):
    """The cluster profile's settings (catalogImplementation hive + hive.metastore.uris, as in
    conf/cluster-metastore.yaml) against a real metastore service: the server registers the tables there, and a
    separate Spark process that only knows the metastore URI reads them after the server has stopped."""
    work = tmp_path / "work"  # a copy of the served tables: the other endpoint keeps its own
    for d in ("tables", "runs"):
        shutil.copytree(Path(endpoint["cfg"].work_dir, d), work / d)
    port = free_port()
    sets = [
        f"work_dir={work}",
        f"registry.tracking_uri={endpoint['cfg'].tracking_uri}",
        *WEEKLY_SMALL,
        "spark.conf.spark.driver.memory=1g",
        "spark.conf.spark.ui.enabled=false",
        "spark.conf.spark.sql.catalogImplementation=hive",
        f"spark.conf.spark.hadoop.hive.metastore.uris={hive_metastore}",
        f"spark.conf.spark.sql.warehouse.dir={tmp_path / 'warehouse'}",
    ]
    cmd = [*CLI, "sql-server", "--config", str(REPO / "conf/local.yaml")]
    cmd += [a for s in sets for a in ("--set", s)] + ["--port", str(port)]
    err = tmp_path / "server.err"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(err, "w"), text=True, cwd=REPO)
    try:
        deadline = time.time() + 300
        while "SQL endpoint ready" not in err.read_text():
            assert proc.poll() is None and time.time() < deadline, err.read_text()[-3000:]
            time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    reader = subprocess.run(
        [sys.executable, str(REPO / "tests" / "scripts" / "metastore_reader.py"), str(tmp_path / "nb"), hive_metastore],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert reader.returncode == 0, reader.stderr[-3000:]
    got = json.loads(reader.stdout.strip().splitlines()[-1])
    risk = spark.read.format("delta").load(str(work / "tables" / "churn_risk"))
    latest = risk.agg(F.max("snapshot_date")).first()[0]
    assert {"churn_risk", "churn_risk_latest", "features", "tier_summary", "model_versions"} <= set(got["tables"])
    assert got["churn_risk"] == risk.count()
    assert got["churn_risk_latest"] == risk.where(F.col("snapshot_date") == latest).count()
