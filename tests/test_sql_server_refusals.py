"""`churn-spark sql-server`'s refusals and catalog SQL, checked without starting Spark (the endpoint itself is in
test_sql_server.py)."""

import datetime as dt
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, make_config
from ports import free_port

from churn_spark import bi_catalog, sql_server
from churn_spark.config import ConfigError, load_config

CLI = [sys.executable, "-m", "churn_spark.cli"]


def test_no_auth_only_on_loopback():
    sql_server.check_auth("127.0.0.1", "NONE", {})
    with pytest.raises(sql_server.ServerRefused, match="without authentication"):
        sql_server.check_auth("0.0.0.0", "NONE", {})
    with pytest.raises(sql_server.ServerRefused, match="hive.server2.authentication.ldap.url"):
        sql_server.check_auth("0.0.0.0", "LDAP", {})
    sql_server.check_auth("0.0.0.0", "LDAP", {"hive.server2.authentication.ldap.url": "ldaps://ldap:636"})
    with pytest.raises(sql_server.ServerRefused, match="hive.server2.custom.authentication.class"):
        sql_server.check_auth("10.0.0.5", "CUSTOM", {})
    with pytest.raises(sql_server.ServerRefused, match="must not set hive.server2.thrift.port"):
        sql_server.check_auth("127.0.0.1", "NONE", {"hive.server2.thrift.port": "1"})


def test_port_taken_is_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(sql_server.ServerRefused, match=f"port {port} on 127.0.0.1 is already in use"):
            sql_server.check_port_free("127.0.0.1", port)
    sql_server.check_port_free("127.0.0.1", port)


def test_cli_refuses_public_bind_without_auth_before_spark_starts():
    r = subprocess.run(
        [
            *CLI,
            "sql-server",
            "--config",
            str(REPO / "conf/local.yaml"),
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert r.returncode == 2
    assert "refusing to serve on 0.0.0.0 without authentication" in r.stderr
    assert r.stdout == ""


def test_identifiers_are_validated_and_quoted(tmp_path):
    assert bi_catalog.quote("churn", "churn_risk") == "`churn`.`churn_risk`"
    for bad in ("churn_risk; DROP TABLE x", "a`b", "", "1abc"):
        with pytest.raises(ConfigError, match="not a valid SQL identifier"):
            bi_catalog.quote(bad)
    assert bi_catalog.sql_string("/data/o'brien\\x") == "'/data/o\\'brien\\\\x'"
    cfg = make_config(tmp_path, "scoring.catalog_table=churn.risk`--")
    with pytest.raises(ConfigError, match="key 'scoring.catalog_table'"):
        bi_catalog.names(cfg)
    with pytest.raises(ConfigError, match="is null"):
        bi_catalog.names(make_config(tmp_path, "scoring.catalog_table=null"))
    n = bi_catalog.names(make_config(tmp_path, "scoring.catalog_table=bi.risk"))
    views = bi_catalog.view_sql(n)
    assert set(views) == {
        "`bi`.`churn_risk_latest`",
        "`bi`.`churn_risk_history`",
        "`bi`.`tier_summary`",
        "`bi`.`model_versions`",
    }
    assert all("FROM `bi`.`risk`" in body for body in views.values())
    assert bi_catalog.table_locations(make_config(tmp_path), bi_catalog.names(make_config(tmp_path)))[
        "`churn`.`churn_risk`"
    ] == str((tmp_path / "tables" / "churn_risk").resolve())


def test_model_metrics_rows_from_run_folders(tmp_path):
    def run(date, version, promoted, auc):
        d = tmp_path / "runs" / date
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(
            json.dumps(
                {
                    "run_date": date,
                    "model_name": "m",
                    "model_version": version,
                    "run_id": f"r{version}",
                    "gate": {"promoted": promoted} if promoted is not None else {},
                    "models": {"deep": {"roc_auc": auc, "pr_auc": 0.5, "log_loss": 0.4, "brier": 0.1}},
                }
            )
        )

    run("2026-10-05", "1", True, 0.7)
    run("2026-11-02", "2", None, 0.8)
    (tmp_path / "runs" / "2026-11-09").mkdir()
    (tmp_path / "runs" / "2026-11-09" / "metrics.json").write_text("{not json")
    assert bi_catalog.metrics_rows(str(tmp_path)) == [
        ("m", "1", dt.date(2026, 10, 5), "r1", True, 0.7, 0.5, 0.4, 0.1),
        ("m", "2", dt.date(2026, 11, 2), "r2", None, 0.8, 0.5, 0.4, 0.1),
    ]


def test_cluster_metastore_profile_validates():
    cfg = load_config([str(REPO / "conf/cluster.yaml"), str(REPO / "conf/cluster-metastore.yaml")])
    sql_server.check_auth(cfg.sql_server.host, cfg.sql_server.auth, cfg.sql_server.hiveconf)
    conf = sql_server.server_config(cfg, cfg.sql_server.host, cfg.sql_server.port, ["/opt/delta.jar"]).spark.conf
    assert conf["spark.sql.catalogImplementation"] == "hive"
    assert conf["spark.hadoop.hive.metastore.uris"].startswith("thrift://")
    assert "spark.hadoop.javax.jdo.option.ConnectionURL" not in conf  # no private Derby next to a real metastore
    assert conf["spark.hadoop.hive.server2.authentication"] == "LDAP"
    assert conf["spark.driver.extraClassPath"] == "/opt/delta.jar"
    local = sql_server.server_config(make_config(Path("/tmp/w")), "127.0.0.1", 10001, ["/a.jar", "/b.jar"]).spark.conf
    assert (
        local["spark.hadoop.javax.jdo.option.ConnectionURL"]
        == "jdbc:derby:;databaseName=/tmp/w/sql-server/metastore_db;create=true"
    )
    assert local["spark.hadoop.hive.server2.thrift.port"] == "10001"
