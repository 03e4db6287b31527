"""Deployment artefacts under deploy/: they parse, reference files that exist, submit.sh builds the right
spark-submit command, the Dockerfile installs the locked stack, and the Airflow DAG runs submit.sh and retries only
transient failures. No Spark here: the real-cluster tests are in tests/test_cluster.py."""

from __future__ import annotations

import importlib.util
import os
import py_compile
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SUBMIT = DEPLOY / "submit.sh"
DOCKERFILE = DEPLOY / "Dockerfile"
DAG = DEPLOY / "airflow" / "churn_weekly_dag.py"
K8S_APP = DEPLOY / "k8s" / "sparkapplication.yaml"
K8S_SCHEDULED = DEPLOY / "k8s" / "scheduled-weekly.yaml"
IMAGE_APP_ROOT = "/opt/churn-spark"
VENV = REPO / ".venv"


def _lock() -> dict:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def _yaml_docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _image_path_to_repo(p: str) -> Path:
    """local:///opt/churn-spark/jobs/weekly.py or /opt/churn-spark/conf/x.yaml -> <repo>/jobs/weekly.py ..."""
    p = re.sub(r"^local://", "", p)
    assert p.startswith(IMAGE_APP_ROOT + "/"), f"{p} is not under the image's app root {IMAGE_APP_ROOT}"
    return REPO / p[len(IMAGE_APP_ROOT) + 1 :]


def _run_submit(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SUBMIT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


# ---- YAML ---------------------------------------------------------------------------------------------------
def test_every_yaml_under_deploy_parses():
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
    assert K8S_APP in files and K8S_SCHEDULED in files
    for f in files:
        docs = _yaml_docs(f)
        assert docs, f"{f} holds no YAML document"
        for d in docs:
            assert isinstance(d, dict), f"{f}: every document must be a mapping"


def _check_spark_app_spec(spec: dict, where: str, main_file: str = "jobs/weekly.py") -> None:
    pins = _lock()
    assert spec["type"] == "Python", where
    assert spec["mode"] == "cluster", where
    main = spec["mainApplicationFile"]
    assert main == f"local://{IMAGE_APP_ROOT}/{main_file}", where
    # the paths the image is expected to hold are in the repo (the Dockerfile copies the repo dirs there)
    assert _image_path_to_repo(main).is_file(), f"{where}: {main} has no repo file behind it"
    args = spec["arguments"]
    configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    assert configs, f"{where}: no --config argument"
    for c in configs:
        assert _image_path_to_repo(c).is_file(), f"{where}: --config {c} has no repo file behind it"
    assert f"{IMAGE_APP_ROOT}/conf/cluster.yaml" in configs, where
    assert spec["sparkVersion"] == pins["pyspark"], f"{where}: sparkVersion must match requirements.lock"
    delta = f"io.delta:delta-spark_2.12:{pins['delta-spark']}"
    assert delta in spec["deps"]["packages"], where
    conf = spec["sparkConf"]
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension", where
    assert conf["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog", where
    assert conf["spark.dynamicAllocation.enabled"] == "false", where
    assert all(isinstance(v, str) for v in conf.values()), f"{where}: sparkConf values must be strings"
    assert spec["executor"]["instances"] == 2, where
    for role in ("driver", "executor"):
        assert spec[role]["cores"] >= 1 and re.fullmatch(r"\d+[mg]", spec[role]["memory"]), f"{where} {role}"


def _only_operator_doc(path, kind: str) -> dict:
    """The single spark-operator document of ``kind`` in a manifest file."""
    docs = [d for d in _yaml_docs(path) if d.get("kind") == kind]
    assert len(docs) == 1, f"{path}: expected one {kind}"
    assert docs[0]["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
    return docs[0]


def test_sparkapplication_manifest():
    app = _only_operator_doc(K8S_APP, "SparkApplication")
    _check_spark_app_spec(app["spec"], str(K8S_APP))


def test_scheduled_sparkapplication_manifest():
    s = _only_operator_doc(K8S_SCHEDULED, "ScheduledSparkApplication")
    spec = s["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    fields = spec["schedule"].split()
    assert (
        len(fields) == 5 and fields[2] == "*" and fields[3] == "*" and fields[4] != "*"
    ), f"not a weekly cron: {spec['schedule']}"
    # jobs/weekly.py needs --run-date, which a schedule cannot template: the wrapper adds today's date
    _check_spark_app_spec(spec["template"], str(K8S_SCHEDULED), main_file="deploy/k8s/weekly_today.py")
    assert "--run-date" not in spec["template"]["arguments"]
    assert (
        "COPY",
        "deploy/k8s/weekly_today.py deploy/k8s/weekly_today.py",
    ) in _dockerfile_instructions(), "the image must contain the wrapper"


def _load(path: Path, name: str) -> types.ModuleType:
    """Execute a file under deploy/ as a module (without leaving a __pycache__ there)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = dont_write
    return mod


def test_weekly_today_wrapper_adds_the_run_date():
    import datetime as dt

    mod = _load(DEPLOY / "k8s" / "weekly_today.py", "weekly_today")  # the __main__ guard keeps it from running
    day = dt.date(2026, 11, 9)
    assert mod.with_run_date(["--config", "c.yaml"], day) == ["--config", "c.yaml", "--run-date", "2026-11-09"]
    assert mod.with_run_date(["--run-date", "2026-11-02"], day) == ["--run-date", "2026-11-02"]
    assert mod.with_run_date(["--run-date=2026-11-02"], day) == ["--run-date=2026-11-02"]


# ---- Dockerfile ---------------------------------------------------------------------------------------------
def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())  # join continuation lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_copy_sources_exist():
    copies = [rest for word, rest in _dockerfile_instructions() if word in ("COPY", "ADD")]
    assert copies, "the Dockerfile copies nothing"
    checked = 0
    for rest in copies:
        parts = shlex.split(rest)
        flags = [p for p in parts if p.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue  # from another build stage / image
        srcs = [p for p in parts if not p.startswith("--")][:-1]
        for src in srcs:
            matches = list(REPO.glob(src)) if any(c in src for c in "*?[") else [REPO / src]
            assert matches and all(m.exists() for m in matches), f"COPY source {src} missing in the repo"
            checked += 1
    assert checked >= 3  # package, jobs, conf, lock ...
    text = DOCKERFILE.read_text()
    for needed in ("churn_spark", "jobs", "conf", "requirements.lock"):
        assert re.search(rf"^COPY\s.*\b{re.escape(needed)}\b", text, re.M), f"Dockerfile does not COPY {needed}"


def test_dockerfile_pins_match_the_lock():
    text = DOCKERFILE.read_text()
    pins = _lock()
    assert re.search(r"^ARG GPU=0\s*$", text, re.M), "build arg GPU=0|1 missing"
    assert f"horovod[spark]=={pins['horovod']}" in text
    for flag in (
        "HOROVOD_WITH_TENSORFLOW=1",
        "HOROVOD_WITH_GLOO=1",
        "HOROVOD_WITHOUT_MPI=1",
        "HOROVOD_WITHOUT_PYTORCH=1",
        "HOROVOD_WITHOUT_MXNET=1",
        "HOROVOD_GPU_OPERATIONS=NCCL",
        "--no-build-isolation",
    ):
        assert flag in text, f"{flag} missing from the Dockerfile"
    assert re.search(rf"^ARG SPARK_VERSION={re.escape(pins['pyspark'])}\s*$", text, re.M)
    assert re.search(rf"^ARG DELTA_VERSION={re.escape(pins['delta-spark'])}\s*$", text, re.M)
    # the image installs requirements.lock (which pins tensorflow-cpu); GPU=1 swaps only the package name
    assert "requirements.lock" in text
    assert re.search(r"sed -i 's/\^tensorflow-cpu==/tensorflow==/'", text)
    assert re.search(rf"^WORKDIR {re.escape(IMAGE_APP_ROOT)}\s*$", text, re.M)


# ---- submit.sh ----------------------------------------------------------------------------------------------
def test_submit_sh_syntax():
    assert os.access(SUBMIT, os.X_OK), "deploy/submit.sh must be executable"
    r = subprocess.run(["bash", "-n", str(SUBMIT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "set -euo pipefail" in SUBMIT.read_text()


def _dry_run_cmd(r: subprocess.CompletedProcess) -> list[str]:
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stdout
    return shlex.split(lines[0])


def test_submit_dry_run_standalone():
    r = _run_submit("--dry-run", "--master", "spark://127.0.0.1:7077", "weekly", "--run-date", "2026-11-02")
    out = r.stdout
    for needed in ("--py-files", "io.delta:delta-spark_2.12:3.3.3", "spark.pyspark.python", "jobs/weekly.py"):
        assert needed in out, f"{needed!r} not in {out}"
    argv = _dry_run_cmd(r)
    assert argv[0] == str(VENV / "bin" / "spark-submit")
    assert argv[argv.index("--master") + 1] == "spark://127.0.0.1:7077"
    assert argv[argv.index("--deploy-mode") + 1] == "client"
    assert argv[argv.index("--py-files") + 1].endswith("build/churn_spark.zip")
    files = argv[argv.index("--files") + 1].split(",")
    assert {Path(f).name for f in files} >= {"default.yaml", "cluster.yaml"}
    assert all(Path(f).is_file() for f in files)
    confs = [argv[i + 1] for i, a in enumerate(argv) if a == "--conf"]
    assert f"spark.pyspark.python={VENV}/bin/python" in confs  # standalone defaults to --python-env local
    assert "spark.dynamicAllocation.enabled=false" in confs and "spark.task.cpus=1" in confs
    assert "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in confs
    assert argv[-3:] == [str(REPO / "jobs" / "weekly.py"), "--run-date", "2026-11-02"]


def test_submit_shows_secret_settings_as_stars():
    """The printed command goes to scheduler logs: a secret's value never does, its key and the rest still do."""
    secret = "s3cr3t-in-a-set"
    r = _run_submit(
        "--dry-run",
        "--master",
        "spark://127.0.0.1:7077",
        "weekly",
        "--set",
        f"spark.conf.spark.hadoop.fs.s3a.secret.key={secret}",
        "--set",
        "spark.conf.spark.hadoop.fs.s3a.access.key=churn",
        env={"SPARK_SUBMIT_EXTRA": f"--conf spark.hadoop.fs.s3a.session.token={secret}"},
    )
    assert r.returncode == 0, r.stderr
    assert secret not in r.stdout + r.stderr
    argv = _dry_run_cmd(r)
    assert "spark.conf.spark.hadoop.fs.s3a.secret.key=***" in argv
    assert "spark.hadoop.fs.s3a.session.token=***" in argv
    assert "spark.conf.spark.hadoop.fs.s3a.access.key=churn" in argv and "weekly.py" in argv[-5]


def test_submit_dry_run_builds_nothing(tmp_path):
    r = _run_submit("--dry-run", "--master", "yarn", "weekly", env={"BUILD_DIR": str(tmp_path / "b")})
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "b").exists()


def test_submit_dry_run_yarn_cluster_packed_and_passthrough():
    r = _run_submit(
        "--dry-run",
        "--master",
        "yarn",
        "--deploy-mode",
        "cluster",
        "--conf",
        "spark.executor.memory=8g",
        "--num-executors",
        "4",
        "weekly",
        "--config",
        "conf/cluster.yaml",
        "--run-date",
        "2026-11-02",
        env={"SPARK_SUBMIT_EXTRA": "--conf spark.yarn.queue=churn"},
    )
    argv = _dry_run_cmd(r)
    assert argv[argv.index("--archives") + 1].endswith("build/env.tar.gz#environment")
    confs = [argv[i + 1] for i, a in enumerate(argv) if a == "--conf"]
    assert "spark.pyspark.python=./environment/bin/python" in confs
    assert not any(c.startswith("spark.pyspark.driver.python") for c in confs)  # driver runs in the cluster
    assert "spark.executor.memory=8g" in confs and "spark.yarn.queue=churn" in confs
    assert "spark.yarn.appMasterEnv.CHURN_SPARK_CONF_DIR=." in confs
    assert argv[argv.index("--num-executors") + 1] == "4"
    app = argv.index(str(REPO / "jobs" / "weekly.py"))
    # the driver runs in a YARN container: --files put the profiles in its cwd, so the path becomes a basename
    assert argv[app + 1 :] == ["--config", "cluster.yaml", "--run-date", "2026-11-02"]


def test_submit_dry_run_k8s_image():
    r = _run_submit(
        "--dry-run",
        "--master",
        "k8s://https://k8s.example:443",
        "--deploy-mode",
        "cluster",
        "weekly",
        "--config",
        "conf/cluster.yaml",
    )
    argv = _dry_run_cmd(r)
    assert f"local://{IMAGE_APP_ROOT}/jobs/weekly.py" in argv
    assert argv[-2:] == ["--config", f"{IMAGE_APP_ROOT}/conf/cluster.yaml"]
    assert "--py-files" not in argv and "--archives" not in argv
    assert "delta-spark_2.12-3.3.3.jar" in argv[argv.index("--jars") + 1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["weekly"], "--master is required"),
        (["--master", "mesos://x", "weekly"], "unsupported --master"),
        (["--master", "spark://h:7077", "--deploy-mode", "cluster", "weekly"], "standalone does not support"),
        (["--master", "yarn", "--python-env", "conda", "weekly"], "--python-env must be"),
        (["--master", "yarn"], "no JOB given"),
        (["--master", "yarn", "../etc/passwd"], "bad JOB name"),
        (["--master", "k8s://https://k:443", "weekly"], "needs --deploy-mode cluster"),
        (["--master", "yarn", "--python-env", "image", "weekly"], "is for k8s:// masters"),
    ],
)
def test_submit_errors_are_clear(args, message):
    r = _run_submit("--dry-run", *args)
    assert r.returncode != 0
    assert message in r.stderr and "ERROR" in r.stderr


# ---- Airflow DAG --------------------------------------------------------------------------------------------
def test_dag_compiles_and_calls_the_weekly_job(tmp_path):
    py_compile.compile(str(DAG), cfile=str(tmp_path / "dag.pyc"), doraise=True)
    text = DAG.read_text()
    assert "--run-date {{ ds }}" in text
    assert "deploy/submit.sh" in text and SUBMIT.is_file()
    for rel in re.findall(r"--config (\S+)", text):
        assert (REPO / rel).is_file(), f"the DAG passes --config {rel}, which is not in the repo"
    assert re.search(r"\bweekly\b", text)


def test_readme_mentions_existing_files():
    text = (DEPLOY / "README.md").read_text()
    for rel in set(re.findall(r"`((?:deploy|conf|jobs|tests)/[\w./-]+\.(?:sh|yaml|py|example|md))`", text)):
        if rel.startswith("jobs/"):
            continue  # the entry points live in jobs/ and may be named generically (jobs/<JOB>.py)
        assert (REPO / rel).exists(), f"deploy/README.md mentions {rel}, which does not exist"
    for topic in (
        "--deploy-mode cluster",
        "k8s://",
        "spark://",
        "work_dir",
        "num_proc",
        "HOROVOD_GLOO_TIMEOUT_SECONDS",
        "registry.tracking_uri",
        "GPU=1",
        "NCCL",
    ):
        assert topic in text, f"deploy/README.md does not cover {topic}"
