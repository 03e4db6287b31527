"""The session factory: Delta wired in, local defaults, spark-submit settings never overridden, clear Delta errors."""

import subprocess
import sys
import textwrap

from conftest import REPO, make_config

from churn_spark.session import resolve_settings


def test_session_has_delta_and_utc(spark, tmp_path):
    assert "DeltaSparkSessionExtension" in spark.conf.get("spark.sql.extensions")
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.sparkContext.master == "local[2]"
    spark.range(3).write.format("delta").save(str(tmp_path / "t"))
    spark.sql(f"DELETE FROM delta.`{tmp_path / 't'}` WHERE id = 0")  # Delta SQL through the extension
    assert spark.read.format("delta").load(str(tmp_path / "t")).count() == 2


def test_local_mode_binds_to_localhost_and_config_wins_over_defaults(tmp_path):
    cfg = make_config(tmp_path, "spark.conf.spark.sql.session.timeZone=Europe/Paris")
    local, s = resolve_settings(cfg, {})
    assert local and s["spark.driver.host"] == "127.0.0.1" and s["spark.driver.bindAddress"] == "127.0.0.1"
    assert s["spark.sql.session.timeZone"] == "Europe/Paris"
    assert s["spark.sql.inMemoryColumnarStorage.compressed"] == "false"  # conf/default.yaml, which any layer can change
    assert "metastore_db" in s["spark.hadoop.javax.jdo.option.ConnectionURL"]


def test_spark_submit_settings_are_never_clobbered(tmp_path):
    cfg = make_config(tmp_path)
    submitted = {"spark.master": "yarn", "spark.sql.shuffle.partitions": "400", "spark.sql.extensions": "my.Extension"}
    local, s = resolve_settings(cfg, submitted)
    assert not local
    assert not set(submitted) & set(s)  # nothing spark-submit set is applied again
    assert "spark.driver.host" not in s  # cluster mode: no localhost binding


def test_unresolvable_delta_jars_fail_fast_with_instructions(tmp_path):
    ivy = tmp_path / "ivysettings.xml"
    ivy.write_text(
        textwrap.dedent(f"""\
        <ivysettings><settings defaultResolver="none"/><caches defaultCacheDir="{tmp_path / 'cache'}"/>
        <resolvers><chain name="none"/></resolvers></ivysettings>""")
    )
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(REPO / 'tests')!r})
        from conftest import make_config
        from churn_spark.session import build_session, DeltaUnavailable
        cfg = make_config({str(tmp_path / 'w')!r}, "spark.conf.spark.jars.ivySettings={ivy}",
                          "spark.conf.spark.jars.ivy={tmp_path / 'ivy'}")
        try:
            build_session(cfg)
        except DeltaUnavailable as e:
            print("DELTA-UNAVAILABLE", e)
            sys.exit(3)
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 3, out.stderr[-3000:]
    assert "Delta" in out.stdout and "spark.jars.packages" in out.stdout and "spark.jars" in out.stdout
